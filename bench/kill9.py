"""Kill -9 the commands that write for the user at random moments; print one JSON summary.

    python bench/kill9.py [--runs 20] [--seed 0] [--commands quantize extract compare] [--out bench/results/kill9.json]

On a tiny qwen3 checkpoint (`omni-lab tiny qwen3`), each command runs as a subprocess, as a user runs it:
`quantize` (a GGUF), `extract --backend hf` (an .npz), `compare` (a report directory, and the reference it
captures into --references). Each command is timed once to completion; then, --runs times, it is started and
SIGKILLed after a seeded delay spread over that duration. Every other run has a complete old output in place,
made from other arguments, so the old and the new version are told apart by content. After the kill:

- killed_before_output: no output and no temporary: it died before it wrote anything;
- nothing: no output, a temporary left (killed mid-write with no old version; the next run removes it);
- old_kept / new_complete: the output is the old version, or the new one, whole and valid (GGUF: opens with
  the gguf reader and every tensor reads; .npz: every array of the expected set and shapes; report: index.html
  and report.json of one run, every figure it shows, its references loading and matching their manifests);
- failures: anything else (a part, a mix of two runs, an old version lost), with the detail.

Then the command runs again to completion, and debris_after_rerun counts what is left beside the output
(`.NAME.tmp-*`, `.NAME.old-*`, `*.partial`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from omni_lab.atomic import OLD, TMP, write_text  # noqa: E402

PROMPTS = ("1,2,3", "4,5,6,7,8")  # the new run's, the old output's


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "omni_lab.cli", *args]


def commands(ckpt: Path, work: Path) -> dict[str, dict]:
    """Per command: its argv for the new and the old version, its output path, and its check."""
    refs = work / "compare" / "refs"
    return {
        "quantize": {"out": work / "quantize" / "tiny.gguf",
                     "argv": lambda out, old: cli("quantize", str(ckpt), str(out), "--no-progress",
                                                  *(["--type", "none"] if old else []))},
        "extract": {"out": work / "extract" / "acts.npz",
                    "argv": lambda out, old: cli("extract", "--model", str(ckpt), "--backend", "hf", "--out", str(out),
                                                 "--prompt-ids", PROMPTS[old])},
        "compare": {"out": work / "compare" / "report", "refs": refs,
                    "argv": lambda out, old: cli("compare", "--model", str(ckpt), "--out", str(out),
                                                 "--references", str(refs), "--prompt-ids", PROMPTS[old])},
    }


def digest(path: Path) -> str:
    """Content hash of a file or a directory tree (names and bytes)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() if path.is_dir() else b"")
            h.update(p.read_bytes())
    return h.hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TMP in p.name or OLD in p.name or p.name.endswith(".partial"))


# ---- what a whole output is -------------------------------------------------------------------------------
def check_gguf(path: Path, expect: dict) -> str | None:
    from omni_lab.formats.gguf_io import GGUFCheckpoint

    g = GGUFCheckpoint(path)
    if sorted(g.names) != expect["names"]:
        return f"tensors {len(g.names)} of {len(expect['names'])}"
    for n in g.names:
        g.get(n)
    return None


def check_npz(path: Path, expect: dict) -> str | None:
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        shapes = {n: list(z[n].shape) for n in z.files}
    return None if shapes in expect["shapes"] else f"arrays {sorted(shapes)[:3]}... not one run's"


def check_report(path: Path, expect: dict) -> str | None:
    from omni_lab.reference import load_reference

    index, report = path / "index.html", path / "report.json"
    if not (index.is_file() and report.is_file()):
        return f"index.html {index.is_file()}, report.json {report.is_file()}"
    data = json.loads(report.read_text())
    shown = set(re.findall(r"""(?:src|href)=["']([^"'#:]+\.(?:png|wav))["']""", index.read_text()))
    missing = [f for f in shown if not (path / f).is_file()]
    if missing:
        return f"index.html shows {missing[:3]}, absent"
    files = {p.name for p in path.iterdir()}
    if files != expect["files"].get(tokens(data)):
        return f"files {sorted(files)} are not one run's"
    if page(index) != expect["index"][tokens(data)]:
        return f"index.html is not the page of report.json's run ({tokens(data)} tokens)"
    for ref in expect["refs"].iterdir():
        if not ref.name.startswith("."):
            load_reference(ref)  # raises on a part, or a manifest that does not match
    return None


def page(index: Path) -> str:
    """index.html without the times in it (the reference's capture time, new each run): the same for the same
    inputs, so a page over another run's report.json shows."""
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.+-]+", "TIME", index.read_text())


def tokens(report: dict) -> int:
    """The prompt length a report was made with (its first activation's rows): which run wrote it."""
    return report["activations"][0]["shape_ours"][0]


CHECKS = {"quantize": check_gguf, "extract": check_npz, "compare": check_report}


def run_to_end(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def kill_after(argv: list[str], delay: float) -> bool:
    """Start argv, SIGKILL it after `delay` s; False when it had already finished."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def expectations(name: str, cmd: dict, out: Path) -> dict:
    """What a whole output of the new and of the old arguments holds, from one complete run of each."""
    import numpy as np

    from omni_lab.formats.gguf_io import GGUFCheckpoint

    exp: dict = {"shapes": [], "files": {}, "index": {}, "refs": cmd.get("refs")}
    for old in (True, False):
        run_to_end(cmd["argv"](out, old))
        if name == "quantize":
            exp["names"] = sorted(GGUFCheckpoint(out).names)
        elif name == "extract":
            with np.load(out) as z:
                exp["shapes"].append({n: list(z[n].shape) for n in z.files})
        else:
            t = tokens(json.loads((out / "report.json").read_text()))
            exp["files"][t], exp["index"][t] = {p.name for p in out.iterdir()}, page(out / "index.html")
    return exp


def bench(name: str, cmd: dict, runs: int, r: random.Random) -> dict:
    out: Path = cmd["out"]
    out.parent.mkdir(parents=True, exist_ok=True)
    exp = expectations(name, cmd, out)
    duration = run_to_end(cmd["argv"](out, False))
    counts = {k: 0 for k in ("killed_before_output", "nothing", "old_kept", "new_complete", "finished_before_kill",
                             "debris_after_rerun", "failures")}
    failures = []
    for i in range(runs):
        with_old = i % 2 == 0
        if with_old:
            run_to_end(cmd["argv"](out, True))
            old = digest(out)
        else:
            shutil.rmtree(out) if out.is_dir() else out.unlink(missing_ok=True)
            old = None
        delay = r.uniform(0, duration)
        if not kill_after(cmd["argv"](out, False), delay):
            counts["finished_before_kill"] += 1
        if not out.exists():
            if with_old:
                failures.append(f"run {i} (kill at {delay:.2f} s): the old version is gone")
            counts["nothing" if leftovers(out.parent) else "killed_before_output"] += 1
        else:
            try:
                bad = CHECKS[name](out, exp)
            except Exception as e:  # a part that does not even open is the finding this bench looks for
                bad = f"{type(e).__name__}: {e}"
            if bad:
                failures.append(f"run {i} (kill at {delay:.2f} s): {bad}")
            else:
                counts["old_kept" if digest(out) == old else "new_complete"] += 1
        run_to_end(cmd["argv"](out, False))
        debris = leftovers(out.parent) + (leftovers(cmd["refs"]) if "refs" in cmd else [])
        counts["debris_after_rerun"] += len(debris)
        if debris:
            failures.append(f"run {i}: after the rerun {debris}")
    counts["failures"] = len(failures)
    return {"duration_s": round(duration, 2), "runs": runs, **counts, "failure_details": failures[:20]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="kills per command (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--commands", nargs="+", choices=["quantize", "extract", "compare"],
                   default=["quantize", "extract", "compare"])
    p.add_argument("--work", help="working folder (default: a temporary one)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    r = random.Random(args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        ckpt = work / "ckpt"
        if not ckpt.exists():
            run_to_end(cli("tiny", "qwen3", str(ckpt)))
        cmds = commands(ckpt, work)
        report = {"bench": "kill9", "seed": args.seed,
                  "commands": {c: bench(c, cmds[c], args.runs, r) for c in args.commands}}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")
    return 1 if any(c["failures"] for c in report["commands"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
