"""Ours against llama.cpp's Vulkan backend on the same GPU, from one command: decode and prefill of the
Qwen3-Omni thinker's text model (BF16 and Q8_0) and Qwen3-0.6B decode, with the ratio, our dispatches per
token, the fraction of copy bandwidth each side reaches, and what one dispatch and one barrier cost here.

    MODELS="thinker-q8_0 qwen3-0.6b-bf16" bash .gpu/llamacpp/gpu_bench.sh        # llama-bench JSON in $OUT
    python bench/thinker.py --hf-device none --prefill-lens 512 --out $OUT/thinker.json
    python bench/decode.py --hf-device none --out $OUT/decode.json
    python bench/versus_llamacpp.py --llamacpp $OUT --thinker $OUT/thinker.json --qwen3 $OUT/decode.json \
        --out $OUT/versus_llamacpp.json

llama.cpp's files are its own random-weight GGUFs of the same shapes (../shared/llamacpp/make_gguf.py: plain
RoPE where the thinker has MRoPE, which costs the same); ours are bench/thinker.py's and bench/decode.py's
random weights. Both sides run the same shapes, so this compares speed, not tokens. llama.cpp's byte counts
are ours for the same shape and type (the same tensors are read), so both fractions use one yardstick: the
copy bandwidth bench/kernels.py measures on this adapter.

The dispatch costs: a recorded step (one submission, replayed) of N one-workgroup copies, each into a buffer of
its own (no barrier is needed between them), against N copies into one buffer (a barrier before each), wall
clock, median of several; the per-token share is that cost times our dispatches per token over our time per
token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernels import emit  # noqa: E402
from omni_lab.gpu import runtime  # noqa: E402
from omni_lab.ops import copy  # noqa: E402


def dispatch_costs(n: int = 2000, reps: int = 7) -> dict:
    """Seconds of one dispatch without and with a barrier before it: a step of n one-workgroup copies,
    recorded once and replayed as decode replays its steps (so the host's encoding is wgpu-native's loop,
    not Python), submit to completion, minus an empty step's time."""
    rt = runtime()
    src = rt.empty((4,), "f32")
    own = [rt.empty((4,), "f32") for _ in range(n)]
    shared = rt.empty((4,), "f32")

    def recorded(outs) -> list:
        with rt.step() as step:
            for out in outs:
                copy.copy(src, out)
            return list(step.dispatches)

    def median(plan) -> float:
        rt.replay(plan, ())

        def once() -> float:
            t0 = time.perf_counter()
            rt.replay(plan, ())
            return time.perf_counter() - t0
        return statistics.median(once() for _ in range(reps))

    empty = median(recorded(own[:1])) if n else 0.0  # one dispatch: the submit and wait themselves
    free = (median(recorded(own)) - empty) / (n - 1)
    fenced = (median(recorded([shared] * n)) - empty) / (n - 1)
    return {"dispatch_s": free, "barrier_s": max(fenced - free, 0.0), "dispatch_with_barrier_s": fenced,
            "one_dispatch_step_s": empty, "dispatches_timed": n, "clock": "wall (replayed step, submit to completion)"}


def llamacpp_runs(folder: Path) -> dict:
    """{model: {"pp512": tok/s, "tg128": tok/s, ...}, plus build and device} from gpu_bench.sh's files."""
    out = {}
    for f in sorted(folder.glob("bench_*.json")):
        try:
            rows = json.loads(f.read_text())
        except json.JSONDecodeError:
            continue  # a run that failed leaves an empty or partial file; its .err says why
        name = f.stem[len("bench_"):]
        runs = {}
        for r in rows:
            kind = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
            runs[kind] = r["avg_ts"]
            runs[kind + "_stddev"] = r["stddev_ts"]
            runs.update(build_commit=r.get("build_commit"), gpu=r.get("gpu_info"), backends=r.get("backends"),
                        model_type=r.get("model_type"), model_size=r.get("model_size"))
        out[name] = runs
    return out


def side_by_side(ours_tok_s: float, theirs_tok_s: float | None, ours_bytes: int | None, theirs_bytes: int | None,
                 copy_gb_s: float, dispatches: int | None, costs: dict) -> dict:
    row = {"omni_lab_tok_per_s": ours_tok_s, "llamacpp_tok_per_s": theirs_tok_s,
           "ratio": ours_tok_s / theirs_tok_s if theirs_tok_s else None}
    if ours_bytes:
        row["omni_lab_fraction_of_copy_bw"] = ours_bytes * ours_tok_s / 1e9 / copy_gb_s
    if theirs_bytes and theirs_tok_s:
        row["llamacpp_fraction_of_copy_bw"] = theirs_bytes * theirs_tok_s / 1e9 / copy_gb_s
    if dispatches:
        per_token = 1 / ours_tok_s
        row.update(dispatches_per_token=dispatches,
                   dispatch_share_of_token=dispatches * costs["dispatch_s"] / per_token,
                   barrier_share_of_token=dispatches * costs["barrier_s"] / per_token)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llamacpp", type=Path, required=True, help="the folder gpu_bench.sh wrote bench_*.json into")
    ap.add_argument("--thinker", type=Path, required=True, help="bench/thinker.py's JSON")
    ap.add_argument("--qwen3", type=Path, help="bench/decode.py's JSON (Qwen3-0.6B)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    theirs = llamacpp_runs(args.llamacpp)
    thinker = json.loads(args.thinker.read_text())
    costs = dispatch_costs()
    copy_gb_s = max(thinker["copy_gb_per_s"], thinker.get("cuda_copy_gb_per_s") or 0.0)
    tq = theirs.get("thinker-q8_0", {})
    report = {"bench": "versus_llamacpp", "adapter": runtime().gpu.describe()["adapter"], "copy_gb_per_s": copy_gb_s,
              "llamacpp": theirs, "dispatch_costs": costs, "rows": {}}
    # llama.cpp's thinker is Q8_0: it reads what our Q8_0 model reads (the same tensors, 34 bytes per 32).
    q8_bytes = thinker.get("ours_wgpu_q8_0", {}).get("active_bytes_per_token")
    for weights in ("bf16", "q8_0"):
        ours = thinker.get(f"ours_wgpu_{weights}")
        if not ours:
            continue
        report["rows"][f"thinker {weights} decode vs llama.cpp q8_0 tg128"] = side_by_side(
            ours["decode_tok_per_s"], tq.get("tg128"), ours["active_bytes_per_token"], q8_bytes, copy_gb_s,
            ours["profile"]["dispatches"], costs)
        for key, value in ours.items():
            if key.startswith("prefill_512_grouped_tok_per_s"):
                report["rows"][f"thinker {weights} prefill 512 vs llama.cpp q8_0 pp512"] = side_by_side(
                    value, tq.get("pp512"), None, None, copy_gb_s, None, costs)
    if args.qwen3:
        dense = json.loads(args.qwen3.read_text())
        ours = dense["ours_wgpu"]
        tb = theirs.get("qwen3-0.6b-bf16", {})
        report["rows"]["qwen3-0.6b bf16 decode vs llama.cpp bf16 tg128"] = side_by_side(
            ours["decode_tok_per_s"], tb.get("tg128"), ours["weight_bytes_per_token"], ours["weight_bytes_per_token"], copy_gb_s,
            ours["profile"]["dispatches"], costs)
    emit(report, args.out)


if __name__ == "__main__":
    main()
