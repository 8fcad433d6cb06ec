"""Decode and prefill tok/s of the Qwen3-Omni thinker's text model at the released shapes, random weights:
ours on wgpu in BF16 and in Q8_0 against Transformers eager BF16 on CUDA, in the same run.

    python bench/thinker.py [--layers 48] [--experts 128] [--top-k 8] [--hidden 2048] [--new-tokens 32]
                            [--prompt-len 64] [--prefill-lens 64 512] [--reps 3] [--weights bf16 q8_0]
                            [--hf-device cuda|none] [--out FILE]

Prefill is one forward over a prompt of each --prefill-lens length (last position's logits), ours with
the MoE experts grouped by expert (as the model runs it) and per pair (the decode kernels), to show what
grouping buys; Q8_0 also on each q8_prefill_path (dot4, f32) with its GPU profile (`prefill_by_q8_path`).

No 61 GB checkpoint is written: our side loads from RandomCheckpoint, which serves random tensors under
the released checkpoint's keys (one random host array per distinct shape, uploaded into separate GPU
buffers, so no two layers share memory or cache lines): BF16, or for Q8_0 random int8 blocks with f16
scales for every weight `omni-lab quantize` would quantize (2-D, K a multiple of 32), norms in F32 as a
GGUF keeps them. Transformers builds the same architecture with its own random initialisation on the
GPU; the sides have different weights, so this compares speed, not tokens (correctness is
tests/test_thinker.py's job). Bytes per token count the weights a decode step reads: attention, router,
the top-k experts of every layer, the norms and the LM head (Q8_0: 34 bytes per 32 weights).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels import median_seconds  # noqa: E402
from omni_lab.formats import omni_names as names  # noqa: E402
from omni_lab.formats.q8_0 import BLOCK_BYTES, QK, dequantize_q8_0, join_q8_0  # noqa: E402
from omni_lab.formats.safetensors_io import CheckpointError  # noqa: E402
from omni_lab.gpu import bf16_bits, bf16_to_f32, runtime, tuning  # noqa: E402
from omni_lab.models.thinker import Qwen3OmniThinkerText  # noqa: E402


def text_config(a) -> dict:
    return dict(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.moe_ffn, num_hidden_layers=a.layers,
                num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=a.experts,
                num_experts_per_tok=a.top_k, moe_intermediate_size=a.moe_ffn, norm_topk_prob=True,
                decoder_sparse_step=1, mlp_only_layers=[], rms_norm_eps=1e-6, hidden_act="silu",
                max_position_embeddings=65536, attention_bias=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [24, 20, 20],
                                 "interleaved": True})


class RandomCheckpoint:
    """The checkpoint reader interface (config, names, shape, dtype, expect, get, get_f32) over random
    tensors with the released Qwen3-Omni thinker's keys and shapes, in BF16 or as a Q8_0 GGUF holds them."""

    def __init__(self, config: dict, seed: int = 0, weights: str = "bf16"):
        if weights not in ("bf16", "q8_0"):
            raise ValueError(f"RandomCheckpoint: weights must be bf16 or q8_0, got {weights!r}")
        self.weights = weights
        self.path = Path("<random weights>")
        self.config = config
        t = config["thinker_config"]["text_config"]
        d, e, f, v = t["hidden_size"], t["num_experts"], t["moe_intermediate_size"], t["vocab_size"]
        hq, hkv, dh = t["num_attention_heads"], t["num_key_value_heads"], t["head_dim"]
        self._shapes = {names.text_key("embed_tokens.weight"): (v, d), names.text_key("norm.weight"): (d,),
                        names.LM_HEAD: (v, d)}
        for i in range(t["num_hidden_layers"]):
            key = lambda live: names.text_key(live, i)  # noqa: E731
            for proj, shape in (("q_proj", (hq * dh, d)), ("k_proj", (hkv * dh, d)), ("v_proj", (hkv * dh, d)),
                                ("o_proj", (d, hq * dh))):
                self._shapes[key(f"layers.{{i}}.self_attn.{proj}.weight")] = shape
            for n in ("q_norm", "k_norm"):
                self._shapes[key(f"layers.{{i}}.self_attn.{n}.weight")] = (dh,)
            for n in ("input_layernorm", "post_attention_layernorm"):
                self._shapes[key(f"layers.{{i}}.{n}.weight")] = (d,)
            self._shapes[key("layers.{i}.mlp.gate.weight")] = (e, d)
            for x in range(e):
                for which, shape in (("gate_proj", (f, d)), ("up_proj", (f, d)), ("down_proj", (d, f))):
                    self._shapes[names.expert_key(which, i, x)] = shape
        self._rng = np.random.default_rng(seed)
        self._pool: dict[tuple, np.ndarray] = {}

    @property
    def names(self) -> list[str]:
        return list(self._shapes)

    def __contains__(self, name: str) -> bool:
        return name in self._shapes

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self._shapes:
            raise CheckpointError(f"{self.path}: tensor '{name}' is missing")
        return self._shapes[name]

    def dtype(self, name: str) -> str:
        shape = self.shape(name)
        if self.weights == "q8_0":
            return "q8_0" if len(shape) == 2 and shape[-1] % QK == 0 else "f32"
        return "bf16"

    def expect(self, name: str, shape) -> None:
        if self.shape(name) != tuple(shape):
            raise CheckpointError(f"{self.path}: tensor '{name}' has shape {self.shape(name)}, expected {tuple(shape)}")

    def get(self, name: str):
        shape, dtype = self.shape(name), self.dtype(name)
        if (shape, dtype) not in self._pool:
            self._pool[shape, dtype] = self._random(shape, dtype)
        return self._pool[shape, dtype], dtype

    def _random(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        scale = 1.0 if len(shape) == 1 else shape[-1] ** -0.5  # norms near 1, linears keep activations O(1)
        if dtype == "q8_0":
            # Uniform int8 has standard deviation ~73, so d = scale / 73 gives weights of about `scale`.
            n, k = shape
            q = self._rng.integers(-127, 128, size=(n, k), dtype=np.int8)
            d = np.full((n, k // QK), scale / 73, np.float16)
            return join_q8_0(q, d)  # [N, K/32*34]
        w = self._rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)
        if len(shape) == 1:
            w = 1.0 + 0.1 * w
        return w if dtype == "f32" else bf16_bits(w)

    def get_f32(self, name: str) -> np.ndarray:
        array, dtype = self.get(name)
        if dtype == "q8_0":
            return dequantize_q8_0(array).reshape(self.shape(name))
        return array if dtype == "f32" else bf16_to_f32(array)


def active_bytes_per_token(t: dict, weights: str = "bf16") -> int:
    """Weight bytes one decode step reads (norms are f32 either way)."""
    per = BLOCK_BYTES / QK if weights == "q8_0" else 2
    d, hq, hkv, dh = t["hidden_size"], t["num_attention_heads"], t["num_key_value_heads"], t["head_dim"]
    attn = (hq * dh * d * 2 + hkv * dh * d * 2) * per
    experts = t["num_experts_per_tok"] * 3 * t["moe_intermediate_size"] * d * per
    router = t["num_experts"] * d * per
    norms = (2 * d + 2 * dh) * 4
    return int(t["num_hidden_layers"] * (attn + experts + router + norms) + t["vocab_size"] * d * per + d * 4)


def timed_decode(gen, new_tokens: int, reps: int) -> float:
    """Median seconds per decoded token: generate(n) minus generate(1) removes prefill and the first token."""
    gen(4)
    per_token = []
    for _ in range(reps):
        t0 = time.perf_counter()
        gen(1)
        t1 = time.perf_counter()
        gen(new_tokens)
        t2 = time.perf_counter()
        per_token.append(((t2 - t1) - (t1 - t0)) / (new_tokens - 1))
    return statistics.median(per_token)


def profile_prefill(model, ids: np.ndarray) -> dict:
    """GPU time of one prefill by kernel (each dispatch timed in its own pass)."""
    rt = runtime()
    with rt.profile() as prof:
        model.forward(ids, start=0, all_logits=False)
    by_kernel = prof.by_kernel()
    return {"tokens": len(ids), "clock": prof.clock, "dispatches": len(prof.timings),
            "gpu_seconds": sum(by_kernel.values()),
            "by_kernel_seconds": dict(sorted(by_kernel.items(), key=lambda kv: -kv[1]))}


def prompt_of(n: int, vocab: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, min(vocab, 30000), n).astype(np.int64)


def bench_hf(text: dict, prompt: np.ndarray, new_tokens: int, reps: int, device: str, prefill_lens=()) -> dict:
    import torch
    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    # The multimodal token ids are never used by a text prompt, but the config needs them inside the vocabulary.
    specials = ("audio_start_token_id", "audio_end_token_id", "audio_token_id", "image_token_id", "video_token_id",
                "vision_start_token_id", "vision_end_token_id", "user_token_id")
    cfg = Qwen3OmniMoeThinkerConfig(text_config=text, **{k: text["vocab_size"] - 1 - j for j, k in enumerate(specials)})
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = Qwen3OmniMoeThinkerForConditionalGeneration._from_config(cfg, attn_implementation="eager",
                                                                         dtype=torch.bfloat16).eval()
    torch.set_default_dtype(torch.float32)
    ids = torch.as_tensor(prompt[None], device=device)

    def gen(n):
        with torch.no_grad():
            out = model.generate(input_ids=ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    s = timed_decode(gen, new_tokens, reps)
    result = {"decode_tok_per_s": 1 / s, "decode_s_per_token": s, "device": device, "dtype": "bfloat16",
              "attn_implementation": "eager", "experts_implementation": getattr(cfg.text_config, "_experts_implementation", None)}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for n in prefill_lens:
        ids_n = torch.as_tensor(prompt_of(n, text["vocab_size"])[None], device=device)

        def prefill():
            with torch.no_grad():
                model(input_ids=ids_n, logits_to_keep=1)
            sync()

        result[f"prefill_{n}_tok_per_s"] = n / median_seconds(prefill, reps)
    model = None  # the closure above holds the name; this frees the weights
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def add_shape_args(ap: argparse.ArgumentParser) -> None:
    """The thinker's shape (the released one by default) and the decode run's lengths, for text_config."""
    ap.add_argument("--layers", type=int, default=48)
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--moe-ffn", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=152064)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shape_args(ap)
    ap.add_argument("--prefill-lens", type=int, nargs="*", default=[64, 512])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--weights", nargs="+", choices=("bf16", "q8_0"), default=["bf16", "q8_0"])
    ap.add_argument("--hf-device", default="cuda", help="cuda, cpu, or none to skip Transformers")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from decode import profile_decode_step
    from kernels import bench_copy, emit, torch_copy_gb_per_s

    text = text_config(args)
    config = {"model_type": "qwen3_omni_moe", "thinker_config": {"text_config": text, "tie_word_embeddings": False}}
    prompt = np.random.default_rng(0).integers(0, min(args.vocab, 30000), args.prompt_len).astype(np.int64)
    report = {"bench": "thinker", "shape": {k: text[k] for k in ("num_hidden_layers", "hidden_size", "num_experts",
              "num_experts_per_tok", "moe_intermediate_size", "vocab_size")}, "prompt_len": args.prompt_len,
              "new_tokens": args.new_tokens, "prefill_lens": args.prefill_lens, "reps": args.reps, "weights": "random"}
    if args.hf_device != "none":  # first, so its GPU memory is free again before ours loads
        report["transformers"] = bench_hf(text, prompt, args.new_tokens, args.reps, args.hf_device, args.prefill_lens)

    rt = runtime()
    copy_mb = min(256, rt.gpu.max_binding // 2**20)
    copy = bench_copy(copy_mb, 10)["gb_per_s"]
    cuda_copy = torch_copy_gb_per_s(copy_mb, 10)
    ceiling = max(copy, cuda_copy or 0.0)
    report.update(copy_gb_per_s=copy, cuda_copy_gb_per_s=cuda_copy)
    for weights in args.weights:
        t0 = time.perf_counter()
        model = Qwen3OmniThinkerText(Qwen3OmniThinkerText.config_from(config, source="random"),
                                     RandomCheckpoint(config, weights=weights),
                                     max_len=max([args.prompt_len + args.new_tokens + 8, *args.prefill_lens]),
                                     progress=True)
        load_s = time.perf_counter() - t0
        s = timed_decode(lambda n: model.generate(prompt, n, stop_at_eos=False), args.new_tokens, args.reps)
        profile = profile_decode_step(model, prompt)
        nbytes = active_bytes_per_token(text, weights)
        ours = {"decode_tok_per_s": 1 / s, "decode_s_per_token": s, "load_s": load_s, "active_bytes_per_token": nbytes,
                "gb_per_s": nbytes / s / 1e9, "fraction_of_copy_bw": nbytes / s / 1e9 / ceiling,
                "adapter": rt.gpu.describe()["adapter"], "profile": profile}
        hf = report.get("transformers", {})
        if hf:
            ours["speedup_vs_transformers_bf16"] = ours["decode_tok_per_s"] / hf["decode_tok_per_s"]
        for n in args.prefill_lens:
            ids = prompt_of(n, args.vocab)
            for path, min_tokens in (("grouped", 2), ("pairs", n + 1)):
                model.grouped_min_tokens = min_tokens
                tok_s = n / median_seconds(lambda: model.forward(ids, start=0, all_logits=False), args.reps)
                ours[f"prefill_{n}_{path}_tok_per_s"] = tok_s
                if hf:
                    ours[f"prefill_{n}_{path}_vs_transformers"] = tok_s / hf[f"prefill_{n}_tok_per_s"]
        if args.prefill_lens:
            model.grouped_min_tokens = 2
            longest = prompt_of(max(args.prefill_lens), args.vocab)
            ours["prefill_profile"] = dict(profile_prefill(model, longest), experts="grouped")
        if weights == "q8_0" and args.prefill_lens:
            # The keys above ran the tuning table's q8_prefill_path; here each path in turn (a prefill records
            # no plan, so the override reaches every dispatch), experts grouped.
            ours["q8_prefill_path"] = tuning.current().q8_prefill_path
            ours["prefill_by_q8_path"] = {}
            for q8_path in ("dot4", "f32"):
                by = {}
                with tuning.override(q8_prefill_path=q8_path):
                    for n in args.prefill_lens:
                        ids = prompt_of(n, args.vocab)
                        by[f"prefill_{n}_grouped_tok_per_s"] = n / median_seconds(
                            lambda: model.forward(ids, start=0, all_logits=False), args.reps)
                    by["profile"] = dict(profile_prefill(model, longest), experts="grouped")
                ours["prefill_by_q8_path"][q8_path] = by
        report[f"ours_wgpu_{weights}"] = ours
        model = None  # the closure above holds the name; this frees the weights
        gc.collect()
    emit(report, args.out)


if __name__ == "__main__":
    main()
