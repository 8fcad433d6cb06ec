"""Kernel benchmark: time per op, GB/s or GFLOP/s, and the fraction of the copy bandwidth measured in
the same run. Prints one JSON object (and writes it with --out).

    python bench/kernels.py [--weights-mb 256 1024] [--reps 20] [--quick]
                            [--decode | --latency | --moe | --matmul | --attention] [--out FILE]

Times are GPU timestamps where the adapter has them (median of --reps runs after a warm-up), wall clock
otherwise; the JSON says which. Inputs are random, never zeros. Each benchmarked case is first checked
against its numpy reference on the same inputs (the op registry's, omni_lab/ops/registry.py), so a fast
wrong kernel is reported as wrong.

Besides the bandwidth sweep over large weights, every run times the small launches of a decode step, each
with the cache flushed before every run (a decode step reads gigabytes, so its small weights come from
memory, not cache): the bf16 matvecs of the Qwen3-Omni thinker (router 128 x 2048, fused q/k/v
4096 + 512 + 512 rows x 2048, o_proj 2048 x 4096) and of Qwen3-0.6B at 16, 32, 64, 128 and 256 threads
per row and at linear.matvec_tpr's choice, and the latency-bound decode kernels at the thinker's shapes
(issue 16), each as it was before that issue's rework (frozen in bench/baseline/) and as it is now, with and
without subgroup operations: attention (32 q / 4 kv heads, head dim 128) over 100 to 4000 keys through the old
split pair, the split pair now and the single pass `decode` at 128, 256 and 512 threads; the QK RMSNorm +
MRoPE + cache append (rope.norm_rope_append); that append followed by `decode` (and by quantize_act for a
Q8_0 o_proj) against the one dispatch that does it all (attention_rope's `decode`, `decode_q8`) at 100 keys
in 104- and 512-row caches; the router's softmax + top-8 of 128 (moe.route). The JSON's
`us_per_call` lists those per-call times. --decode runs only the decode cases, --latency only the latter:
seconds on an H200. --matmul times the prefill matmul alone at the thinker's prefill shapes (bf16 and f32
weights, and Q8_0 on both q8_prefill_paths: dot4 = quantize_act + tiles_dot4, f32 = tiles_q8); --moe one MoE
layer's experts per pair and grouped (Q8_0 grouped on both prefill paths), and a decode token from the router's
logits through route + the per-pair experts against the routed gate_up; --attention multi-token attention
per (token, head) and flash.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omni_lab.atomic import write_text  # noqa: E402
from omni_lab.gpu import runtime, tuning  # noqa: E402
from omni_lab.ops import copy as copy_op  # noqa: E402
from omni_lab.ops import linear  # noqa: E402
from omni_lab.ops.registry import nmse, reference  # noqa: E402


def median_seconds(run, reps: int) -> float:
    """Median seconds of run() over reps runs after a warm-up run (which records plans and picks paths)."""
    run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def emit(report: dict, out: Path | None) -> None:
    """Print a benchmark's JSON, and write it to `out` under a temporary name renamed when complete."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        write_text(out, text)


def profiles(fn, reps: int, flush=None) -> list:
    """The per-dispatch times of fn over reps runs, after one warm-up run; `flush`, if given, is
    dispatched before each run, untimed."""
    rt = runtime()
    fn()
    rt.sync()
    out = []
    for _ in range(reps):
        if flush:
            flush()
            # Nothing orders the flush before fn's pass (they share no buffer): run together, fn's pass
            # would start its clock early and share the memory with the copy's tail.
            rt.sync()
        with rt.profile() as prof:
            with rt.step():
                fn()
        out.append(prof)
    return out


def timed(fn, reps: int, flush=None) -> tuple[float, str]:
    """Median seconds of fn's dispatches over reps runs (see `profiles`)."""
    profs = profiles(fn, reps, flush)
    return statistics.median(sum(t.seconds for t in p.timings) for p in profs), profs[0].clock


def random_weight(rng, n: int, k: int, dtype: str):
    """Random [n, k] weights as stored (host array for upload) and as the GPU sees them (float32)."""
    return linear.stored(rng.standard_normal((n, k), dtype=np.float32) * np.float32(k ** -0.5), dtype)


def bench_copy(mb: int, reps: int) -> dict:
    rt = runtime()
    n = mb * 2**20 // 4
    host = np.random.default_rng(0).integers(0, 2**32 - 1, n, dtype=np.uint32)
    src = rt.upload(host)
    dst = rt.empty((n,), "u32")
    assert np.array_equal(copy_op.copy(src, dst).numpy(), reference("copy.copy")(host))
    t, clock = timed(lambda: copy_op.copy(src, dst), reps)
    return {"op": "copy", "bytes": 2 * src.nbytes, "seconds": t, "gb_per_s": 2 * src.nbytes / t / 1e9, "clock": clock}


def torch_copy_gb_per_s(mb: int, reps: int) -> float | None:
    """The same copy through CUDA (torch), where there is one: a second, vendor-side ceiling."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    src = torch.randint(0, 2**31 - 1, (mb * 2**20 // 4,), dtype=torch.int32, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e-3)
    return 2 * src.numel() * 4 / statistics.median(times) / 1e9


def bench_matvec(mb: int, dtype: str, reps: int, rng, tprs=(32,)) -> dict:
    rt = runtime()
    k = 4096
    n = mb * 2**20 // (k * (4 if dtype == "f32" else 2))
    host, seen = random_weight(rng, n, k, dtype)
    w = rt.upload(host, dtype)
    x = rng.standard_normal(k, dtype=np.float32)
    xt, y = rt.upload(x), rt.empty((n,))
    sweep = {}
    for tpr in tprs:
        err = nmse(linear.matvec(xt, w, out=y, threads_per_row=tpr).numpy(), reference("linear.matvec")(x, seen))
        assert err < 1e-9, f"matvec.{dtype} threads_per_row={tpr}: nmse {err}"
        sweep[tpr] = timed(lambda: linear.matvec(xt, w, out=y, threads_per_row=tpr), reps)
    best = min(sweep, key=lambda k: sweep[k][0])
    t, clock = sweep[best]
    return {"op": f"matvec.{dtype}", "shape": [n, k], "bytes": w.nbytes, "seconds": t,
            "gb_per_s": w.nbytes / t / 1e9, "nmse": err, "clock": clock, "threads_per_row": best,
            "sweep_gb_per_s": {str(k): w.nbytes / v[0] / 1e9 for k, v in sweep.items()}}


def bench_q8_matvec(mb: int, reps: int, rng) -> list[dict]:
    """Both Q8_0 decode paths on `mb` MB of Q8_0 blocks; bytes counted are the blocks' (34 per 32 weights)."""
    from omni_lab.formats.q8_0 import join_q8_0, upload_q8_0
    from omni_lab.ops import q8_0 as q8

    k = 4096
    n = mb * 2**20 // (k // 32 * 34)
    wq = rng.integers(-127, 128, (n, k), dtype=np.int8)
    wd = (rng.random((n, k // 32), dtype=np.float32) * 0.02 + 0.001).astype(np.float16)
    w = upload_q8_0(join_q8_0(wq, wd), (n, k))
    nbytes = n * k // 32 * 34
    x = rng.standard_normal(k, dtype=np.float32)
    xt, y = runtime().upload(x), runtime().empty((n,))
    out = []
    for path, fn, ref in (("dot4", q8.q8_matvec, reference("q8_0.q8_matvec")),
                          ("f32", q8.q8_matvec_f32, reference("q8_0.q8_matvec_f32"))):
        rows = slice(0, 4096)  # the reference on a slice of rows keeps the host work small
        err = nmse(fn(xt, w, out=y).numpy()[rows], ref(x, wq[rows], wd[rows]))
        t, clock = timed(lambda: fn(xt, w, out=y), reps)
        out.append({"op": f"q8_matvec.{path}", "shape": [n, k], "bytes": nbytes, "seconds": t,
                    "gb_per_s": nbytes / t / 1e9, "nmse_first_rows": err, "clock": clock})
    return out


def cache_flush(mb: int):
    """A copy of `mb` MB (at most one storage binding), to run before each timed run of a small kernel:
    it evicts the kernel's inputs from the GPU's cache (50 MB on an H100, 60 MB on an H200), as the rest
    of a decode step would."""
    rt = runtime()
    n = min(mb * 2**20, rt.gpu.max_binding) // 16 * 4
    src, dst = rt.empty((n,), "u32"), rt.empty((n,), "u32")
    return lambda: copy_op.copy(src, dst)


# Threads per row swept for the decode-step matvecs, from linear.default_tpr (16 for bf16) up.
DECODE_TPRS = (16, 32, 64, 128, 256)
# Decode matvecs (bf16) of the Qwen3-Omni thinker and of Qwen3-0.6B: rows of each weight of one
# dispatch (several for the fused ones), and K.
DECODE_MATVECS = {
    "omni.router": ((128,), 2048), "omni.qkv": ((4096, 512, 512), 2048), "omni.o_proj": ((2048,), 4096),
    "0.6b.qkv": ((2048, 1024, 1024), 1024), "0.6b.o_proj": ((1024,), 2048),
    "0.6b.gate_up": ((3072, 3072), 1024), "0.6b.down": ((1024,), 3072),
}


def bench_decode_matvec(name: str, reps: int, rng, flush) -> dict:
    """One decode matvec (matvec_multi for several weights, as the model calls it) at each of
    DECODE_TPRS and at the automatic choice (threads_per_row=None, i.e. linear.matvec_tpr)."""
    rt = runtime()
    rows, k = DECODE_MATVECS[name]
    hosts = [random_weight(rng, n, k, "bf16") for n in rows]
    ws = tuple(rt.upload(h, "bf16") for h, _ in hosts)
    x = rng.standard_normal(k, dtype=np.float32)
    xt = rt.upload(x)
    ys = tuple(rt.empty((n,)) for n in rows)
    ref = np.concatenate([reference("linear.matvec")(x, seen) for _, seen in hosts])
    nbytes = sum(w.nbytes for w in ws)

    def run(tpr):
        if len(ws) == 1:
            return linear.matvec(xt, ws[0], out=ys[0], threads_per_row=tpr)
        return linear.matvec_multi(xt, ws, ys, threads_per_row=tpr)

    seconds, worst = {}, 0.0
    for tpr in (*DECODE_TPRS, None):
        for y in ys:  # poisoned, so a row the kernel skips fails the check
            rt.write(y, np.full(y.shape, np.nan, np.float32))
        run(tpr)
        err = nmse(np.concatenate([y.numpy() for y in ys]), ref)
        assert err < 1e-9, f"decode matvec {name} threads_per_row={tpr}: nmse {err}"
        worst = max(worst, err)
        seconds[str(tpr or "auto")], clock = timed(lambda: run(tpr), reps, flush)
    auto = linear.matvec_tpr(sum(rows), k, "bf16")
    return {"op": "matvec_multi.bf16" if len(ws) > 1 else "matvec.bf16", "case": f"decode.{name}",
            "shape": [list(rows), k], "bytes": nbytes, "auto_threads_per_row": auto,
            "seconds": seconds["auto"], "gb_per_s": nbytes / seconds["auto"] / 1e9,
            "best_threads_per_row": int(min(DECODE_TPRS, key=lambda t: seconds[str(t)])),
            "us_by_threads_per_row": {t: v * 1e6 for t, v in seconds.items()}, "nmse": worst, "clock": clock,
            "cache": "flushed before each run"}


BASELINE = Path(__file__).resolve().parent / "baseline"
_baseline_kernels: dict = {}


def baseline_kernel(shader: str, entry: str, **constants):
    """An entry of bench/baseline/<shader>.wgsl (the decode kernels before issue 16's rework, frozen there
    for this comparison), built once; its profile name is baseline.<shader>.<entry>[constants]."""
    from omni_lab.gpu import Kernel
    from omni_lab.gpu.runtime import shader_source

    key = (shader, entry, tuple(sorted(constants.items())))
    if key not in _baseline_kernels:
        _baseline_kernels[key] = Kernel(runtime(), f"baseline.{shader}.{entry}",
                                        shader_source(BASELINE / f"{shader}.wgsl"), entry, constants)
    return _baseline_kernels[key]


def time_variant(run, reps: int, flush) -> tuple[float, dict, str]:
    """(median seconds of run's dispatches, median us by kernel, clock) over reps flushed runs."""
    profs = profiles(run, reps, flush)
    t = statistics.median(sum(x.seconds for x in p.timings) for p in profs)
    by_kernel = {name: statistics.median(p.by_kernel()[name] for p in profs) * 1e6 for name in profs[0].by_kernel()}
    return t, by_kernel, profs[0].clock


def in_table(fn, **changes):
    """fn run with these tuning-table fields (an op reads the table when called, so each timed run does)."""
    from omni_lab.gpu import tuning

    def run():
        with tuning.override(**changes):
            return fn()
    return run


# Decode attention cases (keys in the cache, max_len): the thinker's usual ~100 keys in short and 2048-row
# caches, the longest cache the single pass takes by default (1000 and 2000 keys), and one past it.
DECODE_ATTENTION = ((100, 104), (100, 2048), (1000, 2048), (2000, 2048), (4000, 4096))
DECODE_WGS = (128, 256, 512)  # attention_decode_wg values swept for the single pass


def bench_decode_attention(n_keys: int, max_len: int, reps: int, rng, flush) -> list[dict]:
    """Decode attention at the thinker's shapes (32 q / 4 kv heads, head dim 128) over n_keys keys in a cache
    of max_len rows: the split pair as it was before issue 16 (bench/baseline/attention.wgsl), the split pair
    now, and the single pass `decode` at each of DECODE_WGS threads, each with and without subgroup
    operations (where the adapter has them)."""
    from omni_lab.gpu import pack_params
    from omni_lab.ops import attention as A

    rt = runtime()
    hq, n_kv, d = 32, 4, 128
    k, v = (rng.standard_normal((max_len, n_kv, d), dtype=np.float32) for _ in range(2))
    q = rng.standard_normal((1, hq, d), dtype=np.float32)
    ck, cv, qt, out = rt.upload(k), rt.upload(v), rt.upload(q), rt.empty(q.shape)
    step = rt.upload(np.array([n_keys - 1, 0, 0, 0], np.uint32))  # the new token's position
    scale = d ** -0.5
    ref = reference("attention.attention")(q, k, v, n_keys - 1, scale)
    nbytes = 2 * n_keys * n_kv * d * 4  # the keys and values read, each once

    split_keys = A.split_size(max_len)
    n_splits = -(-max_len // split_keys)
    part = rt.empty((hq, n_splits, d // 4 + 1, 4))
    params = pack_params(1, hq, n_kv, d // 4, max_len, 0, float(scale), split_keys, n_splits)

    def old_split():
        baseline_kernel("attention", "split_partial", WG=64)((hq, n_splits, 1), params, qt, ck, cv, step, part)
        baseline_kernel("attention", "split_combine", WGC=256)(hq, params, part, out)

    variants = {"old.split": old_split}
    for sg in (True, False) if rt.gpu.has_subgroups else (False,):
        tag = "sg" if sg else "wg"
        variants[f"split.{tag}"] = in_table(lambda: A.attention(qt, ck, cv, step, scale, out=out, split=True), subgroups=sg)
        for wg in DECODE_WGS:
            variants[f"decode.{tag}.{wg}"] = in_table(lambda: A.attention(qt, ck, cv, step, scale, out=out, split=False),
                                                      subgroups=sg, attention_decode_wg=wg)
    results = []
    for name, run in variants.items():
        rt.write(out, np.full(q.shape, np.nan, np.float32))
        run()
        err = nmse(out.numpy(), ref)
        assert err < 1e-9, f"decode attention {name} keys={n_keys} max_len={max_len}: nmse {err}"
        t, by_kernel, clock = time_variant(run, reps, flush)
        results.append({"op": "attention", "case": "decode", "variant": name,
                        "shape": {"q_heads": hq, "kv_heads": n_kv, "head_dim": d, "keys": n_keys, "max_len": max_len},
                        "split_keys": split_keys if "split" in name else None, "bytes": nbytes, "seconds": t,
                        "gb_per_s": nbytes / t / 1e9, "dispatches": 2 if "split" in name else 1, "us_by_kernel": by_kernel,
                        "nmse": err, "clock": clock, "cache": "flushed before each run"})
    return results


def bench_decode_norm_rope(reps: int, rng, flush, start: int = 99, max_len: int = 2048) -> list[dict]:
    """The thinker's QK RMSNorm + interleaved MRoPE + cache append of one token (32 q / 4 kv heads, head dim
    128, sections [24, 20, 20]): rope.norm_rope_append as it was (bench/baseline/rope.wgsl) and now, with
    and without subgroup operations."""
    import struct

    from omni_lab.gpu import pack_params
    from omni_lab.ops import rope
    from omni_lab.ops.norm import rmsnorm_ref

    rt = runtime()
    hq, hk, d, sections, eps = 32, 4, 128, (24, 20, 20), 1e-6
    q, k, v = (rng.standard_normal((1, h, d), dtype=np.float32) * 3 for h in (hq, hk, hk))
    wq, wk = (rng.standard_normal(d, dtype=np.float32) for _ in range(2))
    pos = np.full((3, 1), start, np.int32)
    inv = rope.rope_inv_freq(d, 1e6)
    qt, kt, vt = rt.upload(q), rt.upload(k), rt.upload(v)
    wqt, wkt, post, invt = rt.upload(wq), rt.upload(wk), rt.upload(pos), rt.upload(inv)
    ck, cv = rt.upload(np.zeros((max_len, hk, d), np.float32)), rt.upload(np.zeros((max_len, hk, d), np.float32))
    step = rt.upload(np.array([start, 0, 0, 0], np.uint32))
    def normed_rotated(x, w):
        return reference("rope.mrope")(rmsnorm_ref(x.reshape(-1, d), w, eps).reshape(x.shape), pos, inv, sections)

    ref_q, ref_k = normed_rotated(q, wq), normed_rotated(k, wk)
    eps_bits = struct.unpack("<I", struct.pack("<f", eps))[0]
    params = pack_params(1, hq, d // 2, 1, sections[1], sections[2], 0, 0, 0, hk, eps_bits, max_len)

    def old():
        baseline_kernel("rope", "norm_rope_append", WG=rope.WG)(hq + 2 * hk, params, qt, post, invt, kt, wqt, wkt, vt,
                                                               ck, cv, step)

    def new():
        rope.qk_norm_rope(qt, kt, wqt, wkt, eps, post, invt, sections, append=(vt, ck, cv, step))

    variants = {"old": old}
    for sg in (True, False) if rt.gpu.has_subgroups else (False,):
        variants["new.sg" if sg else "new.wg"] = in_table(new, subgroups=sg)
    results = []
    for name, run in variants.items():
        rt.write(qt, q)  # q is rotated in place: fresh for the check
        run()
        err = max(nmse(qt.numpy(), ref_q), nmse(ck.numpy()[start:start + 1], ref_k), nmse(cv.numpy()[start:start + 1], v))
        assert err < 1e-12, f"norm_rope_append {name}: nmse {err}"
        t, by_kernel, clock = time_variant(run, reps, flush)
        results.append({"op": "rope.norm_rope_append", "case": "decode", "variant": name,
                        "shape": {"q_heads": hq, "kv_heads": hk, "head_dim": d, "mrope_section": list(sections)},
                        "seconds": t, "us_by_kernel": by_kernel, "nmse": err, "clock": clock, "cache": "flushed before each run"})
    return results


# Decode attention with its token's QK norm, rotation and append inside (keys in the cache, max_len): the
# thinker's ~100 keys in a short cache and in the longest the single pass takes on an H200.
DECODE_NORM_ROPE = ((100, 104), (100, 512))


def bench_decode_attention_norm_rope(n_keys: int, max_len: int, reps: int, rng, flush) -> list[dict]:
    """One decode token's QK RMSNorm + interleaved MRoPE + cache append + attention at the thinker's shapes
    (32 q / 4 kv heads, head dim 128, sections [24, 20, 20]), over n_keys keys: rope.norm_rope_append then
    attention's `decode` (two dispatches; with quantize_act for a Q8_0 o_proj, three) against
    attention_rope's `decode` (one; `decode_q8` with o_proj's int8 input), with and without subgroups."""
    from omni_lab.ops import attention as A
    from omni_lab.ops import q8_0, rope

    rt = runtime()
    hq, n_kv, d, sections, eps, scale = 32, 4, 128, (24, 20, 20), 1e-6, 128 ** -0.5
    start = n_keys - 1  # the new token's position
    q, k, v = (rng.standard_normal((1, h, d), dtype=np.float32) * 3 for h in (hq, n_kv, n_kv))
    wq, wk = (rng.standard_normal(d, dtype=np.float32) for _ in range(2))
    pos = np.full((3, 1), start, np.int32)
    inv = rope.rope_inv_freq(d, 1e6)
    cache = [rng.standard_normal((max_len, n_kv, d), dtype=np.float32) for _ in range(2)]
    ref = reference("attention.attention_norm_rope")(q, k, v, wq, wk, eps, pos, inv, sections, *(c.copy() for c in cache),
                                                      start, scale)
    qt, kt, vt, wqt, wkt, post, invt, ck, cv = (rt.upload(a) for a in (q, k, v, wq, wk, pos, inv, *cache))
    step = rt.upload(np.array([start, 0, 0, 0], np.uint32))
    out, xq, xd = rt.empty(q.shape), rt.empty((hq * d // 4,), "u32"), rt.empty((hq * d // 32,))

    def separate(quantize):
        rope.qk_norm_rope(qt, kt, wqt, wkt, eps, post, invt, sections, append=(vt, ck, cv, step))
        A.attention(qt, ck, cv, step, scale, out=out, split=False)
        if quantize:
            q8_0.quantize_activations(out.view((1, hq * d)), out=(xq.view((1, hq * d // 4)), xd.view((1, hq * d // 32))))

    def fused(quantize):
        A.attention_norm_rope(qt, kt, vt, wqt, wkt, eps, post, invt, sections, ck, cv, step, scale, out=out,
                              quantized=(xq, xd) if quantize else None)

    variants = {}
    for sg in (True, False) if rt.gpu.has_subgroups else (False,):
        tag = "sg" if sg else "wg"
        for name, fn in (("separate", separate), ("fused", fused)):
            for quantize in (False, True):
                # The fused entry runs only with the table's attention_norm_rope on (off in every table now).
                variants[f"{name}{'_q8' if quantize else ''}.{tag}"] = in_table(lambda fn=fn, quantize=quantize: fn(quantize),
                                                                               subgroups=sg, attention_norm_rope=True)
    results = []
    for name, run in variants.items():
        rt.write(qt, q)  # norm_rope_append rotates q in place: fresh for the check
        run()
        err = nmse(out.numpy(), ref)
        assert err < 1e-9, f"decode attention + norm_rope {name} keys={n_keys}: nmse {err}"
        t, by_kernel, clock = time_variant(run, reps, flush)
        results.append({"op": "attention.norm_rope", "case": "decode", "variant": name,
                        "shape": {"q_heads": hq, "kv_heads": n_kv, "head_dim": d, "keys": n_keys, "max_len": max_len,
                                  "mrope_section": list(sections)},
                        "dispatches": {"separate": 2, "separate_q8": 3}.get(name.split(".")[0], 1),
                        "seconds": t, "us_by_kernel": by_kernel, "nmse": err, "clock": clock,
                        "cache": "flushed before each run"})
    return results


def bench_decode_route(reps: int, rng, flush, e: int = 128, k: int = 8) -> list[dict]:
    """The thinker's router top-k of one token (softmax and top-8 of 128 logits, renormalised): moe.route as
    it was (bench/baseline/moe_route.wgsl) and now, with and without subgroup operations."""
    from omni_lab.gpu import pack_params
    from omni_lab.ops import moe

    rt = runtime()
    logits = rng.standard_normal((1, e), dtype=np.float32) * 2
    lt, ow, oe = rt.upload(logits), rt.empty((1, k)), rt.empty((1, k), "i32")
    ref_w, ref_e = reference("moe.route")(logits, k, True)
    wg = min(moe.ROUTE_WG_MAX, max(moe.WG, e))

    def old():
        baseline_kernel("moe_route", "route", WG=wg, E_MAX=max(wg, e), K_MAX=k)(1, pack_params(1, e, k, 1), lt, ow, oe)

    variants = {"old": old}
    for sg in (True, False) if rt.gpu.has_subgroups else (False,):
        variants["new.sg" if sg else "new.wg"] = in_table(lambda: moe.route(lt, k, True, out_weights=ow, out_experts=oe),
                                                          subgroups=sg)
    results = []
    for name, run in variants.items():
        rt.write(oe, np.full((1, k), -1, np.int32))
        run()
        assert np.array_equal(oe.numpy(), ref_e), f"route {name}: experts differ"
        err = nmse(ow.numpy(), ref_w)
        assert err < 1e-9, f"route {name}: nmse {err}"
        t, by_kernel, clock = time_variant(run, reps, flush)
        results.append({"op": "moe.route", "case": "decode", "variant": name, "shape": {"experts": e, "top_k": k},
                        "seconds": t, "us_by_kernel": by_kernel, "nmse": err, "clock": clock, "cache": "flushed before each run"})
    return results


def bench_decode_latency(reps: int, rng, flush) -> list[dict]:
    """The latency-bound decode kernels of issue 16, old (bench/baseline/) against new, at the thinker's shapes."""
    results = []
    for n_keys, max_len in DECODE_ATTENTION:
        results += bench_decode_attention(n_keys, max_len, reps, rng, flush)
    for n_keys, max_len in DECODE_NORM_ROPE:
        results += bench_decode_attention_norm_rope(n_keys, max_len, reps, rng, flush)
    return results + bench_decode_norm_rope(reps, rng, flush) + bench_decode_route(reps, rng, flush)


def latency_summary(results: list[dict]) -> dict:
    """{"<op> <shape> <variant>": microseconds a call} of bench_decode_latency's results, to read at a glance."""
    out = {}
    for r in results:
        shape = f" keys={r['shape']['keys']} max_len={r['shape']['max_len']}" if "keys" in r["shape"] else ""
        out[f"{r['op']}{shape} {r['variant']}"] = round(r["seconds"] * 1e6, 2)
    return out


def bench_decode(reps: int, rng, flush_mb: int) -> list[dict]:
    flush = cache_flush(flush_mb)
    results = [bench_decode_matvec(name, reps, rng, flush) for name in DECODE_MATVECS]
    return results + bench_decode_latency(reps, rng, flush)


# The thinker's MoE layer: 128 experts, top-8, hidden 2048, expert FFN 768.
MOE_SHAPE = dict(e=128, k=8, d=2048, f=768)
MOE_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 512)


def moe_stack(rng, e: int, n: int, kdim: int, dtype: str):
    """A random expert stack [E, N, K] as uploaded (bf16 or Q8_0) and a function giving the float32
    values the kernels read for a list of experts (the reference never widens the whole stack)."""
    from omni_lab.formats.q8_0 import join_q8_0, upload_q8_0
    from omni_lab.gpu import bf16_to_f32

    rt = runtime()
    if dtype == "q8_0":
        wq = rng.integers(-127, 128, (e, n, kdim), dtype=np.int8)
        wd = np.full((e, n, kdim // 32), kdim ** -0.5 / 73, np.float16)
        w = upload_q8_0(join_q8_0(wq.reshape(e * n, kdim), wd.reshape(e * n, -1)), (e, n, kdim))
        dequantize = reference("q8_0.dequantize")
        return w, lambda ids: np.stack([dequantize(wq[i], wd[i]) for i in ids])
    bits, _ = linear.stored(rng.standard_normal((e, n, kdim), dtype=np.float32) * np.float32(kdim ** -0.5), "bf16")
    return rt.upload(bits, "bf16"), lambda ids: bf16_to_f32(bits[ids])


def bench_moe(dtype: str, reps: int, rng, tokens=MOE_TOKENS, shape=MOE_SHAPE) -> list[dict]:
    """One MoE layer's experts (gate_up with SwiGLU, down with the weighted sum) at T tokens, per pair (the
    decode kernels) and grouped by expert (group + tiles + combine), with random top-k routing. Bytes are
    the weights of the experts the tokens use, read once: the floor either path could reach."""
    from omni_lab.formats.q8_0 import BLOCK_BYTES, QK
    from omni_lab.ops import moe

    rt = runtime()
    e, k, d, f = shape["e"], shape["k"], shape["d"], shape["f"]
    gate_up, gate_up_seen = moe_stack(rng, e, 2 * f, d, dtype)
    down, down_seen = moe_stack(rng, e, d, f, dtype)
    per_weight = BLOCK_BYTES / QK if dtype == "q8_0" else 2
    results = []
    for t in tokens:
        experts = np.stack([rng.choice(e, k, replace=False) for _ in range(t)]).astype(np.int32)
        x = rng.standard_normal((t, d), dtype=np.float32)
        rw = rng.random((t, k), dtype=np.float32)
        xt, ex, wt = rt.upload(x), rt.upload(experts), rt.upload(rw)
        act, out = rt.empty((t, k, f)), rt.empty((t, d))
        # The reference on the first two tokens keeps the host work small.
        first = experts[:2]
        ids, local = np.unique(first, return_inverse=True)
        local = local.reshape(first.shape).astype(np.int32)
        a_ref = reference("moe.experts_gate_up")(x[:2], gate_up_seen(ids), local)
        y_ref = reference("moe.experts_down")(a_ref, down_seen(ids), local, rw[:2])

        def run(grouped: bool):
            groups = moe.group_pairs(ex, e) if grouped else None
            moe.experts_gate_up(xt, gate_up, ex, out=act, groups=groups)
            moe.experts_down(act, down, ex, wt, out=out, groups=groups)
            if groups:
                groups.release()

        used = len(np.unique(experts))
        nbytes = int(used * 3 * f * d * per_weight)
        flops = 2 * t * k * 3 * f * d
        # Q8_0 grouped runs on both prefill paths (the tuning table's q8_prefill_path), in the same run.
        variants = [(False, None), (True, "dot4"), (True, "f32")] if dtype == "q8_0" else [(False, None), (True, None)]
        for grouped, prefill in variants:
            with tuning.override(**({"q8_prefill_path": prefill} if prefill else {})):
                rt.write(out, np.full(out.shape, np.nan, np.float32))
                run(grouped)
                err = nmse(out.numpy()[:2], y_ref)
                # Per pair, and grouped on dot4, Q8_0 rounds the activations to int8 (decode's rule); grouped on
                # f32 keeps them in f32.
                int8 = dtype == "q8_0" and prefill != "f32"
                assert err < (1e-3 if int8 else 1e-9), f"moe {dtype} T={t} grouped={grouped} {prefill}: nmse {err}"
                profs = profiles(lambda: run(grouped), reps)
            secs = statistics.median(sum(x.seconds for x in p.timings) for p in profs)
            by_kernel = {n: statistics.median(p.by_kernel()[n] for p in profs) * 1e6 for n in profs[0].by_kernel()}
            results.append({"op": f"moe.experts.{dtype}", "path": "grouped" if grouped else "pairs",
                            **({"q8_prefill_path": prefill} if prefill else {}), "tokens": t,
                            "shape": shape, "experts_used": used, "bytes": nbytes, "flops": flops, "seconds": secs,
                            "gb_per_s": nbytes / secs / 1e9, "gflop_per_s": flops / secs / 1e9,
                            "us_by_kernel": by_kernel, "nmse_first_tokens": err, "clock": profs[0].clock})
    return results + bench_moe_decode(dtype, reps, rng, (gate_up, gate_up_seen, down, down_seen), shape)


def bench_moe_decode(dtype: str, reps: int, rng, stacks, shape) -> list[dict]:
    """One decode token through a MoE layer from its router logits: route, then the per-pair experts (Q8_0:
    a quantize_act of act between gate_up and down), against the routed gate_up that routes in its own
    workgroups (and, Q8_0, writes down's int8 input), then down; with and without subgroups. Q8_0 x comes
    quantized, as the norm before the router makes it."""
    from omni_lab.ops import moe
    from omni_lab.ops.moe import q8_seen
    from omni_lab.ops.q8_0 import quantize_activations

    rt = runtime()
    gate_up, gate_up_seen, down, down_seen = stacks
    e, k, d, f = shape["e"], shape["k"], shape["d"], shape["f"]
    logits, x = rng.standard_normal((1, e), dtype=np.float32) * 2, rng.standard_normal((1, d), dtype=np.float32)
    lt, xt = rt.upload(logits), rt.upload(x)
    xq = quantize_activations(xt) if dtype == "q8_0" else None
    ow, oe, act, out = rt.empty((1, k)), rt.empty((1, k), "i32"), rt.empty((1, k, f)), rt.empty((1, d))
    blocks = (rt.empty((k, f // 4), "u32"), rt.empty((k, f // 32))) if dtype == "q8_0" else None
    ref_w, ref_e = reference("moe.route")(logits, k, True)
    seen_x = q8_seen(x) if dtype == "q8_0" else x
    a_ref = reference("moe.experts_gate_up")(seen_x, gate_up_seen(ref_e[0]), np.arange(k, dtype=np.int32)[None])
    if dtype == "q8_0":
        a_ref = q8_seen(a_ref)
    y_ref = reference("moe.experts_down")(a_ref, down_seen(ref_e[0]), np.arange(k, dtype=np.int32)[None], ref_w)

    def separate():
        w, ex = moe.route(lt, k, True, out_weights=ow, out_experts=oe)
        moe.experts_down(moe.experts_gate_up(xt, gate_up, ex, out=act, quantized=xq), down, ex, w, out=out)

    def routed():
        a, w, ex = moe.experts_gate_up_routed(xt, gate_up, lt, k, True, out_weights=ow, out_experts=oe,
                                              out=blocks or act, quantized=xq)
        moe.experts_down(a, down, ex, w, out=out)

    results = []
    for sg in (True, False) if rt.gpu.has_subgroups else (False,):
        for name, fn in (("route+pairs", separate), ("routed", routed)):
            run = in_table(fn, subgroups=sg)
            rt.write(out, np.full(out.shape, np.nan, np.float32))
            run()
            assert np.array_equal(oe.numpy(), ref_e), f"moe decode {dtype} {name}: experts differ"
            err = nmse(out.numpy(), y_ref)
            assert err < (1e-4 if dtype == "q8_0" else 1e-9), f"moe decode {dtype} {name}: nmse {err}"
            profs = profiles(run, reps)
            secs = statistics.median(sum(x.seconds for x in p.timings) for p in profs)
            by_kernel = {n: statistics.median(p.by_kernel()[n] for p in profs) * 1e6 for n in profs[0].by_kernel()}
            results.append({"op": f"moe.decode.{dtype}", "path": name, "subgroups": sg, "tokens": 1, "shape": shape,
                            "dispatches": len(profs[0].timings), "seconds": secs, "us_by_kernel": by_kernel,
                            "nmse": err, "clock": profs[0].clock})
    return results


def bench_attention(reps: int, rng, quick: bool) -> list[dict]:
    """Causal prefill attention at the thinker's heads (32 q / 4 kv, D 128) and the vision encoder's
    bidirectional attention over one image's patches (16 heads, D 72), each through attention.wgsl's
    workgroup per (token, head) and flash.wgsl's blocks; FLOPs count QK^T and PV over the kept keys."""
    from omni_lab.ops import attention as A

    rt = runtime()
    out = []
    cases = [("causal", 512 if not quick else 64, 4, 8, 128), ("segments", 3072 if not quick else 96, 16, 1, 72)]
    for kind, t, n_kv, group, d in cases:
        q = rng.standard_normal((t, n_kv * group, d), dtype=np.float32)
        k = rng.standard_normal((t, n_kv, d), dtype=np.float32)
        v = rng.standard_normal((t, n_kv, d), dtype=np.float32)
        ck, cv = A.kv_cache(t, n_kv, d)
        step = A.start_step(0)
        A.kv_append(rt.upload(k), rt.upload(v), ck, cv, step)
        qt, o = rt.upload(q), rt.empty(q.shape)
        if kind == "causal":
            ref = A.attention_ref(q, k, v, 0, d ** -0.5)
            run = lambda flash: A.attention(qt, ck, cv, step, d ** -0.5, out=o, flash=flash)  # noqa: E731
            keys = t * (t + 1) / 2
        else:
            bounds = rt.upload(A.segment_bounds([0, t], t))
            ref = A.attention_segments_ref(q, k, v, [0, t], d ** -0.5)
            run = lambda flash: A.attention_segments(qt, ck, cv, step, bounds, d ** -0.5, out=o, flash=flash)  # noqa: E731
            keys = t * t
        flops = 4 * keys * n_kv * group * d
        for flash in (False, True):
            err = nmse(run(flash).numpy(), ref)
            secs, clock = timed(lambda: run(flash), reps)
            out.append({"op": f"attention.{kind}", "kernel": "flash" if flash else "per (token, head)", "tokens": t,
                        "heads": [n_kv * group, n_kv], "head_dim": d, "seconds": secs,
                        "gflop_per_s": flops / secs / 1e9, "nmse": err, "clock": clock})
    return out


# [M, N, K] of the thinker's prefill of 512 tokens: q_proj, o_proj, and the square case of earlier reports.
MATMUL_SHAPES = [(512, 4096, 2048), (512, 2048, 4096), (512, 4096, 4096)]


def bench_matmul(m: int, n: int, k: int, dtype: str, reps: int, rng) -> dict:
    rt = runtime()
    host, seen = random_weight(rng, n, k, dtype)
    w = rt.upload(host, dtype)
    x = rng.standard_normal((m, k), dtype=np.float32)
    xt, y = rt.upload(x), rt.empty((m, n))
    err = nmse(linear.matmul(xt, w, out=y).numpy(), reference("linear.matmul")(x, seen))
    t, clock = timed(lambda: linear.matmul(xt, w, out=y), reps)
    return {"op": f"matmul.{dtype}", "shape": [m, n, k], "flops": 2 * m * n * k, "seconds": t,
            "gflop_per_s": 2 * m * n * k / t / 1e9, "nmse": err, "clock": clock}


def bench_q8_matmul(m: int, n: int, k: int, path: str, reps: int, rng) -> dict:
    """The Q8_0 prefill matmul (q8_matmul) on prefill path `path`: 'dot4' (quantize_act, then tiles_dot4:
    both dispatches timed, us_by_kernel splits them) or 'f32' (tiles_q8). Checked on its first 64 rows."""
    from omni_lab.ops import q8_0 as q8

    w, wq, wd = q8.random_q8_weights(rng, n, k)
    x = rng.standard_normal((m, k), dtype=np.float32)
    xt, y = runtime().upload(x), runtime().empty((m, n))
    rows = slice(0, min(m, 64))  # the reference on a slice of rows keeps the host work small
    with tuning.override(q8_prefill_path=path):
        err = nmse(q8.q8_matmul(xt, w, out=y).numpy()[rows], reference("q8_0.q8_matmul")(x[rows], wq, wd, path))
        assert err < 1e-9, f"q8_matmul {path} {m}x{n}x{k}: nmse {err}"
        profs = profiles(lambda: q8.q8_matmul(xt, w, out=y), reps)
    t = statistics.median(sum(x.seconds for x in p.timings) for p in profs)
    by_kernel = {name: statistics.median(p.by_kernel()[name] for p in profs) * 1e6 for name in profs[0].by_kernel()}
    return {"op": "matmul.q8_0", "q8_prefill_path": path, "shape": [m, n, k], "flops": 2 * m * n * k, "seconds": t,
            "gflop_per_s": 2 * m * n * k / t / 1e9, "us_by_kernel": by_kernel, "nmse_first_rows": err,
            "clock": profs[0].clock}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights-mb", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a software adapter")
    ap.add_argument("--tpr", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256],
                    help="matvec threads-per-row values to sweep")
    ap.add_argument("--decode", action="store_true",
                    help="only the decode-step cases (small matvecs at several threads per row, decode "
                         "attention); a default run includes them after the weight sweep")
    ap.add_argument("--latency", action="store_true",
                    help="only the latency-bound decode kernels (attention, QK-norm + RoPE + append, MoE route) at the "
                         "thinker's shapes, as before issue 16 (bench/baseline/) and now, with and without subgroups")
    ap.add_argument("--moe", action="store_true",
                    help="only one MoE layer's experts at the thinker's shapes, per pair and grouped (Q8_0 grouped on "
                         f"both prefill paths), bf16 and Q8_0, at {', '.join(map(str, MOE_TOKENS))} tokens")
    ap.add_argument("--matmul", action="store_true",
                    help="only the prefill matmul (lib/tile_gather.wgsl) at the thinker's prefill shapes: bf16 and f32 "
                         "weights, and Q8_0 on both prefill paths (dot4, f32)")
    ap.add_argument("--attention", action="store_true",
                    help="only multi-token attention, per (token, head) and flash: the thinker's prefill of 512 "
                         "tokens and the vision encoder's 3072 patches of one image")
    ap.add_argument("--flush-mb", type=int, default=256,
                    help="MB copied before each timed run of a decode-step case, to evict its inputs from the cache")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.weights_mb, args.reps, args.tpr, args.flush_mb = [32], 3, [32], 8
    rng = np.random.default_rng(0)
    rt = runtime()
    t0 = time.time()
    if args.moe:
        shape = dict(e=8, k=2, d=256, f=96) if args.quick else MOE_SHAPE
        tokens = (1, 4, 32) if args.quick else MOE_TOKENS
        emit({"bench": "kernels.moe", "adapter": rt.gpu.describe()["adapter"], "backend": rt.gpu.info.get("backend_type"),
              "host": platform.node(), "copy_gb_per_s": bench_copy(min(256, rt.gpu.max_binding // 2**20), args.reps)["gb_per_s"],
              "results": [r for dtype in ("bf16", "q8_0") for r in bench_moe(dtype, args.reps, rng, tokens, shape)],
              "wall_seconds": time.time() - t0}, args.out)
        return
    if args.attention:
        emit({"bench": "kernels.attention", "adapter": rt.gpu.describe()["adapter"],
              "backend": rt.gpu.info.get("backend_type"), "host": platform.node(),
              "results": bench_attention(args.reps, rng, args.quick), "wall_seconds": time.time() - t0}, args.out)
        return
    if args.matmul:
        shapes = [(128, 1024, 1024)] if args.quick else MATMUL_SHAPES
        emit({"bench": "kernels.matmul", "adapter": rt.gpu.describe()["adapter"],
              "backend": rt.gpu.info.get("backend_type"), "host": platform.node(),
              "results": [r for mm in shapes
                          for r in [bench_matmul(*mm, dtype, args.reps, rng) for dtype in ("bf16", "f32")]
                          + [bench_q8_matmul(*mm, path, args.reps, rng) for path in ("dot4", "f32")]],
              "wall_seconds": time.time() - t0}, args.out)
        return
    if args.decode or args.latency:
        results = (bench_decode_latency(args.reps, rng, cache_flush(args.flush_mb)) if args.latency
                   else bench_decode(args.reps, rng, args.flush_mb))
        emit({"bench": "kernels.latency" if args.latency else "kernels.decode", "adapter": rt.gpu.describe()["adapter"],
              "backend": rt.gpu.info.get("backend_type"), "host": platform.node(), "subgroups": rt.gpu.has_subgroups,
              "us_per_call": latency_summary([r for r in results if "variant" in r]),
              "results": results, "wall_seconds": time.time() - t0}, args.out)
        return
    copy = bench_copy(max(args.weights_mb), args.reps)
    cuda_copy = torch_copy_gb_per_s(max(args.weights_mb), args.reps)
    # The fraction is taken against the better of our copy kernel and CUDA's, the stricter yardstick.
    ceiling = max(copy["gb_per_s"], cuda_copy or 0.0)
    results = [copy]
    for mb in args.weights_mb:
        for dtype in ("bf16", "f16", "f32"):
            r = bench_matvec(mb, dtype, args.reps, rng, args.tpr)
            r["fraction_of_copy_bw"] = r["gb_per_s"] / ceiling
            results.append(r)
    for mb in args.weights_mb:
        for r in bench_q8_matvec(mb, args.reps, rng):
            r["fraction_of_copy_bw"] = r["gb_per_s"] / ceiling
            results.append(r)
    mm = (128, 1024, 1024) if args.quick else (512, 4096, 4096)
    for dtype in ("bf16", "f32"):
        results.append(bench_matmul(*mm, dtype, args.reps, rng))
    results += bench_decode(args.reps, rng, args.flush_mb)
    report = {"bench": "kernels", "adapter": rt.gpu.describe()["adapter"], "backend": rt.gpu.info.get("backend_type"),
              "host": platform.node(), "copy_gb_per_s": copy["gb_per_s"], "cuda_copy_gb_per_s": cuda_copy,
              "ceiling_gb_per_s": ceiling, "results": results,
              "wall_seconds": time.time() - t0}
    emit(report, args.out)


if __name__ == "__main__":
    main()
