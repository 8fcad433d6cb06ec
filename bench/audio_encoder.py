"""The Qwen3-Omni audio encoder (AuT) at the released shapes, random weights: milliseconds of encoder per
second of audio, and the thinker's prefill over a prompt of 30 s of audio; ours on wgpu (BF16 weights, f32
math) against Transformers eager BF16 on CUDA, in the same run.

    python bench/audio_encoder.py [--seconds 5 30] [--prefill-seconds 30] [--thinker-layers 12] [--reps 5]
                                  [--hf-device cuda|cpu|none] [--shapes released|tiny] [--out FILE]

`--shapes tiny` runs the same measurements on the tiny checkpoint's shapes (models/tiny_omni.py): a dry run of
the script on a machine without a GPU, not a figure.

Shapes: Transformers' default Qwen3OmniMoeAudioEncoderConfig is the released encoder (128 mel bins, 3 stride-2
Conv2d of 480 channels, 32 layers of 1280, 20 heads, FFN 5120, n_window 50, n_window_infer 800) except
output_dim: its default 3584 is Qwen2.5-Omni-7B's thinker width; the projection of Qwen3-Omni-30B-A3B feeds a
2048-wide thinker, so output_dim is the thinker's hidden size here. The thinker is bench/thinker.py's released
text model with --thinker-layers of its 48 layers (the JSON says which), so that ours and Transformers each
hold their own copy on one GPU (12 layers: about 15 GB of experts a side).

Weights: the encoder is Transformers' own initialisation with the parameters it leaves at identities or zeros
(LayerNorms, biases) drawn as the tiny checkpoints draw them; both sides read the same BF16 tensors, so the
outputs are compared too (`cosine_vs_transformers_fp32`: ours against Transformers in float32 on those
weights). The thinker's weights differ between the sides (ours: bench/thinker.py's RandomCheckpoint;
Transformers: its own initialisation): its prefill compares speed only.

Features are random [128, 100 per second] arrays at the scale of Whisper log-mels; the prefill prompt is
text, the audio's placeholders between its marks (one per encoder frame: 13 per second), more text. Every
figure is the median of --reps runs after a warm-up; ours is wall clock (read-back included) plus the GPU time
of one forward by kernel (timestamp queries, each dispatch in its own pass).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from code2wav import StateDictCheckpoint  # noqa: E402
from kernels import emit, median_seconds  # noqa: E402
from thinker import RandomCheckpoint, text_config  # noqa: E402

from omni_lab.gpu import runtime  # noqa: E402
from omni_lab.models import audio_encoder as enc  # noqa: E402
from omni_lab.models.audio_in import ThinkerWithAudio  # noqa: E402

MEL_FRAMES_PER_SECOND = 100
TOWER = "thinker.audio_tower."  # the checkpoint's keys of the encoder
RELEASED_THINKER = dict(vocab=152064, hidden=2048, moe_ffn=768, experts=128, top_k=8)
TINY_THINKER = dict(vocab=1024, hidden=64, moe_ffn=32, experts=4, top_k=2)


class Checkpoints:
    """The checkpoint reader interface over several readers with disjoint keys (encoder and thinker)."""

    def __init__(self, config: dict, *readers):
        self.path, self.config, self._readers = Path("<random weights>"), config, readers

    @property
    def names(self) -> list[str]:
        return [n for r in self._readers for n in r.names]

    def __contains__(self, name: str) -> bool:
        return any(name in r for r in self._readers)

    def _of(self, name: str):
        return next((r for r in self._readers if name in r), self._readers[0])  # a missing key: its error

    def expect(self, name: str, shape) -> None:
        self._of(name).expect(name, shape)

    def dtype(self, name: str) -> str:
        return self._of(name).dtype(name)

    def get(self, name: str):
        return self._of(name).get(name)

    def get_f32(self, name: str) -> np.ndarray:
        return self._of(name).get_f32(name)


def features_of(seconds: float, mel_bins: int) -> np.ndarray:
    # Whisper log-mels lie in about [-1.5, 1.5] after its normalisation
    return (0.5 * np.random.default_rng(int(seconds * 10)).standard_normal(
        (mel_bins, int(seconds * MEL_FRAMES_PER_SECOND)))).astype(np.float32)


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def gpu_profile(fn) -> dict:
    """GPU seconds of one call of fn by kernel (the top 12), and the clock that timed them."""
    rt = runtime()
    with rt.profile() as prof:
        fn()
    by_kernel = prof.by_kernel()
    return {"clock": prof.clock, "dispatches": len(prof.timings), "gpu_s": sum(by_kernel.values()),
            "gpu_s_by_kernel": dict(sorted(by_kernel.items(), key=lambda kv: -kv[1])[:12])}


def hf_sync(device: str):
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def bench_encoder(module, hf_bf16, ours, seconds_list, reps: int, device: str) -> dict:
    """Per clip length: ms per audio second of each side, the speedup, and ours against Transformers fp32."""
    import torch

    sync = hf_sync(device)
    out = {}
    for seconds in seconds_list:
        feats = features_of(seconds, ours.cfg.num_mel_bins)
        flat, lens = enc.hf_features([feats])
        o_s = median_seconds(lambda: ours.forward([feats]), reps)
        row = {"mel_frames": feats.shape[1], "encoder_frames": enc.output_length(feats.shape[1]),
               "ours_ms_per_audio_s": 1e3 * o_s / seconds, "ours_s": o_s,
               "ours_gpu": gpu_profile(lambda: ours.forward([feats]))}
        if hf_bf16 is not None:
            x, n = flat.to(device), lens.to(device)

            def hf_run():
                with torch.no_grad():
                    hf_bf16(input_features=x, feature_lens=n)
                sync()

            h_s = median_seconds(hf_run, reps)
            row.update(transformers_ms_per_audio_s=1e3 * h_s / seconds, transformers_s=h_s, speedup=h_s / o_s)
            with torch.no_grad():
                ref = module(input_features=x, feature_lens=n).last_hidden_state.float().cpu().numpy()
            row["cosine_vs_transformers_fp32"] = cosine(ours.forward([feats])[enc.OUTPUT], ref)
        out[f"{seconds:g}s"] = row
    return out


def prompt_ids(n_audio: int, audio_token_id: int, marks: tuple[int, int], vocab: int) -> np.ndarray:
    """24 text tokens, the audio start mark, n_audio placeholders, the end mark, 16 text tokens."""
    text = np.random.default_rng(1).integers(0, min(vocab - 16, 30000), 40)
    return np.concatenate([text[:24], [marks[0]], np.full(n_audio, audio_token_id), [marks[1]], text[24:]]).astype(np.int64)


def hf_thinker(text: dict, audio: dict, specials: dict, device: str):
    import torch
    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    # The vision tower is never run by an audio prompt: a one-layer one keeps the GPU for what is measured.
    vision = dict(depth=1, hidden_size=32, intermediate_size=32, num_heads=2, out_hidden_size=text["hidden_size"])
    cfg = Qwen3OmniMoeThinkerConfig(text_config=text, audio_config=audio, vision_config=vision, **specials)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = Qwen3OmniMoeThinkerForConditionalGeneration._from_config(cfg, attn_implementation="eager",
                                                                         dtype=torch.bfloat16).eval()
    torch.set_default_dtype(torch.float32)
    return model


def bench_prefill(args, audio: dict, tower_state: dict, seconds: float) -> dict:
    """The thinker's prefill (last token's logits) over a prompt with `seconds` of audio, encoder included."""
    import torch

    shape = TINY_THINKER if args.shapes == "tiny" else RELEASED_THINKER
    text = text_config(SimpleNamespace(layers=args.thinker_layers, **shape))
    names = ("audio_start_token_id", "audio_end_token_id", "audio_token_id", "image_token_id", "video_token_id",
             "vision_start_token_id", "vision_end_token_id", "user_token_id")
    specials = {k: text["vocab_size"] - 1 - j for j, k in enumerate(names)}  # inside the vocabulary, unused by text
    feats = features_of(seconds, audio["num_mel_bins"])
    ids = prompt_ids(enc.output_length(feats.shape[1]), specials["audio_token_id"],
                     (specials["audio_start_token_id"], specials["audio_end_token_id"]), text["vocab_size"])
    result = {"seconds": seconds, "prompt_tokens": len(ids), "audio_tokens": enc.output_length(feats.shape[1]),
              "thinker_layers": args.thinker_layers, "thinker_layers_released": 48,
              "thinker_shape": {k: text[k] for k in ("hidden_size", "num_experts", "num_experts_per_tok",
                                                     "moe_intermediate_size", "vocab_size")}}
    if args.hf_device != "none":  # first, so its GPU memory is free again before ours loads
        model = hf_thinker(text, audio, specials, args.hf_device)
        # transformers 5.2x keeps the tower at thinker.model.audio_tower, 5.17 (the GPU machine's) at thinker.audio_tower
        (getattr(model.model, "audio_tower", None) or model.audio_tower).load_state_dict(tower_state)
        mask = torch.ones(1, feats.shape[1], dtype=torch.long, device=args.hf_device)
        kw = dict(input_ids=torch.as_tensor(ids[None], device=args.hf_device),
                  attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=args.hf_device),
                  input_features=torch.as_tensor(feats[None], device=args.hf_device), feature_attention_mask=mask)
        sync = hf_sync(args.hf_device)

        def hf_run():
            with torch.no_grad():
                model(**kw, logits_to_keep=1)
            sync()

        result["transformers_s"] = median_seconds(hf_run, args.reps)
        del model, kw
        gc.collect()
        if args.hf_device.startswith("cuda"):
            torch.cuda.empty_cache()

    config = {"model_type": "qwen3_omni_moe", "thinker_config": {"text_config": text, "audio_config": audio,
                                                                 "tie_word_embeddings": False, **specials}}
    tower = StateDictCheckpoint(tower_state, TOWER, config)
    t0 = time.perf_counter()
    ours = ThinkerWithAudio(ThinkerWithAudio.config_from(config, "random"),
                            Checkpoints(config, tower, RandomCheckpoint(config)), max_len=len(ids) + 8, progress=True)
    result["ours_load_s"] = time.perf_counter() - t0
    run = lambda: ours.forward(ids, [feats], all_logits=False)  # noqa: E731
    result["ours_s"] = median_seconds(run, args.reps)
    result["ours_tok_per_s"] = len(ids) / result["ours_s"]
    result["ours_gpu"] = gpu_profile(run)
    if "transformers_s" in result:
        result["transformers_tok_per_s"] = len(ids) / result["transformers_s"]
        result["speedup"] = result["transformers_s"] / result["ours_s"]
    ours = run = None  # the closure holds the name; this frees the weights
    gc.collect()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[5.0, 30.0], help="clip lengths of the encoder bench")
    ap.add_argument("--prefill-seconds", type=float, default=30.0, help="audio in the thinker's prefill prompt")
    ap.add_argument("--thinker-layers", type=int, default=12,
                    help="depth of the thinker for the prefill (released: 48; 12 fits ours and Transformers on one "
                         "139 GB GPU); 0 skips the prefill")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--hf-device", default="cuda", help="cuda, cpu, or none to skip Transformers")
    ap.add_argument("--shapes", choices=("released", "tiny"), default="released")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import copy

    import torch
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeAudioEncoderConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeAudioEncoder

    from omni_lab.models.tiny_omni import AUDIO_PRESETS, OMNI_PRESETS, draw_audio_tower

    torch.manual_seed(0)
    if args.shapes == "tiny":
        hf_cfg = Qwen3OmniMoeAudioEncoderConfig(**AUDIO_PRESETS["tiny"], output_dim=OMNI_PRESETS["tiny"]["hidden_size"])
    else:
        hf_cfg = Qwen3OmniMoeAudioEncoderConfig(output_dim=RELEASED_THINKER["hidden"])  # see the module's docstring
    module = Qwen3OmniMoeAudioEncoder._from_config(hf_cfg, attn_implementation="eager").eval()
    draw_audio_tower(module, seed=0)
    with torch.no_grad():  # both sides read the same BF16 values; the fp32 reference holds them in float32
        for p in module.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    audio = hf_cfg.to_dict()
    config = {"model_type": "qwen3_omni_moe", "thinker_config": {"audio_config": audio}}
    cfg = enc.AudioEncoderConfig.from_dict(config, "Transformers' defaults")
    tower_state = {k: v.to(torch.bfloat16) for k, v in module.state_dict().items()}
    report = {"bench": "audio_encoder", "shapes": args.shapes, "reps": args.reps, "weights": "random, BF16",
              "encoder_shape": {k: audio[k] for k in ("num_mel_bins", "encoder_layers", "encoder_attention_heads",
                                                      "encoder_ffn_dim", "d_model", "output_dim", "downsample_hidden_size",
                                                      "n_window", "n_window_infer")},
              "adapter": runtime().gpu.describe()["adapter"]}

    longest = max([*args.seconds, args.prefill_seconds])
    t0 = time.perf_counter()
    ours = enc.AudioEncoder(cfg, StateDictCheckpoint(tower_state, TOWER, config),
                            max_len=enc.output_length(int(longest * MEL_FRAMES_PER_SECOND)), progress=True)
    report["ours_encoder_load_s"] = time.perf_counter() - t0
    hf_bf16 = None
    if args.hf_device != "none":
        hf_bf16 = copy.deepcopy(module).to(args.hf_device, torch.bfloat16)  # as people run it
        # float32 for real: PyTorch's CUDA matmuls and convolutions run in TF32 unless told not to
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        module.to(args.hf_device)
    report["encoder"] = bench_encoder(module, hf_bf16, ours, args.seconds, args.reps, args.hf_device)
    del ours, hf_bf16, module
    gc.collect()
    if args.hf_device.startswith("cuda"):
        torch.cuda.empty_cache()
    if args.thinker_layers:
        emit(report, args.out)  # the encoder's figures survive a failing prefill
        report["prefill"] = bench_prefill(args, audio, tower_state, args.prefill_seconds)
    emit(report, args.out)


if __name__ == "__main__":
    main()
