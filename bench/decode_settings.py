"""Thinker decode under several tuning settings, one model loaded once: tok/s, dispatches and GPU time by
kernel for the adapter's table as it stands and for each `--set` (fields of gpu/tuning.py's table), at the
released shapes with random weights. How a tuning value is measured rather than reasoned (each setting
records its own decode plan, since a plan holds the kernels of the setting it was recorded under).

    python bench/decode_settings.py --weights bf16 --set moe_min_tpr=64 --set launch_threads=262144 [--out FILE]
"""

from __future__ import annotations

import argparse
import ast
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


def parse_setting(text: str) -> dict:
    """"name=value,name=value" -> {name: value}, values as Python literals (64, True, "f32")."""
    out = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {text!r}: expected name=value")
        try:
            out[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[name.strip()] = value.strip()
    try:  # checked before any model loads: a wrong field or value costs no device time
        with tuning.override(**out):
            pass
    except (TypeError, ValueError) as e:
        raise SystemExit(f"--set {text!r}: {e}") from None
    return out


def run_settings(weights: str, args, settings: dict[str, dict]) -> dict:
    """Load the thinker once in `weights` and decode under each named override of the tuning table."""
    text = text_config(args)
    config = {"model_type": "qwen3_omni_moe", "thinker_config": {"text_config": text, "tie_word_embeddings": False}}
    prompt = np.random.default_rng(0).integers(0, min(args.vocab, 30000), args.prompt_len).astype(np.int64)
    model = Qwen3OmniThinkerText(Qwen3OmniThinkerText.config_from(config, source="random"),
                                 RandomCheckpoint(config, weights=weights), max_len=args.prompt_len + args.new_tokens + 8,
                                 progress=True)
    report = {"weights": weights, "layers": args.layers, "new_tokens": args.new_tokens, "reps": args.reps,
              "adapter": runtime().gpu.describe()["adapter"], "settings": {}}
    for name, override in settings.items():
        with tuning.override(**override):
            model._plans.clear()
            s = timed_decode(lambda n: model.generate(prompt, n, stop_at_eos=False), args.new_tokens, args.reps)
            profile = profile_decode_step(model, prompt)
        profile["by_kernel_seconds"] = dict(list(profile["by_kernel_seconds"].items())[:12])
        report["settings"][name] = {"override": override, "decode_tok_per_s": 1 / s, "profile": profile}
        print(f"{name}: {1 / s:.1f} tok/s, {profile['dispatches']} dispatches", file=sys.stderr)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shape_args(ap)
    ap.add_argument("--weights", choices=("bf16", "q8_0"), default="bf16")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    settings = {"the adapter's table": {}, **{s: parse_setting(s) for s in args.set}}
    emit({"bench": "decode_settings", **run_settings(args.weights, args, settings)}, args.out)


if __name__ == "__main__":
    main()
