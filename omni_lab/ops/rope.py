"""Rotary position embeddings: HF's `apply_rotary_pos_emb` (rotate_half layout) and multimodal RoPE.

Both ops compute, for every (token, head) row of x [T, H, D] and pair i < D/2,
    angle = float32(position) * inv_freq[i]          (the f32 product torch forms for `freqs`)
    out[i]       = x[i] cos(angle) - x[i + D/2] sin(angle)
    out[i + D/2] = x[i + D/2] cos(angle) + x[i] sin(angle)
which is `q * cos + rotate_half(q) * sin` with `emb = cat(freqs, freqs)`. The shader evaluates sin/cos with
its own range reduction and polynomial (see shaders/rope.wgsl) so large angles stay exact to ~1e-7.

Multimodal RoPE gives each pair i one of three position streams (temporal, height, width):
- interleaved (Qwen3-Omni thinker and talker, Qwen3-VL): transformers 5.23's
  `Qwen3OmniMoeThinkerTextRotaryEmbedding.recomposition_frequencies` starts from the temporal freqs and
  overwrites indices 1, 4, 7, ... < 3 * sections[1] with height and 2, 5, 8, ... < 3 * sections[2] with
  width. sections[0] is never read; the temporal stream keeps every other index.
- contiguous (Qwen2-VL, Qwen2.5-Omni): `freq.split(sections)` chunks use streams 0, 1, 2 in order.
"""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime, tuning
from ._check import dtype_in, expect
from .registry import SENTINEL, padded_output, rand, require, sweep

WG = 64


def rope_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """inv_freq [head_dim/2] float32, bit for bit as transformers' default RoPE init computes it:
    `1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))`.

    Computed with torch itself: torch's float32 pow is not correctly rounded and differs from numpy's in
    the last bit for about a tenth of the entries, and those bits change the rotation at large positions.
    """
    import torch

    if head_dim % 2:
        raise ValueError(f"rope_inv_freq: head_dim must be even, got {head_dim}")
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype=torch.float) / head_dim))
    return inv.numpy().astype(np.float32)


def _check_x(kernel: str, x: Tensor, inv_freq: Tensor) -> tuple[int, int, int]:
    dtype_in(kernel, "x", x, ("f32",))
    dtype_in(kernel, "inv_freq", inv_freq, ("f32",))
    expect(kernel, len(x.shape) == 3 and x.shape[2] % 2 == 0 and x.shape[2] > 0,
           "x must be [T, H, D] with D even", x=x)
    t, h, d = x.shape
    expect(kernel, inv_freq.shape == (d // 2,), f"inv_freq must be [D/2] = [{d // 2}]", x=x, inv_freq=inv_freq)
    return t, h, d


def _dispatch(kernel: str, x: Tensor, positions: Tensor, inv_freq: Tensor, out: Tensor | None,
              pos_stride: int, sec_h: int, sec_w: int, mode: int, b1: int, b2: int) -> Tensor:
    rt = runtime()
    t, h, d = x.shape
    params = pack_params(t, h, d // 2, pos_stride, sec_h, sec_w, mode, b1, b2)
    groups = -(-(t * h * (d // 2)) // WG)
    if out is not None and out.buffer is x.buffer and out.offset == x.offset:
        expect(kernel, out.shape == x.shape and out.dtype == "f32", f"out must be {x.shape} f32", out=out)
        rt.kernel("rope", "inplace", WG=WG)(groups, params, x, positions, inv_freq)
        return x
    if out is None:
        out = rt.empty(x.shape, "f32", label=kernel)
    expect(kernel, out.shape == x.shape and out.dtype == "f32", f"out must be {x.shape} f32", out=out)
    expect(kernel, out.buffer is not x.buffer
           or out.offset >= x.offset + x.nbytes or x.offset >= out.offset + out.nbytes,
           "out must be x itself (in place) or not overlap it", x=x, out=out)
    rt.kernel("rope", "main", WG=WG)(groups, params, x, positions, inv_freq, out)
    return out


def rope(x: Tensor, positions: Tensor, inv_freq: Tensor, out: Tensor | None = None) -> Tensor:
    """x [T, H, D] f32 rotated by positions [T] i32 and inv_freq [D/2] f32 (upload `rope_inv_freq`).
    `out=x` rotates in place."""
    t, h, d = _check_x("rope", x, inv_freq)
    dtype_in("rope", "positions", positions, ("i32",))
    expect("rope", positions.shape == (t,), f"positions must be [T] = [{t}]", x=x, positions=positions)
    return _dispatch("rope", x, positions, inv_freq, out, t, 0, 0, 0, 0, 0)


def mrope(x: Tensor, positions3: Tensor, inv_freq: Tensor, sections, interleaved: bool = True,
          out: Tensor | None = None) -> Tensor:
    """Multimodal RoPE: x [T, H, D] f32, positions3 [3, T] i32 (temporal, height, width), inv_freq
    [D/2] f32, sections = rope_parameters["mrope_section"] (e.g. [24, 20, 20] for D = 128).
    interleaved=True is Qwen3-Omni's layout, False Qwen2-VL's (sections must then sum to D/2)."""
    t, h, d = _check_x("mrope", x, inv_freq)
    dtype_in("mrope", "positions3", positions3, ("i32",))
    expect("mrope", positions3.shape == (3, t), f"positions3 must be [3, T] = [3, {t}]", x=x, positions3=positions3)
    sections = [int(s) for s in sections]
    expect("mrope", len(sections) == 3 and min(sections) >= 0, f"sections must be 3 non-negative ints, got {sections}")
    if interleaved:
        return _dispatch("mrope", x, positions3, inv_freq, out, t, sections[1], sections[2], 0, 0, 0)
    expect("mrope", sum(sections) == d // 2, f"contiguous sections must sum to D/2 = {d // 2}, got {sections}")
    return _dispatch("mrope", x, positions3, inv_freq, out, t, 0, 0, 1, sections[0], sections[0] + sections[1])


def check_qk_norm_rope(kernel: str, q: Tensor, k: Tensor, q_norm: Tensor, k_norm: Tensor, eps: float, positions: Tensor,
                       inv_freq: Tensor, sections) -> tuple[int, int, int, int, int, int]:
    """Checks the operands of a per-head QK RMSNorm and rotation (qk_norm_rope's, or a kernel that fuses it);
    returns (T, H, D, H2, sec_h, sec_w)."""
    t, h, d = _check_x(kernel, q, inv_freq)
    expect(kernel, len(k.shape) == 3 and k.shape[0] == t and k.shape[2] == d and k.dtype == "f32",
           "k must be [T, H2, D] f32 with q's T and D", q=q, k=k)
    for name, w in (("q_norm", q_norm), ("k_norm", k_norm)):
        expect(kernel, w.shape == (d,) and w.dtype == "f32", f"{name} must be [{d}] f32", **{name: w})
    streams = 1 if sections is None else 3
    expect(kernel, positions.dtype == "i32" and positions.shape == ((t,) if streams == 1 else (3, t)),
           "positions must be [T] i32 (or [3, T] with sections)", positions=positions)
    sec_h, sec_w = (0, 0) if sections is None else (int(sections[1]), int(sections[2]))
    return t, h, d, k.shape[1], sec_h, sec_w


def qk_norm_rope(q: Tensor, k: Tensor, q_norm: Tensor, k_norm: Tensor, eps: float, positions: Tensor,
                 inv_freq: Tensor, sections=None, append: tuple[Tensor, Tensor, Tensor, Tensor] | None = None) -> None:
    """Per-head RMSNorm (weights q_norm, k_norm [D] f32) then rotation, of q [T, H, D] and k [T, H2, D]
    in place, in one dispatch. positions [T] i32 (plain RoPE, sections None) or [3, T] i32 with
    interleaved MRoPE sections. The same math as rmsnorm followed by rope / mrope.

    append = (v, cache_k, cache_v, step): the same dispatch also does ops.attention.kv_append of the
    rotated k and of v [T, H2, D] (k is then left unrotated: the cache holds it), one dispatch fewer a
    layer at decode."""
    t, h, d, h2, sec_h, sec_w = check_qk_norm_rope("qk_norm_rope", q, k, q_norm, k_norm, eps, positions,
                                                   inv_freq, sections)
    rt = runtime()
    shader = rt.subgroup_variant("rope")  # the QK-norm entries' (lib/qk_norm_rope.wgsl)
    if append is None:
        params = pack_params(t, h, d // 2, t, sec_h, sec_w, 0, 0, 0, h2, float(eps))
        rt.kernel(shader, "norm_rope", WG=WG)(t * (h + h2), params, q, positions, inv_freq, k, q_norm, k_norm)
        return
    from .attention import check_append

    v, cache_k, cache_v, step = append
    max_len = check_append("qk_norm_rope", k, v, cache_k, cache_v, step)
    params = pack_params(t, h, d // 2, t, sec_h, sec_w, 0, 0, 0, h2, float(eps), max_len)
    rt.kernel(shader, "norm_rope_append", WG=WG)(t * (h + 2 * h2), params, q, positions, inv_freq, k, q_norm,
                                                 k_norm, v, cache_k, cache_v, step)


# -- numpy references ------------------------------------------------------------------------------

def mrope_streams(half: int, sections, interleaved: bool = True) -> np.ndarray:
    """[D/2] index of the position stream (0 temporal, 1 height, 2 width) each pair uses."""
    i = np.arange(half)
    if interleaved:
        s = np.zeros(half, dtype=np.int64)
        s[(i % 3 == 1) & (i < 3 * sections[1])] = 1
        s[(i % 3 == 2) & (i < 3 * sections[2])] = 2
        return s
    return np.repeat(np.arange(3), sections)[:half]


def _rotate_ref(x: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """x [T, H, D], angle [T, D/2] float32 -> float32, with cos/sin correctly rounded from float64."""
    cos = np.cos(angle.astype(np.float64)).astype(np.float32)[:, None, :]  # [T, 1, D/2]
    sin = np.sin(angle.astype(np.float64)).astype(np.float32)[:, None, :]
    half = x.shape[-1] // 2
    x0, x1 = x[..., :half], x[..., half:]
    return np.concatenate([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1).astype(np.float32)


def rope_ref(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    angle = positions.astype(np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]  # [T, D/2] f32
    return _rotate_ref(x, angle)


def mrope_ref(x: np.ndarray, positions3: np.ndarray, inv_freq: np.ndarray, sections,
              interleaved: bool = True) -> np.ndarray:
    half = x.shape[-1] // 2
    streams = mrope_streams(half, sections, interleaved)
    pos = positions3.astype(np.float32)[streams, :].T  # [T, D/2]: the position each pair uses
    return _rotate_ref(x, pos * inv_freq.astype(np.float32)[None, :])


def qk_norm_rope_ref(q: np.ndarray, k: np.ndarray, q_norm: np.ndarray, k_norm: np.ndarray, eps: float,
                     positions: np.ndarray, inv_freq: np.ndarray, sections=None) -> tuple[np.ndarray, np.ndarray]:
    """(q, k) [T, H, D] each normed per head (rmsnorm_ref) and rotated (rope_ref, or mrope_ref with
    interleaved sections and positions [3, T])."""
    from .norm import rmsnorm_ref

    d = q.shape[-1]
    if sections is None:
        rot = lambda x: rope_ref(x, positions, inv_freq)  # noqa: E731
    else:
        rot = lambda x: mrope_ref(x, positions, inv_freq, sections)  # noqa: E731
    return tuple(rot(rmsnorm_ref(x.reshape(-1, d), w, eps).reshape(x.shape)) for x, w in ((q, q_norm), (k, k_norm)))


# -- registry cases (ops/registry.py) --------------------------------------------------------------

# The rotation is elementwise with sin/cos good to ~1 ulp, so the error is a few ulps of x.
NMSE_ROPE = 1e-12
MAX_POS = 40000


def random_positions(rng, t, high=MAX_POS):
    """t positions in [0, high], always including 0 and high when there is room."""
    p = rng.integers(0, high + 1, size=t).astype(np.int32)
    p[: min(t, 2)] = [0, high][: min(t, 2)]
    return p


def rotation_error_bound(x: np.ndarray) -> np.ndarray:
    """Per-element error allowed in a rotation of x [..., D]: each output is x0 cos +- x1 sin, so sin/cos
    errors of ~1e-7 scale with |x0| + |x1|."""
    half = x.shape[-1] // 2
    scale = np.abs(x[..., :half]) + np.abs(x[..., half:])
    return 3e-7 * np.concatenate([scale, scale], axis=-1) + 1e-30


def _rope_case(rng, t, h, d, theta=1e6, in_place=False):
    rt = runtime()
    x = rand(rng, t, h, d)
    pos = random_positions(rng, t)
    inv = rope_inv_freq(d, theta)
    out = padded_output((t, h, d))
    if in_place:
        rt.write(out, x)
        require(rope(out, rt.upload(pos), rt.upload(inv), out=out) is out, "rope(x, out=x) did not return x")
    else:
        rope(rt.upload(x), rt.upload(pos), rt.upload(inv), out=out)
    got, want = out.numpy(), rope_ref(x, pos, inv)
    err = np.abs(got - want)
    require((err <= rotation_error_bound(x)).all(), f"max err {err.max()}")
    return got, want


def _qk_norm_rope_case(rng, t, hq, hk, d, sections, append_at=None, subgroups=None):
    """The same math as rmsnorm then rope / mrope, q and k in place; with append_at = (start, max_len), k
    and v go to the cache rows from start instead (a sentinel cache: rows it must not write keep it).
    subgroups: the tuning table's switch for the case (None: the table's)."""
    with tuning.override(**({} if subgroups is None else {"subgroups": subgroups})):
        return _qk_norm_rope_run(rng, t, hq, hk, d, sections, append_at)


def _qk_norm_rope_run(rng, t, hq, hk, d, sections, append_at):
    from .attention import sentinel_cache, start_step

    rt = runtime()
    q, k = rand(rng, t, hq, d) * 3, rand(rng, t, hk, d) * 3
    wq, wk = rand(rng, d), rand(rng, d)
    eps = 1e-6
    inv = rope_inv_freq(d, 1e6)
    pos = rng.integers(0, 40000, t if sections is None else (3, t)).astype(np.int32)
    qt, kt = padded_output(q.shape), padded_output(k.shape)
    rt.write(qt, q)
    rt.write(kt, k)
    ref_q, ref_k = qk_norm_rope_ref(q, k, wq, wk, eps, pos, inv, sections)
    if append_at is None:
        qk_norm_rope(qt, kt, rt.upload(wq), rt.upload(wk), eps, rt.upload(pos), rt.upload(inv), sections)
        return (qt.numpy(), kt.numpy()), (ref_q, ref_k)
    start, max_len = append_at
    v = rand(rng, t, hk, d)
    ck, cv = sentinel_cache(max_len, hk, d)
    qk_norm_rope(qt, kt, rt.upload(wq), rt.upload(wk), eps, rt.upload(pos), rt.upload(inv), sections,
                 append=(rt.upload(v), ck, cv, start_step(start)))
    got_k, got_v = ck.numpy(), cv.numpy()
    rows = slice(start, min(start + t, max_len))
    for got in (got_k, got_v):
        kept = np.delete(got, np.arange(max_len)[rows], axis=0)
        require((kept == SENTINEL).all(), "a cache row outside start .. start + T - 1 was written")
    require(np.array_equal(kt.numpy(), k), "k must be left as it came when appended")
    n = rows.stop - start
    return (qt.numpy(), got_k[rows], got_v[rows]), (ref_q, ref_k[:n], v[:n])


def cases():
    return [
        *sweep("rope", "rope", NMSE_ROPE, _rope_case,
               [dict(t=t, h=h, d=d) for t, h, d in [(1, 1, 2), (3, 5, 16), (7, 3, 64), (17, 2, 128), (5, 4, 6), (33, 7, 128),
                                                    (2, 9, 34), (65, 1, 64)]],
               quick=[dict(t=7, h=3, d=64)]),
        *sweep("rope", "rope", NMSE_ROPE, _rope_case, [dict(t=9, h=3, d=32, theta=1e4, in_place=True)],
               quick=[dict(t=9, h=3, d=32, theta=1e4, in_place=True)]),
        # Each with and without subgroup operations; D = 136 and 200 have pairs past the 64 threads (D / 2 > WG).
        *sweep("rope", "qk_norm_rope", 1e-12, _qk_norm_rope_case,
               [dict(t=t, hq=hq, hk=hk, d=d, sections=s, subgroups=sg) for t, hq, hk, d, s in
                [(1, 16, 8, 128, None), (5, 6, 2, 24, None), (3, 4, 4, 64, None), (1, 32, 4, 128, (24, 20, 20)), (4, 6, 3, 32, (4, 6, 6)),
                 (2, 3, 1, 136, None), (1, 2, 2, 200, (24, 20, 20))] for sg in (True, False)],
               quick=[dict(t=5, hq=6, hk=2, d=24, sections=None, subgroups=sg) for sg in (True, False)]
               + [dict(t=4, hq=6, hk=3, d=32, sections=(4, 6, 6), subgroups=True)]),
        # Fused with the cache append: decode mid-cache, a prefill from 0, rows past max_len dropped, MRoPE,
        # the thinker's decode (32 q / 4 kv heads, MRoPE [24, 20, 20]), a head past 2 WG.
        *sweep("rope", "qk_norm_rope", 1e-12, _qk_norm_rope_case,
               [dict(t=t, hq=hq, hk=hk, d=d, sections=s, append_at=a, subgroups=sg) for t, hq, hk, d, s, a in
                [(1, 16, 8, 128, None, (37, 64)), (5, 6, 2, 24, None, (0, 9)), (3, 4, 4, 64, None, (6, 8)),
                 (1, 32, 4, 128, (24, 20, 20), (0, 1)), (4, 6, 3, 32, (4, 6, 6), (11, 40)),
                 (1, 32, 4, 128, (24, 20, 20), (99, 104)), (2, 4, 2, 136, None, (5, 9))] for sg in (True, False)],
               quick=[dict(t=3, hq=4, hk=4, d=64, sections=None, append_at=(6, 8), subgroups=sg) for sg in (True, False)]),
    ]
