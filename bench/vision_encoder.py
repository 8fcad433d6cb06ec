"""The Qwen3-Omni vision encoder at the released shapes, random weights: milliseconds of encoder per image at
448x448 and 1024x768; ours on wgpu (BF16 weights, f32 math) against Transformers eager BF16 on CUDA, in the
same run.

    python bench/vision_encoder.py [--sizes 448x448 1024x768] [--reps 5] [--hf-device cuda|cpu|none]
                                   [--shapes released|tiny] [--out FILE]

`--shapes tiny` runs the same measurements on the tiny checkpoint's vision shapes (models/tiny_omni.py) at small
images: a dry run of the script on a machine without a GPU, not a figure. (The released shapes on lavapipe take
about 40 s a forward for a 64x64 image and far longer at 448x448: they are for a GPU.)

Shapes: Transformers' default Qwen3OmniMoeVisionEncoderConfig is the released encoder (27 layers of 1152, 16
heads, intermediate 4304, patch 16, temporal patch 2, spatial merge 2, 2304 position embeddings, DeepStack at
[8, 16, 24], gelu_pytorch_tanh) except out_hidden_size: its default 3584 is Qwen2.5-Omni-7B's; Qwen3-Omni-30B-A3B's
thinker is 2048 wide, so out_hidden_size is 2048 here. An image of W x H pixels (multiples of 32) is a grid of
H/16 x W/16 patches: 784 at 448x448, 3072 at 1024x768 (what the processor gives for those sizes within the
released pixel budget). The patches are random [N, 1536] values at the scale of normalised pixels.

Weights: Transformers' own initialisation with the parameters it leaves at identities or zeros (LayerNorms,
biases) drawn as the tiny checkpoints draw them; both sides read the same BF16 tensors, so the outputs are
compared too (`cosine_vs_transformers_fp32`: our merged features against Transformers in float32). Every figure
is the median of --reps runs after a warm-up; ours is wall clock, read-back of the merged features included.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audio_encoder import cosine, gpu_profile, hf_sync  # noqa: E402
from code2wav import StateDictCheckpoint  # noqa: E402
from kernels import emit, median_seconds  # noqa: E402

from omni_lab.models import vision_encoder as ve  # noqa: E402

VISUAL = "thinker.visual."  # the checkpoint's keys of the encoder
RELEASED_OUT_HIDDEN = 2048
TINY_SIZES = ["32x24", "48x40"]


def size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT, e.g. 448x448, got {text!r}") from None
    return w, h


def patches(cfg: ve.VisionEncoderConfig, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Random pixel_values [N, K] and image_grid_thw [1, 3] of one W x H image."""
    step = cfg.patch_size * cfg.spatial_merge_size
    if w % step or h % step:
        raise SystemExit(f"--sizes: {w}x{h} must be multiples of patch x merge = {step} pixels")
    grid = np.array([[1, h // cfg.patch_size, w // cfg.patch_size]], np.int64)
    n = int(grid.prod())
    return np.random.default_rng(w * 7 + h).standard_normal((n, cfg.patch_dim)).astype(np.float32), grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=size, nargs="+", help="images as WIDTHxHEIGHT (default 448x448 1024x768; "
                                                           f"tiny: {' '.join(TINY_SIZES)})")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--hf-device", default="cuda", help="cuda, cpu, or none to skip Transformers")
    ap.add_argument("--shapes", choices=("released", "tiny"), default="released")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeVisionEncoderConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeVisionEncoder

    from omni_lab.models.tiny_omni import OMNI_PRESETS, VISION_PRESETS, draw_vision

    if args.shapes == "tiny":
        hf_cfg = Qwen3OmniMoeVisionEncoderConfig(**VISION_PRESETS["tiny"],
                                                 out_hidden_size=OMNI_PRESETS["tiny"]["hidden_size"])
    else:
        hf_cfg = Qwen3OmniMoeVisionEncoderConfig(out_hidden_size=RELEASED_OUT_HIDDEN)
    sizes = args.sizes or [size(s) for s in (TINY_SIZES if args.shapes == "tiny" else ["448x448", "1024x768"])]
    torch.manual_seed(0)
    module = Qwen3OmniMoeVisionEncoder._from_config(hf_cfg, attn_implementation="eager").eval()
    draw_vision(module, seed=0)
    module = module.to(torch.bfloat16)
    state = dict(module.state_dict())
    config = {"model_type": "qwen3_omni_moe", "thinker_config": {"vision_config": hf_cfg.to_dict()}}
    cfg = ve.VisionEncoder.config_from(config, "<random weights>")
    n_max = max(patches(cfg, w, h)[0].shape[0] for w, h in sizes)
    ours = ve.VisionEncoder(cfg, StateDictCheckpoint(state, VISUAL, config), max_len=n_max, progress=False)
    device = args.hf_device
    hf_bf16 = None
    if device != "none":
        hf_bf16 = module.to(device)
    sync = hf_sync(device) if device != "none" else (lambda: None)
    report = {"bench": "vision_encoder", "shapes": args.shapes, "reps": args.reps, "hf_device": device,
              "config": {k: getattr(cfg, k) for k in ("depth", "hidden_size", "num_heads", "intermediate_size",
                                                       "patch_size", "out_hidden_size", "deepstack_visual_indexes",
                                                       "hidden_act")},
              "ours_dtype": "bf16 weights, f32 math", "transformers_dtype": "bf16 eager", "images": {}}
    for w, h in sizes:
        pv, grid = patches(cfg, w, h)
        row = {"patches": pv.shape[0], "tokens": pv.shape[0] // cfg.unit,
               "ours_ms": 1e3 * median_seconds(lambda: ours.forward(pv, grid), args.reps),
               "ours_gpu": gpu_profile(lambda: ours.forward(pv, grid))}
        if hf_bf16 is not None:
            x, g = torch.from_numpy(pv).to(device, torch.bfloat16), torch.as_tensor(grid).to(device)

            def hf_run():
                with torch.no_grad():
                    hf_bf16(x, grid_thw=g)
                sync()

            row["transformers_ms"] = 1e3 * median_seconds(hf_run, args.reps)
            row["speedup"] = row["transformers_ms"] / row["ours_ms"]
            with torch.no_grad():  # the same BF16 weights run in float32, after the timings
                ref = hf_bf16.float()(x.float(), grid_thw=g).pooler_output.cpu().numpy()
                hf_bf16.to(torch.bfloat16)
            row["cosine_vs_transformers_fp32"] = cosine(ours.forward(pv, grid)[ve.OUTPUT], ref)
        report["images"][f"{w}x{h}"] = row
    emit(report, args.out)


if __name__ == "__main__":
    main()
