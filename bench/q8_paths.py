"""Q8_0 thinker decode under each choice of the Q8_0 decode kernels, at the released shapes with random
weights: the adapter's tuning table as it stands, x quantized inside each matvec's workgroups (where K
fits the workgroup storage), the separate quantize pass (q8_fuse_max_k = 0), the f32 matvecs, and wider
launches of the fused ones; tok/s, dispatches and GPU time by kernel for each, one model loaded once (each
setting records its own decode plan).

    python bench/q8_paths.py [--layers 48] [--new-tokens 32] [--reps 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode import profile_decode_step  # noqa: E402
from kernels import emit  # noqa: E402
from thinker import RandomCheckpoint, add_shape_args, text_config, timed_decode  # noqa: E402
from omni_lab.gpu import runtime, tuning  # noqa: E402
from omni_lab.models.thinker import Qwen3OmniThinkerText  # noqa: E402

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

    text = text_config(args)
    config = {"model_type": "qwen3_omni_moe", "thinker_config": {"text_config": text, "tie_word_embeddings": False}}
    prompt = np.random.default_rng(0).integers(0, min(args.vocab, 30000), args.prompt_len).astype(np.int64)
    model = Qwen3OmniThinkerText(Qwen3OmniThinkerText.config_from(config, source="random"),
                                 RandomCheckpoint(config, weights="q8_0"), max_len=args.prompt_len + args.new_tokens + 8,
                                 progress=True)
    report = {"bench": "q8_paths", "layers": args.layers, "new_tokens": args.new_tokens, "reps": args.reps,
              "adapter": runtime().gpu.describe()["adapter"], "settings": {}}
    for name, override in SETTINGS.items():
        with tuning.override(**override):
            model._plans.clear()  # the decode plan holds the kernels of the setting it was recorded under
            s = timed_decode(lambda n: model.generate(prompt, n, stop_at_eos=False), args.new_tokens, args.reps)
            profile = profile_decode_step(model, prompt)
        profile["by_kernel_seconds"] = dict(list(profile["by_kernel_seconds"].items())[:12])
        report["settings"][name] = {"override": override, "decode_tok_per_s": 1 / s, "profile": profile}
    emit(report, args.out)


if __name__ == "__main__":
    main()
