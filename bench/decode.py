"""Decode and prefill tok/s of dense Qwen3: ours on wgpu against Transformers eager in the same run.

    python bench/decode.py [--model DIR | --preset qwen3-0.6b] [--prompt-len 128] [--new-tokens 64]
                           [--reps 3] [--hf-device cuda] [--out FILE]

Without --model it builds a random checkpoint with Qwen3-0.6B's exact shapes (BF16) in a temporary
directory. Both sides decode greedily from the same prompt; the JSON reports the median over --reps runs,
the bytes of weights read per decoded token, and that figure over the measured time as a fraction of the
copy bandwidth measured in the same run (bench/kernels.py's copy). Greedy tokens of both sides are
reported too, since a fast wrong model is no result.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omni_lab.gpu import runtime, tuning  # noqa: E402
from omni_lab.models.qwen3 import Qwen3  # noqa: E402
from omni_lab.models.tiny import build_tiny_qwen3  # noqa: E402


def weight_bytes_per_token(model: Qwen3) -> int:
    """Bytes of weights a decode step reads: every layer's linears and norms, the final norm and the
    LM head; the embedding table contributes one row (it is read in full only as a tied LM head)."""
    total = 0
    for L in model.layers:
        parts = [getattr(L.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")]
        parts += [getattr(L.mlp, n) for n in ("gate_proj", "up_proj", "down_proj")]
        for w in parts + [L.input_layernorm, L.post_attention_layernorm]:
            total += w.nbytes if hasattr(w, "nbytes") else w.quants.nbytes + w.scales.nbytes
    lm = model.lm_head
    total += lm.nbytes if hasattr(lm, "nbytes") else lm.quants.nbytes + lm.scales.nbytes
    return total + model.norm.nbytes


def bench_ours(path: Path, prompt: np.ndarray, new_tokens: int, reps: int) -> dict:
    model = Qwen3.load(path, max_len=len(prompt) + new_tokens + 8, progress=False)
    rt = runtime()
    model.generate(prompt, 4, stop_at_eos=False)  # warm-up: pipelines, bind groups, the decode plan
    decode, prefill, tokens = [], [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        model.forward(prompt, start=0, all_logits=False)
        prefill.append(time.perf_counter() - t0)
        # Time decode alone: a one-token generate is prefill + first token; the difference is decode.
        t0 = time.perf_counter()
        model.generate(prompt, 1, stop_at_eos=False)
        t1 = time.perf_counter()
        tokens = model.generate(prompt, new_tokens, stop_at_eos=False)
        t2 = time.perf_counter()
        decode.append(((t2 - t1) - (t1 - t0)) / (new_tokens - 1))
    rt.sync()
    return {"decode_tok_per_s": 1 / statistics.median(decode), "prefill_tok_per_s": len(prompt) / statistics.median(prefill),
            "decode_s_per_token": statistics.median(decode), "tokens": tokens,
            "weight_bytes_per_token": weight_bytes_per_token(model)}


def profile_decode_step(model, prompt: np.ndarray) -> dict:
    """GPU time of one decode step by kernel (each dispatch timed in its own pass), against the wall
    time of a step as generation runs it: the difference is launch, barrier and host time."""
    rt = runtime()
    model.generate(prompt, 3, stop_at_eos=False)  # records the decode plan
    (plan,) = [p for k, p in model._plans.items() if k[:2] == ("next_token", 1)]
    with rt.profile() as prof:
        rt.replay(plan, ())
    by_kernel = prof.by_kernel()
    # The host's share: encoding and submitting a step (what run-ahead decoding overlaps with the GPU's
    # work on the step before); a step whose host time reaches its GPU time is host-bound.
    host = []
    for _ in range(5):
        rt.sync()
        t0 = time.perf_counter()
        step = rt.replay_async(plan, ())
        host.append(time.perf_counter() - t0)
        step.values()
    return {"clock": prof.clock, "dispatches": len(plan), "gpu_seconds": sum(by_kernel.values()),
            "host_seconds": statistics.median(host),
            "by_kernel_seconds": dict(sorted(by_kernel.items(), key=lambda kv: -kv[1])),
            "count_by_kernel": {k: sum(1 for t in prof.timings if t.kernel == k) for k in by_kernel}}


def bench_hf(path: Path, prompt: np.ndarray, new_tokens: int, reps: int, device: str, dtype: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, attn_implementation="eager",
                                                 use_safetensors=True, local_files_only=True).to(device).eval()
    ids = torch.as_tensor(prompt[None], device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def gen(n):
        with torch.no_grad():
            return model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    gen(4)
    decode, prefill, out = [], [], None
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            model(ids)
        sync()
        prefill.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        gen(1)
        sync()
        t1 = time.perf_counter()
        out = gen(new_tokens)
        sync()
        t2 = time.perf_counter()
        decode.append(((t2 - t1) - (t1 - t0)) / (new_tokens - 1))
    return {"decode_tok_per_s": 1 / statistics.median(decode), "prefill_tok_per_s": len(prompt) / statistics.median(prefill),
            "decode_s_per_token": statistics.median(decode), "tokens": out[0, len(prompt):].tolist(),
            "device": device, "dtype": dtype, "attn_implementation": "eager"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--preset", default="qwen3-0.6b")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hf-device", default="cuda", help="cuda, cpu, or none to skip Transformers")
    ap.add_argument("--hf-dtype", default="bfloat16")
    ap.add_argument("--set", default="", metavar="NAME=VALUE[,NAME=VALUE]",
                    help="tuning table fields for our run (bench/decode_settings.py's syntax)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    tmp = None
    path = args.model
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="omni-lab-bench-")
        path = build_tiny_qwen3(Path(tmp.name) / args.preset, seed=0, preset=args.preset)
    prompt = np.random.default_rng(0).integers(0, 300, args.prompt_len).astype(np.int64)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from decode_settings import parse_setting
    from kernels import bench_copy, emit, torch_copy_gb_per_s  # the same copy yardstick as the kernel benchmark

    copy_mb = min(256, runtime().gpu.max_binding // 2**20)
    copy = bench_copy(copy_mb, 10)["gb_per_s"]
    cuda_copy = torch_copy_gb_per_s(copy_mb, 10)
    ceiling = max(copy, cuda_copy or 0.0)
    setting = parse_setting(args.set)
    with tuning.override(**setting):
        ours = bench_ours(path, prompt, args.new_tokens, args.reps)
        ours["profile"] = profile_decode_step(Qwen3.load(path, max_len=len(prompt) + 8, progress=False), prompt)
    ours["tuning_override"] = setting
    ours["gb_per_s"] = ours["weight_bytes_per_token"] * ours["decode_tok_per_s"] / 1e9
    ours["fraction_of_copy_bw"] = ours["gb_per_s"] / ceiling
    report = {"bench": "decode", "model": str(args.model or args.preset), "prompt_len": args.prompt_len,
              "new_tokens": args.new_tokens, "reps": args.reps, "adapter": runtime().gpu.describe()["adapter"],
              "copy_gb_per_s": copy, "cuda_copy_gb_per_s": cuda_copy, "ours_wgpu": ours}
    if args.hf_device != "none":
        hf = bench_hf(path, prompt, args.new_tokens, args.reps, args.hf_device, args.hf_dtype)
        report["transformers"] = hf
        report["decode_speedup"] = ours["decode_tok_per_s"] / hf["decode_tok_per_s"]
        same = next((i for i, (a, b) in enumerate(zip(ours["tokens"], hf["tokens"])) if a != b), len(ours["tokens"]))
        report["greedy_tokens_agree_for"] = same
    emit(report, args.out)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
