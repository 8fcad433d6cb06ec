"""Fuzz every loader for longer than the suite does, and kill -9 the writers; print one JSON summary.

    python bench/fuzz.py --cases 10000 [--first-seed 0] [--kills 20] [--out bench/results/fuzz.json]

--cases are spread evenly over the formats of omni_lab/fuzz.py (safetensors, config.json, GGUF, references);
each case runs every entry point its format reaches (load, quantize, reference) under a time and memory
limit, and is counted as accepted, refused (our error, naming the file), unnamed, raw, hang or oom.

--kills N kills `quantize` and a reference save N times each at random moments, then checks that the final
name holds the old complete file, the new complete file, or nothing, and that the next run leaves no debris.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omni_lab import fuzz  # noqa: E402
from omni_lab.atomic import write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

QUANTIZE = r"""
import sys, time
import omni_lab.formats.quantize as qz
slow = qz.quantize_q8_0
def slowed(x):
    time.sleep(0.01)
    return slow(x)
qz.quantize_q8_0 = slowed
qz.quantize_checkpoint(sys.argv[1], sys.argv[2], progress=False)
"""

SAVE = r"""
import sys
import numpy as np
import omni_lab.reference.store as st
kw = dict(model={"hash_mode": "full"}, inputs={"input_ids": [1, 2]}, dtype="float32", root=sys.argv[2])
for i in range(10 ** 6):
    st.save_reference("r", {"x": np.full((256, 256), float(i % 2), np.float32)}, **kw)
"""


def _kill_at_random(script: str, args: list[str], r: random.Random, started) -> None:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not started() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(r.uniform(0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


def kills(base: dict[str, Path], work: Path, n: int, seed: int) -> dict:
    """Kill quantize and reference saves n times each; check the final name and the debris after a rerun."""
    from omni_lab.formats.gguf_io import GGUFCheckpoint
    from omni_lab.formats.quantize import quantize_checkpoint
    from omni_lab.reference import load_reference, save_reference

    r = random.Random(seed)
    out = {"quantize": {"old": 0, "new": 0, "none": 0, "bad": 0}, "reference": {"complete": 0, "none": 0, "bad": 0},
           "debris_after_rerun": 0}
    q = work / "kill-q"
    q.mkdir(parents=True, exist_ok=True)
    final = q / "out.gguf"
    for i in range(n):
        if i % 2:  # half the runs replace a complete old file, half write a new one
            quantize_checkpoint(base["ckpt"], final, progress=False)
            before = final.stat().st_mtime_ns
        else:
            final.unlink(missing_ok=True)
            before = None
        _kill_at_random(QUANTIZE, [str(base["ckpt"]), str(final)], r, lambda: any(q.glob(".out.gguf.tmp-*")))
        if not final.exists():
            out["quantize"]["none"] += 1
        else:
            try:
                GGUFCheckpoint(final)
                out["quantize"]["old" if final.stat().st_mtime_ns == before else "new"] += 1
            except Exception:
                out["quantize"]["bad"] += 1
        quantize_checkpoint(base["ckpt"], final, progress=False)
        out["debris_after_rerun"] += len([p for p in q.iterdir() if p != final])
    refs = work / "kill-r"
    for _ in range(n):
        _kill_at_random(SAVE, [str(base["ckpt"]), str(refs)], r, lambda: (refs / "r").exists())
        try:
            x = load_reference(refs / "r")["x"]
            ok = x.shape == (256, 256) and len(set(x.ravel().tolist())) == 1
            out["reference"]["complete" if ok else "bad"] += 1  # all 0 or all 1: one save's, or the next one's
        except FileNotFoundError:
            out["reference"]["none"] += 1
        except Exception:
            out["reference"]["bad"] += 1
        save_reference("r", {"x": np.zeros((256, 256), np.float32)}, model={"hash_mode": "full"}, inputs={}, dtype="float32", root=refs)
        out["debris_after_rerun"] += len([p for p in refs.iterdir() if p.name != "r"])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=20.0, help="time limit of one entry point")
    p.add_argument("--kills", type=int, default=0)
    p.add_argument("--work", help="working folder (default: a temporary one)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        base = fuzz.build_base(work / "base")
        from omni_lab.workbench import load_ours

        load_ours(base["ckpt"], max_len=8, progress=False)
        t0 = time.perf_counter()
        outcomes = []
        per = -(-args.cases // len(fuzz.FORMATS))
        for fmt in fuzz.FORMATS:
            for seed in range(args.first_seed, args.first_seed + per):
                outcomes += fuzz.run_case(fmt, seed, base, work / "cases", seconds=args.seconds)
        report = {"bench": "fuzz", "seconds": round(time.perf_counter() - t0, 1), **fuzz.summarize(outcomes)}
        if args.kills:
            report["kills"] = kills(base, work, args.kills, args.first_seed)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")
    bad = report["outcomes"].keys() - set(fuzz.GOOD)
    kill_bad = report.get("kills", {}).get("debris_after_rerun", 0) + sum(
        report.get("kills", {}).get(k, {}).get("bad", 0) for k in ("quantize", "reference"))
    return 1 if bad or kill_bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
