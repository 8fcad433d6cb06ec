"""Grouped-query causal attention over a GPU KV cache, and the cache itself.

One layer's cache is a pair of f32 tensors [max_len, n_kv, D]. The position of the first new token is not
a kernel parameter: it is element 0 of `step`, a u32 [4] GPU tensor (start, reserved...) that the model
writes once per step (`rt.write(step, np.array([start, 0, 0, 0], np.uint32))`), so every dispatch of a
decode step has the same params and bind groups as the step before.

Masking is HF's (transformers/masking_utils.py): `causal_mask_function` keeps kv_idx <= q_idx, and
`sliding_window_overlay(W)` keeps kv_idx > q_idx - W, so a window of W keeps the W keys
q_idx - W + 1 .. q_idx, the query's own key included.
"""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime, tuning
from ._check import dtype_in, expect
from .rope import check_qk_norm_rope
from .registry import SENTINEL, padded_output, rand, require, sweep

def split_size(max_len: int) -> int:
    """Keys per slice of the split-K decode path, from the cache length (fixed per model, so a recorded
    decode step stays valid) by the tuning table's attention_split_steps. A slice is a serial chain in one
    workgroup: long caches want long slices, but with few keys long slices leave a handful of workgroups
    each running a long chain (~77 us at 128 keys a slice, Qwen3-0.6B shapes, 136 keys, on an H200)."""
    table = tuning.current()
    return next((keys for up_to, keys in table.attention_split_steps if max_len <= up_to), table.attention_split_long)


# Split-K partial results, one buffer per (rows, n_splits, D): reused by every layer and every step, so
# the bind groups of a decode step are the same each step. Dispatches run in order, so sharing is safe.
_partials: dict[tuple[int, int, int], Tensor] = {}


def kv_cache(max_len: int, n_kv: int, head_dim: int, label: str = "kv") -> tuple[Tensor, Tensor]:
    """A new (k, v) pair of f32 tensors [max_len, n_kv, head_dim] for one layer."""
    rt = runtime()
    shape = (max_len, n_kv, head_dim)
    return rt.empty(shape, "f32", label=f"{label}.k"), rt.empty(shape, "f32", label=f"{label}.v")


def _check_cache(kernel: str, cache_k: Tensor, cache_v: Tensor, step: Tensor) -> tuple[int, int, int]:
    dtype_in(kernel, "cache_k", cache_k, ("f32",))
    dtype_in(kernel, "cache_v", cache_v, ("f32",))
    dtype_in(kernel, "step", step, ("u32",))
    expect(kernel, len(cache_k.shape) == 3 and cache_v.shape == cache_k.shape,
           "cache_k and cache_v must both be [max_len, n_kv, D]", cache_k=cache_k, cache_v=cache_v)
    max_len, n_kv, d = cache_k.shape
    wg = tuning.current().attention_wg
    expect(kernel, d % 4 == 0 and 0 < d <= 4 * wg, f"head dim D must be a multiple of 4 in 4 .. {4 * wg}",
           cache_k=cache_k)
    expect(kernel, step.shape == (4,), "step must be [4] u32 (start, reserved...)", step=step)
    limit = runtime().gpu.max_binding
    expect(kernel, cache_k.nbytes <= limit,
           f"a cache of {cache_k.nbytes} B exceeds the adapter's {limit} B storage binding; use a smaller max_len",
           cache_k=cache_k)
    return max_len, n_kv, d


def check_append(kernel: str, k_new: Tensor, v_new: Tensor, cache_k: Tensor, cache_v: Tensor, step: Tensor) -> int:
    """Checks a cache append of k_new, v_new [T, n_kv, D] (kv_append's, or a kernel that fuses it);
    returns max_len."""
    max_len, n_kv, d = _check_cache(kernel, cache_k, cache_v, step)
    dtype_in(kernel, "k_new", k_new, ("f32",))
    dtype_in(kernel, "v_new", v_new, ("f32",))
    expect(kernel, len(k_new.shape) == 3 and k_new.shape[1:] == (n_kv, d) and v_new.shape == k_new.shape,
           f"k_new and v_new must both be [T, {n_kv}, {d}]", k_new=k_new, v_new=v_new, cache_k=cache_k)
    expect(kernel, 0 < k_new.shape[0] <= max_len, f"T must be in 1 .. max_len = {max_len}", k_new=k_new, cache_k=cache_k)
    return max_len


def kv_append(k_new: Tensor, v_new: Tensor, cache_k: Tensor, cache_v: Tensor, step: Tensor) -> None:
    """Write k_new, v_new [T, n_kv, D] f32 to cache rows start .. start + T - 1 (start = step[0] on the
    GPU). Rows at or past max_len are dropped, not wrapped."""
    max_len = check_append("kv_append", k_new, v_new, cache_k, cache_v, step)
    t, n_kv, d = k_new.shape
    row4 = n_kv * d // 4
    wg = tuning.current().attention_wg
    kern = runtime().kernel("attention", "kv_append", WG=wg)
    kern(-(-(t * row4) // wg), pack_params(t, row4, max_len), k_new, v_new, cache_k, cache_v, step)


FLASH_BLOCK, FLASH_MAX_D = 32, 128  # shaders/flash.wgsl: tokens a workgroup, the head dims its slots hold


def use_flash(flash: bool | None, t: int, d: int, kernel: str, **named) -> bool:
    """Whether a multi-token attention runs shaders/flash.wgsl (blocks of FLASH_BLOCK tokens sharing their
    key loads) rather than attention.wgsl's workgroup per (token, head). None: from the tuning table's
    attention_flash_min_tokens, where D fits its slots."""
    if flash is None:
        return d <= FLASH_MAX_D and t >= tuning.current().attention_flash_min_tokens
    expect(kernel, not flash or d <= FLASH_MAX_D, f"the flash kernel holds head dims up to {FLASH_MAX_D}", **named)
    return flash


def _flash(entry: str, params: bytes, t: int, hq: int, d: int, *tensors: Tensor) -> None:
    rt = runtime()
    keys = tuning.current().attention_flash_keys
    words = keys * FLASH_MAX_D // 4 * 8 + keys * 4 * FLASH_BLOCK  # f32 words of its workgroup memory
    if 4 * words > rt.gpu.limits.get("max-compute-workgroup-storage-size", 16384):
        keys = 8  # 12 KB: within WebGPU's 16 KB minimum
    rt.kernel("flash", entry, HD4=d // 4, BK=keys)(-(-t // FLASH_BLOCK) * hq, params, *tensors)


def decode_split(max_len: int) -> bool:
    """Whether decode (T = 1) over a cache of max_len rows takes the split-K path (two dispatches) rather
    than the single pass (`decode`, one): past the tuning table's attention_single_max_len, and only where
    the cache is longer than one slice. Fixed per cache, so a recorded decode step stays valid."""
    table = tuning.current()
    return max_len > table.attention_single_max_len and max_len > split_size(max_len)


def attention(q: Tensor, cache_k: Tensor, cache_v: Tensor, step: Tensor, scale: float, window: int = 0,
              out: Tensor | None = None, split: bool | None = None, flash: bool | None = None) -> Tensor:
    """Causal GQA: q [T, Hq, D] f32 for the tokens at positions start .. start + T - 1 (start = step[0]),
    keys and values from cache rows 0 .. start + t (only the last `window` of them when window > 0).
    Query head h reads kv head h // (Hq // n_kv). Returns out [T, Hq, D] f32.

    split: slice the keys into ceil(max_len / split_size(max_len)) pieces attended in parallel and merged by a second
    dispatch (flash-decoding). None picks it for decode (T = 1) over caches past the single pass's reach
    (decode_split). Without it one workgroup attends a row: `decode` for one token (wider, with a shorter
    chain); several tokens take the blocked kernel (use_flash; flash None: from the tuning table) or `main`."""
    max_len, n_kv, d = _check_cache("attention", cache_k, cache_v, step)
    dtype_in("attention", "q", q, ("f32",))
    expect("attention", len(q.shape) == 3 and q.shape[2] == d and q.shape[0] > 0,
           f"q must be [T, Hq, {d}]", q=q, cache_k=cache_k)
    t, hq, _ = q.shape
    expect("attention", hq > 0 and hq % n_kv == 0, f"Hq must be a multiple of n_kv = {n_kv}", q=q, cache_k=cache_k)
    expect("attention", t <= max_len, f"T must be at most max_len = {max_len}", q=q, cache_k=cache_k)
    window = int(window)
    expect("attention", window >= 0, f"window must be >= 0 (0: none), got {window}")
    rt = runtime()
    if out is None:
        out = rt.empty(q.shape, "f32", label="attention")
    expect("attention", out.shape == q.shape and out.dtype == "f32", f"out must be {q.shape} f32", out=out)
    split_keys = split_size(max_len)
    n_splits = -(-max_len // split_keys)
    if split is None:
        # One workgroup per (token, head) leaves most of a GPU idle at decode over a long cache; slicing the
        # keys fills it (H200 through Vulkan, 32 q / 4 kv heads, D 128: 4.8 ms -> 0.25 ms at 4k keys, 33 ->
        # 0.29 ms at 32k, with `main`). Short caches take the one-dispatch `decode`.
        split = t == 1 and decode_split(max_len)
    params = pack_params(t, hq, n_kv, d // 4, max_len, window, float(scale), split_keys, n_splits)
    table = tuning.current()
    shader = rt.subgroup_variant("attention")  # its decode entries (lib/attn_decode.wgsl)
    if not split:
        if t == 1 and d // 4 <= table.attention_decode_wg:
            rt.kernel(shader, "decode", WG=table.attention_decode_wg, D4=d // 4)(hq, params, q, cache_k, cache_v, step, out)
        elif use_flash(flash, t, d, "attention", q=q):
            _flash("causal", params, t, hq, d, q, cache_k, cache_v, step, out)
        else:
            rt.kernel("attention", "main", WG=table.attention_wg)(t * hq, params, q, cache_k, cache_v, step, out)
        return out
    rows = t * hq
    expect("attention", max(rows, n_splits) <= rt.gpu.limits["max-compute-workgroups-per-dimension"]
           and rows * n_splits * (d + 4) * 4 <= rt.gpu.max_binding,
           "T * Hq and max_len / split_size(max_len) too large for the split path", q=q, cache_k=cache_k)
    key = (rows, n_splits, d)
    part = _partials.get(key)
    if part is None:
        part = _partials[key] = rt.empty((rows, n_splits, d // 4 + 1, 4), "f32", label="attention.part")
    rt.kernel(shader, "split_partial", WG=table.attention_wg, D4=d // 4)((rows, n_splits, 1), params, q, cache_k, cache_v,
                                                                         step, part)
    rt.kernel(shader, "split_combine", WG=table.attention_combine_wg, D4=d // 4)(rows, params, part, out, step)
    return out


NORM_THREADS = 64  # lib/qk_norm.wgsl's NORM_T: the threads that split a head row's pairs, in any workgroup


def fuses_norm_rope(t: int, cache_k: Tensor) -> bool:
    """Whether a step of t tokens over this cache runs attention_norm_rope (the QK norm, the rotation and the
    cache append inside the attention's one dispatch) rather than rope.qk_norm_rope(append=...) before
    attention(): decode (t = 1) where the single pass `decode` runs (not decode_split) with the workgroup of
    at least NORM_THREADS threads that the norm takes, and the tuning table's attention_norm_rope is on.
    Fixed per cache, so a recorded decode step stays valid."""
    max_len, _, d = cache_k.shape
    table = tuning.current()
    wg = table.attention_decode_wg
    return table.attention_norm_rope and t == 1 and not decode_split(max_len) and NORM_THREADS <= wg and d // 4 <= wg


def attention_norm_rope(q: Tensor, k: Tensor, v: Tensor, q_norm: Tensor, k_norm: Tensor, eps: float, positions: Tensor,
                        inv_freq: Tensor, sections, cache_k: Tensor, cache_v: Tensor, step: Tensor, scale: float,
                        window: int = 0, out: Tensor | None = None,
                        quantized: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Decode attention of one new token at position step[0] from its projections as they come: in one
    dispatch q [1, Hq, D] and k [1, n_kv, D] are normed (q_norm, k_norm [D]) and rotated at positions ([1]
    i32, or [3, 1] with interleaved MRoPE sections) as rope.qk_norm_rope computes them, bit for bit, k and
    v [1, n_kv, D] go to the cache as kv_append puts them, and the token attends as attention() computes
    it (window as there). q, k and v are left as they came. Returns out [1, Hq, D] f32. Only where
    fuses_norm_rope(1, cache_k).

    quantized = (xq [Hq * D / 4] u32, xd [Hq * D / 32] f32): out also as the Q8_0 activations
    ops.q8_0.quantize_activations makes of it, bit for bit (D a multiple of 32), for an int8 o_proj
    (q8_matvec_quantized) with no quantize pass."""
    kernel = "attention_norm_rope"
    t, hq, d, n_kv, sec_h, sec_w = check_qk_norm_rope(kernel, q, k, q_norm, k_norm, eps, positions,
                                                      inv_freq, sections)
    max_len = check_append(kernel, k, v, cache_k, cache_v, step)
    expect(kernel, fuses_norm_rope(t, cache_k),
           f"runs only at decode (T = 1) over caches the single pass takes, D / 4 and {NORM_THREADS} within "
           "attention_decode_wg threads, with the tuning table's attention_norm_rope on (fuses_norm_rope)",
           q=q, cache_k=cache_k)
    expect(kernel, hq % n_kv == 0, f"Hq must be a multiple of n_kv = {n_kv}", q=q, k=k)
    window = int(window)
    expect(kernel, window >= 0, f"window must be >= 0 (0: none), got {window}")
    rt = runtime()
    if out is None:
        out = rt.empty(q.shape, "f32", label="attention")
    expect(kernel, out.shape == q.shape and out.dtype == "f32", f"out must be {q.shape} f32", out=out)
    params = pack_params(1, hq, n_kv, d // 4, max_len, window, float(scale), 0, 0, sec_h, sec_w, float(eps))
    tensors = [q, cache_k, cache_v, step, out, k, v, positions, inv_freq, q_norm, k_norm]
    if quantized is not None:
        xq, xd = quantized
        expect(kernel, d % 32 == 0, "Q8_0 output needs D a multiple of 32 (whole blocks a head)", q=q)
        dtype_in(kernel, "xq", xq, ("u32",))
        dtype_in(kernel, "xd", xd, ("f32",))
        expect(kernel, xq.numel == hq * d // 4 and xd.numel == hq * d // 32,
               f"xq and xd must hold {hq * d // 4} u32 and {hq * d // 32} f32", xq=xq, xd=xd)
        tensors += [xq, xd]
    table = tuning.current()
    rt.kernel(rt.subgroup_variant("attention_rope"), "decode" if quantized is None else "decode_q8",
              WG=table.attention_decode_wg, D4=d // 4)(hq, params, *tensors)
    return out


# -- numpy references ------------------------------------------------------------------------------

def segment_bounds(cu_seqlens, t: int) -> np.ndarray:
    """[T, 2] u32: each token's key range [start, end) of its segment, from Transformers' cu_seqlens
    (0 = c0 < c1 < ... = T: the segments' boundaries)."""
    cu = np.asarray(cu_seqlens, np.int64)
    if cu.ndim != 1 or len(cu) < 2 or cu[0] != 0 or cu[-1] != t or (np.diff(cu) <= 0).any():
        raise ValueError(f"cu_seqlens must rise from 0 to T = {t}, got {cu.tolist()}")
    seg = np.searchsorted(cu, np.arange(t), side="right") - 1
    return np.stack([cu[seg], cu[seg + 1]], axis=1).astype(np.uint32)


def attention_segments(q: Tensor, cache_k: Tensor, cache_v: Tensor, step: Tensor, bounds: Tensor, scale: float,
                       out: Tensor | None = None, flash: bool | None = None) -> Tensor:
    """Bidirectional GQA inside segments: q [T, Hq, D] f32, keys and values in cache rows 0 .. T - 1 (step[0]
    = 0: kv_append them first), token t attending to rows bounds[t, 0] .. bounds[t, 1] - 1 (segment_bounds of
    the cu_seqlens). Returns out [T, Hq, D] f32. flash: the blocked kernel (use_flash)."""
    max_len, n_kv, d = _check_cache("attention_segments", cache_k, cache_v, step)
    dtype_in("attention_segments", "q", q, ("f32",))
    expect("attention_segments", len(q.shape) == 3 and q.shape[2] == d and 0 < q.shape[0] <= max_len
           and q.shape[1] % n_kv == 0, f"q must be [T <= {max_len}, Hq (a multiple of {n_kv}), {d}]", q=q, cache_k=cache_k)
    t, hq, _ = q.shape
    dtype_in("attention_segments", "bounds", bounds, ("u32",))
    expect("attention_segments", bounds.shape == (t, 2), f"bounds must be [{t}, 2] u32", bounds=bounds)
    rt = runtime()
    if out is None:
        out = rt.empty(q.shape, "f32", label="attention_segments")
    expect("attention_segments", out.shape == q.shape and out.dtype == "f32", f"out must be {q.shape} f32", out=out)
    params = pack_params(t, hq, n_kv, d // 4, max_len, 0, float(scale), 0, 0)
    if use_flash(flash, t, d, "attention_segments", q=q):
        _flash("segments", params, t, hq, d, q, cache_k, cache_v, bounds, out)  # keys from row 0: no step
    else:
        rt.kernel("attention", "segments", WG=tuning.current().attention_wg)(t * hq, params, q, cache_k, cache_v, step,
                                                                             out, bounds)
    return out


def attention_segments_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, cu_seqlens, scale: float) -> np.ndarray:
    """float64 softmax(scale q k^T) v within each segment of cu_seqlens (q [T, Hq, D], k and v [T, n_kv, D])."""
    t, hq, d = q.shape
    group = hq // k.shape[1]
    out = np.zeros((t, hq, d))
    cu = np.asarray(cu_seqlens)
    for a, b in zip(cu[:-1], cu[1:]):
        for h in range(hq):
            s = np.asarray(q[a:b, h], np.float64) @ np.asarray(k[a:b, h // group], np.float64).T * scale
            pw = np.exp(s - s.max(-1, keepdims=True))
            out[a:b, h] = (pw / pw.sum(-1, keepdims=True)) @ np.asarray(v[a:b, h // group], np.float64)
    return out.astype(np.float32)


def kv_append_ref(k_new: np.ndarray, v_new: np.ndarray, cache_k: np.ndarray, cache_v: np.ndarray,
                  start: int) -> None:
    """In place on host arrays, dropping rows past the end like the kernel."""
    n = max(0, min(k_new.shape[0], cache_k.shape[0] - start))
    cache_k[start:start + n] = k_new[:n]
    cache_v[start:start + n] = v_new[:n]


def attention_mask(t: int, start: int, n_keys: int, window: int = 0) -> np.ndarray:
    """[T, n_keys] bool, True where query t (at position start + t) may attend to key j: HF's causal mask
    (j <= i) and, with window W > 0, its sliding-window overlay (j > i - W)."""
    i = start + np.arange(t)[:, None]
    j = np.arange(n_keys)[None, :]
    keep = j <= i
    if window > 0:
        keep &= j > i - window
    return keep


def attention_ref(q: np.ndarray, cache_k: np.ndarray, cache_v: np.ndarray, start: int, scale: float,
                  window: int = 0) -> np.ndarray:
    """float64 softmax(scale q k^T + mask) v over cache rows 0 .. start + T - 1; returns float32."""
    t, hq, d = q.shape
    n_kv = cache_k.shape[1]
    n_keys = min(start + t, cache_k.shape[0])
    group = hq // n_kv
    k = np.repeat(cache_k[:n_keys].astype(np.float64), group, axis=1)  # [S, Hq, D]: kv head h // group
    v = np.repeat(cache_v[:n_keys].astype(np.float64), group, axis=1)
    scores = np.einsum("thd,shd->hts", q.astype(np.float64), k) * scale  # [Hq, T, S]
    keep = attention_mask(t, start, n_keys, window)[None]
    scores = np.where(keep, scores, -np.inf)
    m = scores.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.where(keep, np.exp(scores - m), 0.0)
    denom = p.sum(axis=-1, keepdims=True)
    out = np.einsum("hts,shd->thd", p / np.where(denom > 0, denom, 1.0), v)
    return out.astype(np.float32)


def attention_norm_rope_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_norm: np.ndarray, k_norm: np.ndarray,
                            eps: float, positions: np.ndarray, inv_freq: np.ndarray, sections, cache_k: np.ndarray,
                            cache_v: np.ndarray, start: int, scale: float, window: int = 0) -> np.ndarray:
    """attention_norm_rope on host arrays: q and k normed and rotated (qk_norm_rope_ref), k and v appended to
    cache_k, cache_v in place (kv_append_ref), then attention_ref at start."""
    from .rope import qk_norm_rope_ref

    q, k = qk_norm_rope_ref(q, k, q_norm, k_norm, eps, positions, inv_freq, sections)
    kv_append_ref(k, v, cache_k, cache_v, start)
    return attention_ref(q, cache_k, cache_v, start, scale, window)


# -- registry cases (ops/registry.py) --------------------------------------------------------------

# f32 dot products and an f32 online softmax against a float64 reference: far inside the matmul bound.
NMSE_ATTN = 1e-10


def start_step(start: int) -> Tensor:
    """A new `step` tensor whose first new token is at position `start`."""
    return runtime().upload(np.array([start, 0, 0, 0], np.uint32))


def sentinel_cache(max_len: int, n_kv: int, d: int) -> list[Tensor]:
    """A (k, v) cache whose every row holds the sentinel, inside sentinel padding: attention that reads a
    row it should not gets a score of ~1e31 and a garbage output; kv_append that writes past its rows
    trips the padding's check."""
    pair = []
    for _ in range(2):
        t = padded_output((max_len, n_kv, d))
        runtime().write(t, np.full((max_len, n_kv, d), SENTINEL, np.float32))
        pair.append(t)
    return pair


def filled_cache(rng, max_len: int, n_kv: int, d: int, start: int, t: int):
    """A sentinel cache with rows 0 .. start + t - 1 written by kv_append (rows < start in a first call),
    and the host copies of what the rows hold: (cache_k, cache_v, host_k, host_v)."""
    rt = runtime()
    ck, cv = sentinel_cache(max_len, n_kv, d)
    hk = np.full((max_len, n_kv, d), SENTINEL, np.float32)
    hv = hk.copy()
    for s, n in ((0, start), (start, t)):
        if n:
            k, v = rand(rng, n, n_kv, d), rand(rng, n, n_kv, d)
            kv_append(rt.upload(k), rt.upload(v), ck, cv, start_step(s))
            kv_append_ref(k, v, hk, hv, s)
    return ck, cv, hk, hv


def _attention_case(rng, t, n_kv, group, d, start, window, max_len=None, split=False, flash=False, keys=8,
                    subgroups=None, decode_wg=None):
    """flash, keys: the blocked kernel and its keys a tile; subgroups: the tuning table's switch for the case
    (None: the table's); decode_wg: attention_decode_wg."""
    max_len = max_len or start + t + 5
    ck, cv, hk, hv = filled_cache(rng, max_len, n_kv, d, start, t)
    q = rand(rng, t, n_kv * group, d)
    out = padded_output(q.shape)
    changes = {k: v for k, v in (("subgroups", subgroups), ("attention_decode_wg", decode_wg)) if v is not None}
    with tuning.override(attention_flash_keys=keys, **changes):
        attention(runtime().upload(q), ck, cv, start_step(start), d ** -0.5, window=window, out=out, split=split,
                  flash=flash)
    return out.numpy(), attention_ref(q, hk, hv, start, d ** -0.5, window)


# (T, n_kv, group, D, start, window): odd T, D 4 .. 256 (multiples of 4, most not of 16), n_kv 1/2/4,
# Hq / n_kv 1/2/4/8, prefill at 0 and after earlier rows, decode, windows shorter and longer than the context.
SINGLE_PASS = [
    (1, 1, 1, 16, 0, 0), (7, 2, 4, 64, 0, 0), (13, 4, 2, 128, 0, 0), (5, 1, 8, 128, 3, 0),
    (1, 2, 8, 128, 200, 0), (1, 4, 4, 64, 64, 0), (33, 2, 1, 20, 0, 0), (3, 1, 2, 36, 130, 0),
    (9, 2, 2, 4, 17, 0), (2, 1, 1, 256, 70, 0), (65, 1, 4, 64, 0, 0), (70, 2, 2, 16, 1, 0),
    (17, 2, 4, 64, 0, 5), (11, 1, 2, 128, 40, 16), (1, 4, 8, 128, 300, 64), (1, 2, 2, 64, 300, 1),
    (29, 4, 1, 16, 10, 100), (40, 1, 8, 32, 90, 65), (3, 2, 4, 128, 0, 2),
]
# The split-K path, (T, n_kv, group, D, start, window, max_len): contexts of one to several slices of
# split_size(max_len) keys (32, 64 or 128), windows that start mid-slice or span slices, large query groups,
# D = 256, and prefill through the same path (T > 1).
SPLIT = [
    (1, 1, 16, 64, 300, 0, 400), (1, 2, 12, 128, 129, 50, 200), (1, 1, 8, 256, 260, 0, 261), (3, 1, 3, 12, 140, 0, 150),
    (1, 2, 4, 128, 0, 0, 8), (1, 2, 4, 128, 255, 0, 300), (1, 1, 8, 64, 256, 0, 600), (1, 4, 2, 64, 700, 0, 701),
    (1, 2, 2, 128, 600, 300, 610), (1, 1, 1, 16, 511, 256, 520), (1, 2, 8, 128, 1000, 1, 1030),
    (5, 2, 2, 64, 500, 0, 520), (7, 1, 4, 32, 250, 20, 300), (3, 2, 1, 20, 900, 600, 1200),
    (1, 2, 4, 64, 2999, 0, 3000), (1, 1, 2, 128, 9000, 100, 9001),
]
_KEYS = ("t", "n_kv", "group", "d", "start", "window")
# Decode (T = 1) through the automatic choice (split=None): the single pass `decode` up to the table's
# attention_single_max_len (2048) rows, split-K past it. (n_kv, group, D, start, window, max_len,
# attention_decode_wg or None for the table's 256): the thinker's 100 keys; one chunk exactly, one key past
# it; a single key; several chunks; head dims not a multiple of 16 (72, 20: idle threads in the value
# groups), D = 4 and D = 256 (past the unrolled 128); the last single-pass cache and the first split one;
# windows; 64-thread workgroups for more chunks at small sizes. Each with and without subgroup operations.
DECODE = [
    (4, 8, 128, 99, 0, 104, None), (4, 8, 128, 255, 0, 300, None), (4, 8, 128, 256, 0, 300, None),
    (2, 4, 128, 0, 0, 8, None), (1, 16, 64, 700, 0, 1024, None), (2, 1, 72, 150, 0, 200, None),
    (2, 2, 4, 40, 0, 64, None), (1, 3, 256, 130, 0, 140, None), (4, 4, 128, 1999, 0, 2048, None),
    (4, 8, 128, 2047, 0, 2049, None), (2, 4, 128, 500, 64, 600, None), (2, 2, 128, 600, 300, 610, 64),
    (1, 2, 20, 77, 0, 100, 64), (2, 4, 64, 300, 1, 400, None),
]
_DECODE_KEYS = ("n_kv", "group", "d", "start", "window", "max_len", "decode_wg")


def _attention_norm_rope_case(rng, n_kv, group, d, start, window, max_len, sections=None, q8=False,
                               subgroups=None, decode_wg=None):
    """One decode step from the new token's projections (attention_norm_rope) over a sentinel cache holding
    rows 0 .. start - 1 (all of them past its end). The cache afterwards must equal, bit for bit, the one
    rope.qk_norm_rope's append writes from the same projections (its row start and nothing else); q8: the
    Q8_0 output must be quantize_activations' of out, bit for bit. subgroups, decode_wg: the tuning table's
    switches."""
    from .q8_0 import quantize_activations
    from .rope import qk_norm_rope, rope_inv_freq

    rt = runtime()
    hq = n_kv * group
    ck, cv, hk, hv = filled_cache(rng, max_len, n_kv, d, min(start, max_len), 0)
    q, k, v = rand(rng, 1, hq, d) * 3, rand(rng, 1, n_kv, d) * 3, rand(rng, 1, n_kv, d)
    wq, wk = rand(rng, d), rand(rng, d)
    pos = rng.integers(0, 40000, 1 if sections is None else (3, 1)).astype(np.int32)
    inv = rope_inv_freq(d, 1e6)
    eps, scale = 1e-6, d ** -0.5
    qt, kt, vt, wqt, wkt, post, invt = (rt.upload(a) for a in (q, k, v, wq, wk, pos, inv))
    step = start_step(start)
    sep_k, sep_v = sentinel_cache(max_len, n_kv, d)  # the separate append's cache, from the same rows
    rt.write(sep_k, ck.numpy())
    rt.write(sep_v, cv.numpy())
    out = padded_output(q.shape)
    quantized = (padded_output((hq * d // 4,), "u32"), padded_output((hq * d // 32,))) if q8 else None
    changes = {k: v for k, v in (("subgroups", subgroups), ("attention_decode_wg", decode_wg)) if v is not None}
    # attention_norm_rope is off in the H200's table (measured), and so on every adapter without a table of its
    # own; the kernel stays checked wherever it runs.
    with tuning.override(attention_norm_rope=True, **changes):
        attention_norm_rope(qt, kt, vt, wqt, wkt, eps, post, invt, sections, ck, cv, step, scale, window, out=out,
                            quantized=quantized)
        qk_norm_rope(qt, kt, wqt, wkt, eps, post, invt, sections, append=(vt, sep_k, sep_v, step))
    for ours, theirs in ((ck, sep_k), (cv, sep_v)):
        require(np.array_equal(ours.numpy().view(np.uint32), theirs.numpy().view(np.uint32)),
                "the cache differs from the one qk_norm_rope's append writes")
    if q8:
        want_q, want_d = quantize_activations(out.view((1, hq * d)))
        require(np.array_equal(quantized[0].numpy(), want_q.numpy()[0])
                and np.array_equal(quantized[1].numpy().view(np.uint32), want_d.numpy()[0].view(np.uint32)),
                "the Q8_0 output differs from quantize_activations of out")
    ref = attention_norm_rope_ref(q, k, v, wq, wk, eps, pos, inv, sections, hk, hv, start, scale, window)
    if start >= max_len:  # the token is dropped, as kv_append drops it
        return out.numpy(), ref
    return (out.numpy(), ck.numpy()[start], cv.numpy()[start]), (ref, hk[start], hv[start])


# (n_kv, group, D, start, window, max_len, sections): the thinker's decode (32 q / 4 kv heads, MRoPE [24, 20,
# 20]) and Qwen3-0.6B's (16 / 8); the first token (no cache row before it); tokens at and past max_len
# (dropped: nothing written, not attended); windows of one key (the new one alone) and of a few; more keys
# than a chunk (256) with MRoPE; head dims not a multiple of 16 (4, 20, 72: idle threads in the value
# groups), past the 64 threads' first pairs (136, 200, 256: two pairs a thread), GQA 1 .. 12.
NORM_ROPE = [
    (4, 8, 128, 99, 0, 104, (24, 20, 20)), (8, 2, 128, 135, 0, 140, None), (2, 4, 128, 0, 0, 8, None),
    (2, 2, 64, 40, 0, 40, None), (1, 2, 32, 45, 3, 40, None), (1, 2, 32, 50, 1, 60, None), (2, 4, 64, 300, 64, 320, None),
    (2, 3, 128, 400, 0, 500, (4, 6, 6)), (1, 1, 4, 9, 0, 12, None), (2, 2, 20, 77, 0, 100, (2, 2, 1)),
    (1, 12, 72, 150, 0, 200, None), (2, 1, 136, 30, 0, 40, (20, 16, 16)), (1, 2, 200, 60, 7, 64, None),
    (1, 3, 256, 130, 0, 140, (24, 20, 20)),
]
# On 64-thread workgroups (NORM_THREADS: every thread takes pairs), D4 = 64 there.
NORM_ROPE_64 = [(1, 4, 128, 70, 0, 80, (24, 20, 20)), (2, 2, 256, 30, 4, 40, None)]
# With the Q8_0 output (D a multiple of 32: one to eight blocks a head), the last on 64 threads.
NORM_ROPE_Q8 = [
    (4, 8, 128, 99, 0, 104, (24, 20, 20), None), (8, 2, 128, 0, 0, 16, None, None), (2, 2, 32, 300, 5, 310, None, None),
    (1, 3, 256, 40, 0, 41, None, None), (2, 4, 64, 50, 0, 50, None, None), (1, 4, 128, 70, 0, 80, (24, 20, 20), 64),
]
_NORM_ROPE_KEYS = ("n_kv", "group", "d", "start", "window", "max_len", "sections")


def _segments_case(rng, cu, n_kv, group, d, max_len, flash=False):
    t = cu[-1]
    rt = runtime()
    q = rand(rng, t, n_kv * group, d)
    k, v = rand(rng, t, n_kv, d), rand(rng, t, n_kv, d)
    ck, cv = kv_cache(max_len, n_kv, d)
    step = rt.upload(np.zeros(4, np.uint32))
    kv_append(rt.upload(k), rt.upload(v), ck, cv, step)
    out = padded_output(q.shape)
    attention_segments(rt.upload(q), ck, cv, step, rt.upload(segment_bounds(cu, t)), d ** -0.5, out=out, flash=flash)
    return out.numpy(), attention_segments_ref(q, k, v, cu, d ** -0.5)


# Segments (cu_seqlens): one segment, ragged windows with a last short one, single-token segments, a
# segment longer than a workgroup's chunk of keys (64), GQA, head dims of the encoders (64 audio, 72 vision).
SEGMENTS = [
    dict(cu=(0, 9), n_kv=2, group=1, d=16, max_len=9),
    dict(cu=(0, 13, 26, 31), n_kv=4, group=1, d=64, max_len=40),
    dict(cu=(0, 1, 2, 7, 8), n_kv=1, group=3, d=32, max_len=8),
    dict(cu=(0, 100, 170, 203), n_kv=2, group=2, d=72, max_len=256),
]


# The flash kernel, (T, n_kv, group, D, start, window): one block and several with a partial last one, a
# tile's worth of keys and fewer, prefill after earlier rows (a block's tokens with different key counts),
# windows inside and across tiles and blocks, D 4 .. 128 not a multiple of 16 (slots left empty), GQA 1 .. 8.
FLASH = [
    (1, 1, 1, 16, 0, 0), (32, 2, 4, 128, 0, 0), (33, 1, 2, 64, 0, 0), (70, 4, 8, 128, 5, 0), (100, 2, 1, 72, 0, 0),
    (17, 1, 3, 4, 40, 0), (64, 2, 2, 36, 17, 9), (45, 1, 4, 128, 100, 30), (96, 2, 2, 20, 0, 16), (5, 1, 1, 128, 300, 1),
]
SEGMENTS_FLASH = [dict(seg, flash=True) for seg in SEGMENTS] + [
    dict(cu=(0, 31, 32, 70, 140), n_kv=2, group=4, d=128, max_len=140, flash=True),  # a block across segments
]


def cases():
    return [
        *sweep("attention", "attention", NMSE_ATTN, _attention_case,
               [dict(zip(_KEYS, c), flash=True, keys=keys) for c in FLASH for keys in (8, 16)],
               quick=[dict(zip(_KEYS, FLASH[3]), flash=True, keys=8)]),
        *sweep("attention", "attention_segments", NMSE_ATTN, _segments_case, SEGMENTS_FLASH,
               quick=[SEGMENTS_FLASH[-1]]),
        *sweep("attention", "attention_segments", NMSE_ATTN, _segments_case, SEGMENTS, quick=[SEGMENTS[1]]),
        *sweep("attention", "attention", NMSE_ATTN, _attention_case, [dict(zip(_KEYS, c)) for c in SINGLE_PASS],
               quick=[dict(t=11, n_kv=1, group=2, d=128, start=40, window=16)]),
        *sweep("attention", "attention", NMSE_ATTN, _attention_case,
               [dict(zip(_KEYS, c), max_len=c[6], split=True, subgroups=sg) for c in SPLIT for sg in (True, False)],
               quick=[dict(t=1, n_kv=2, group=12, d=128, start=129, window=50, max_len=200, split=True, subgroups=sg)
                      for sg in (True, False)]),
        *sweep("attention", "attention", NMSE_ATTN, _attention_case,
               [dict(t=1, **dict(zip(_DECODE_KEYS, c)), split=None, subgroups=sg) for c in DECODE for sg in (True, False)],
               quick=[dict(t=1, n_kv=4, group=8, d=128, start=99, window=0, max_len=104, decode_wg=None, split=None,
                           subgroups=sg) for sg in (True, False)]),
        # The decode entries that norm, rotate and append their own token (attention_rope.wgsl), each with and
        # without subgroup operations.
        *sweep("attention", "attention_norm_rope", NMSE_ATTN, _attention_norm_rope_case,
               [dict(zip(_NORM_ROPE_KEYS, c), subgroups=sg) for c in NORM_ROPE for sg in (True, False)]
               + [dict(zip(_NORM_ROPE_KEYS, c), decode_wg=64, subgroups=sg) for c in NORM_ROPE_64 for sg in (True, False)]
               + [dict(zip(_NORM_ROPE_KEYS, c), q8=True, decode_wg=c[7], subgroups=sg) for c in NORM_ROPE_Q8
                  for sg in (True, False)],
               quick=[dict(zip(_NORM_ROPE_KEYS, NORM_ROPE[0]), subgroups=sg) for sg in (True, False)]
               + [dict(zip(_NORM_ROPE_KEYS, NORM_ROPE_Q8[0]), q8=True, decode_wg=None, subgroups=sg) for sg in (True, False)]),
    ]
