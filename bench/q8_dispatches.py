"""Dispatches per decode token, Q8_0 against BF16, on the tiny models (issue 16: decode is dispatch-bound,
so Q8_0 must not record more dispatches a token than BF16 does).

    python bench/q8_dispatches.py [--out FILE]

Builds the tiny omni thinker (models/tiny_omni.py, preset "tiny": all-MoE, and "tiny-dense": a dense
layer too) and tiny Qwen3 (models/tiny.py, presets "tiny" and "tiny-hd32", whose heads hold whole Q8_0
blocks, so that its decode attention writes o_proj's int8 input), quantizes each to a Q8_0 GGUF as
`omni-lab quantize` does, and counts the dispatches of one recorded decode step (bench/decode.py's profile_decode_step) of the BF16
checkpoint and of the GGUF, the GGUF on both Q8_0 decode paths (dot4 and f32: tuning q8_matvec_path).
Prints JSON: per model, {"bf16": n, "q8_0_dot4": n, "q8_0_f32": n} and the Q8_0 step's count by kernel.
Counting needs no fast adapter: lavapipe gives the same counts as an H200.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode import profile_decode_step  # noqa: E402
from kernels import emit  # noqa: E402
from omni_lab.formats.quantize import quantize_checkpoint  # noqa: E402
from omni_lab.gpu import tuning  # noqa: E402
from omni_lab.models.qwen3 import Qwen3  # noqa: E402
from omni_lab.models.thinker import Qwen3OmniThinkerText  # noqa: E402
from omni_lab.models.tiny import build_tiny_qwen3  # noqa: E402
from omni_lab.models.tiny_omni import build_tiny_omni  # noqa: E402

PROMPT = np.array([5, 17, 200, 33, 8, 99, 150, 7], np.int64)


def step_counts(cls, path: Path) -> dict:
    model = cls.load(path, max_len=32, progress=False)
    profile = profile_decode_step(model, PROMPT)
    model = None
    gc.collect()
    return {"dispatches": profile["dispatches"], "count_by_kernel": profile["count_by_kernel"]}


def count(cls, src: Path, gguf: Path) -> dict:
    out = {"bf16": step_counts(cls, src)}
    for path in ("dot4", "f32"):
        with tuning.override(q8_matvec_path=path):
            out[f"q8_0_{path}"] = step_counts(cls, gguf)
    out["summary"] = {k: v["dispatches"] for k, v in out.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    report = {"bench": "q8_dispatches", "prompt_len": len(PROMPT)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for preset in ("tiny", "tiny-dense"):
            src = build_tiny_omni(tmp / f"omni-{preset}", seed=0, preset=preset)
            gguf = quantize_checkpoint(src, tmp / f"omni-{preset}.q8_0.gguf", progress=False)
            report[f"thinker_{preset}"] = count(Qwen3OmniThinkerText, src, gguf)
        for preset in ("tiny", "tiny-hd32"):  # head dim 16, and 32: whole Q8_0 blocks a head
            src = build_tiny_qwen3(tmp / f"qwen3-{preset}", preset=preset)
            gguf = quantize_checkpoint(src, tmp / f"qwen3-{preset}.q8_0.gguf", progress=False)
            report[f"qwen3_{preset}"] = count(Qwen3, src, gguf)
    emit(report, args.out)


if __name__ == "__main__":
    main()
