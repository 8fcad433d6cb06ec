"""Q8_0 thinker decode under each choice of the Q8_0 decode kernels, at the released shapes with random
weights: the adapter's tuning table as it stands, x quantized inside each matvec's workgroups (where K fits
the workgroup storage), the separate quantize pass (q8_fuse_max_k = 0), the f32 matvecs, and wider launches
of the fused ones; tok/s, dispatches and GPU time by kernel for each, one model loaded once
(bench/decode_settings.py's run, which takes any other setting).

    python bench/q8_paths.py [--layers 48] [--new-tokens 32] [--reps 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode_settings import run_settings  # noqa: E402
from kernels import emit  # noqa: E402
from thinker import add_shape_args  # noqa: E402

FUSED = 16384  # any K of the thinker (what ops/q8_0.staging(True) sets)
SETTINGS = {
    "the adapter's table": {},
    "fused": {"q8_fuse_max_k": FUSED},
    "separate quantize pass": {"q8_fuse_max_k": 0},
    "f32 matvecs": {"q8_matvec_path": "f32"},
    "fused, 32 threads a row": {"q8_fuse_max_k": FUSED, "q8_fused_min_tpr": 32},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shape_args(ap)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    emit({"bench": "q8_paths", **run_settings("q8_0", args, SETTINGS)}, args.out)


if __name__ == "__main__":
    main()
