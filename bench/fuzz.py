"""Fuzz every loader for longer than the suite does; print one JSON summary.

    python bench/fuzz.py --cases 10000 [--first-seed 0] [--out bench/results/fuzz.json]

--cases are spread evenly over the formats of omni_lab/fuzz.py (safetensors, config.json, GGUF, references,
audio files); each case runs every entry point its format reaches (load, quantize, reference, audio) under a
time and memory limit, and is counted as accepted, warned (NaN logits said so), refused (our error, naming
the file), missed (a cut file accepted), unnamed, raw, hang or oom. Kill -9 of the writers: bench/kill9.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omni_lab import fuzz  # noqa: E402
from omni_lab.atomic import write_text  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=20.0, help="time limit of one entry point")
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
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")
    return 1 if report["outcomes"].keys() - set(fuzz.GOOD) else 0


if __name__ == "__main__":
    raise SystemExit(main())
