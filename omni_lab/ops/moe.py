"""Mixture-of-experts ops: HF's top-k router, and the selected experts' SwiGLU MLP in two dispatches
(gate and up projections with the SwiGLU product; down projection with the weighted sum over the k slots)
that read expert ids and routing weights from GPU buffers. Nothing is read back: the experts a token uses
stay on the GPU.

Expert weights are stacked over experts in nn.Linear's [out, in] layout: gate_up [E, 2F, D] (gate_proj
rows then up_proj rows per expert, transformers' fused `gate_up_proj`) and down [E, D, F], as f32/f16/bf16
Tensors or Q8_0 (formats.q8_0.Q8Weight, int8 activations through dot4I8Packed). Stacks larger than one
storage binding are bound in expert pieces, one dispatch per piece: gate_up's rows are written by the
piece holding their expert, and down's pieces each add the slots they hold.

Prefill (many tokens) groups the pairs by expert first (`group_pairs`), and the projections run the
prefill's tiled matmul (ops/tiles.py) over those groups: each expert's weight tile meets a tile of the pairs
that chose it, so an expert's weights are read once per tile of pairs instead of once per pair; down's
weighted sum over the slots becomes its own `combine` dispatch. Pass the groups to experts_gate_up /
experts_down to take that path. Q8_0 weights there are dequantized into the tile and multiply f32
activations, as in every prefill projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats.q8_0 import QK, Q8Weight
from ..gpu import Tensor, pack_params, runtime, tuning
from ._check import dtype_in, expect
from .linear import WEIGHT_DTYPES, WTYPE, launch_tpr
from .tiles import TILE_ROWS, gathered_matmul

WG, ROUTE_WG_MAX = 64, 256  # route's workgroup size, by the expert count
MAX_EXPERTS = 4096  # route keeps a token's probabilities in workgroup memory (16 KiB at this size)
GROUP_WG = 256    # group: one workgroup
# The per-pair kernels' workgroup and threads per row, and the prompt lengths from which experts run
# grouped, are the tuning table's (gpu/tuning.py: moe_*).


def __getattr__(name: str):
    # report/quant_report.py reads the grouped threshold under its old module-level name; it is the
    # tuning table's now, read at access time like every other use.
    field = {"GROUPED_MIN_TOKENS": "moe_grouped_min_tokens", "GROUPED_MIN_TOKENS_Q8": "moe_grouped_min_tokens_q8"}.get(name)
    if field is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(tuning.current(), field)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def route(logits: Tensor, k: int, norm_topk_prob: bool, out_weights: Tensor | None = None,
          out_experts: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """logits [T, E] f32 -> (weights [T, k] f32, experts [T, k] i32), as transformers' TopKRouter:
    softmax over E in f32, the k largest probabilities in descending order (ties: lower expert id), divided
    by their sum when norm_topk_prob."""
    dtype_in("moe.route", "logits", logits, ("f32",))
    expect("moe.route", len(logits.shape) == 2 and 0 < logits.shape[1] <= MAX_EXPERTS,
           f"logits must be [T, E] with 0 < E <= {MAX_EXPERTS}", logits=logits)
    t, e = logits.shape
    expect("moe.route", 1 <= k <= e, f"k={k} must be in [1, E={e}]", logits=logits)
    rt = runtime()
    if out_weights is None:
        out_weights = rt.empty((t, k), "f32", label="moe.route.weights")
    if out_experts is None:
        out_experts = rt.empty((t, k), "i32", label="moe.route.experts")
    expect("moe.route", out_weights.shape == (t, k) and out_weights.dtype == "f32",
           f"out_weights must be ({t}, {k}) f32", out_weights=out_weights)
    expect("moe.route", out_experts.shape == (t, k) and out_experts.dtype == "i32",
           f"out_experts must be ({t}, {k}) i32", out_experts=out_experts)
    if t:
        wg = min(ROUTE_WG_MAX, max(WG, _pow2_at_least(e)))  # about one thread per expert
        kern = rt.kernel("moe", "route", WG=wg, E_MAX=max(wg, _pow2_at_least(e)), K_MAX=_pow2_at_least(k))
        kern(t, pack_params(t, e, k, int(bool(norm_topk_prob))), logits, out_weights, out_experts)
    return out_weights, out_experts


def _check_experts(kernel: str, w, experts: Tensor, t: int) -> tuple[int, int, int, int]:
    """(E, N, D, k) of a stacked expert weight used by the pairs of `experts` [T, k]."""
    if isinstance(w, Q8Weight):
        expect(kernel, len(w.shape) == 3 and w.shape[-1] % QK == 0, f"Q8_0 w must be [E, N, D] with D % {QK} == 0",
               quants=w.quants)
    else:
        dtype_in(kernel, "w", w, WEIGHT_DTYPES)
        expect(kernel, len(w.shape) == 3, "w must be [E, N, D]", w=w)
    dtype_in(kernel, "experts", experts, ("i32",))
    expect(kernel, experts.shape[:1] == (t,) and len(experts.shape) == 2, f"experts must be [T, k] with T = {t}",
           experts=experts)
    return (*w.shape, experts.shape[1])


def _dispatch(kernel: str, entry: str, w, rows: int, words: int, params, head: tuple, tail: tuple) -> None:
    """One dispatch per expert piece of w: bindings head + (w's tensors) + tail; params(e0, count, first)."""
    rt = runtime()
    q8 = isinstance(w, Q8Weight)
    vec = q8 or w.shape[-1] % (4 if w.dtype == "f32" else 8) == 0
    table = tuning.current()
    wg = table.moe_expert_wg
    tpr = launch_tpr(rows, words, table.moe_min_tpr, wg)
    consts = dict(WG=wg, TPR=tpr) if q8 else dict(WG=wg, TPR=tpr, WTYPE=WTYPE[w.dtype], VEC=vec)
    kern = rt.kernel("moe", entry + ("_q8" if q8 else ""), **consts)
    gpu = rt.gpu
    for i, (e0, piece) in enumerate(w.row_pieces(gpu.max_binding, gpu.offset_alignment)):
        tensors = (piece.quants, piece.scales) if q8 else (piece,)
        kern(-(-rows // (wg // tpr)), params(e0, piece.shape[0], int(i > 0)), *head, *tensors, *tail)


def _quantized(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [R, K] f32 -> int8 activations and block scales in scratch buffers (released by the caller)."""
    from .q8_0 import quantize_activations

    rt = runtime()
    r, k = x.shape
    return quantize_activations(x, out=(rt.scratch((r, k // 4), "u32"), rt.scratch((r, k // QK), "f32")))


@dataclass
class Groups:
    """The (token, slot) pairs of one routing, grouped by expert in tiles of TILE_ROWS pairs (group_pairs).
    order [tiles * TILE_ROWS] u32: pair ids, each expert's run padded to whole tiles with tiles.NO_ROW;
    tile_expert [tiles] i32: each tile's expert, -1 past the last used tile. Scratch buffers: release()
    when the layer is done."""

    order: Tensor
    tile_expert: Tensor
    pairs: int
    num_experts: int

    @property
    def tiles(self) -> int:
        return self.tile_expert.shape[0]

    def release(self) -> None:
        self.order.release()
        self.tile_expert.release()


def grouped_from(w) -> int:
    """The prompt length from which experts stored like `w` run grouped (the tuning table's
    moe_grouped_min_tokens, or moe_grouped_min_tokens_q8 for Q8_0)."""
    table = tuning.current()
    return table.moe_grouped_min_tokens_q8 if isinstance(w, Q8Weight) else table.moe_grouped_min_tokens


def group_pairs(experts: Tensor, num_experts: int) -> Groups:
    """experts [T, k] i32 -> Groups for the grouped expert kernels (one dispatch, no read-back). Ids
    outside [0, num_experts) are in no group: their pairs are left alone as in the per-pair kernels."""
    kernel = "moe.group_pairs"
    dtype_in(kernel, "experts", experts, ("i32",))
    expect(kernel, len(experts.shape) == 2, "experts must be [T, k]", experts=experts)
    expect(kernel, 0 < num_experts <= MAX_EXPERTS, f"num_experts={num_experts} must be in [1, {MAX_EXPERTS}]")
    pairs = experts.shape[0] * experts.shape[1]
    rt = runtime()
    tiles = max(1, (pairs + num_experts * (TILE_ROWS - 1)) // TILE_ROWS)  # sum over experts of ceil(count / tile)
    expect(kernel, tiles <= rt.gpu.limits["max-compute-workgroups-per-dimension"],
           f"{pairs} pairs make up to {tiles} tiles of {TILE_ROWS}, over the adapter's workgroups per dimension; "
           "prefill in shorter chunks", experts=experts)
    e_max = max(GROUP_WG, _pow2_at_least(num_experts))
    groups = Groups(rt.scratch((tiles * TILE_ROWS,), "u32"), rt.scratch((tiles,), "i32"), pairs, num_experts)
    kern = rt.kernel("moe", "group", WG=GROUP_WG, E_MAX=e_max)
    kern(1, pack_params(pairs, num_experts, TILE_ROWS, tiles), experts, groups.order, groups.tile_expert)
    return groups


def _check_groups(kernel: str, groups: Groups, e: int, t: int, k: int) -> None:
    expect(kernel, groups.pairs == t * k and groups.num_experts == e,
           f"groups were made for {groups.pairs} pairs of {groups.num_experts} experts, not {t * k} of {e}")


def experts_gate_up(x: Tensor, w, experts: Tensor, out: Tensor | None = None, groups: Groups | None = None) -> Tensor:
    """act[t, j] = silu(G_e x[t]) * (U_e x[t]) with e = experts[t, j], for every (token, slot) pair.
    x [T, D] f32; w [E, 2F, D] (per expert F gate rows, then F up rows), f32/f16/bf16 or Q8_0; experts
    [T, k] i32; returns act [T, k, F] f32. A pair whose expert id is outside [0, E) is left unwritten.
    groups: group_pairs(experts, E) to take the grouped (prefill) path."""
    kernel = "moe.experts_gate_up"
    dtype_in(kernel, "x", x, ("f32",))
    expect(kernel, len(x.shape) == 2, "x must be [T, D]", x=x)
    t = x.shape[0]
    e, f2, d, k = _check_experts(kernel, w, experts, t)
    expect(kernel, f2 % 2 == 0 and d == x.shape[1], f"w must be [E, 2F, D] with D = {x.shape[1]}", x=x, w=getattr(w, "quants", w))
    f = f2 // 2
    if out is None:
        out = runtime().empty((t, k, f), "f32", label=kernel)
    expect(kernel, out.shape == (t, k, f) and out.dtype == "f32", f"out must be ({t}, {k}, {f}) f32", out=out)
    if t * k * f == 0:
        return out
    if groups is not None:
        _check_groups(kernel, groups, e, t, k)
        gathered_matmul(x, w, groups.order, groups.tile_expert, out, t * k, f, d, x_div=k, gate_up=True)
        return out
    rows = t * k * f

    def params(e0, count, _):
        return pack_params(t * k, f, d, k, e0, count, 0, 0)

    if isinstance(w, Q8Weight):
        xq, xs = _quantized(x)
        _dispatch(kernel, "gate_up", w, rows, d // QK, params, (xq, xs), (experts, out))
        xq.release()  # later dispatches run after this one in queue order: the scratch is free again
        xs.release()
    else:
        _dispatch(kernel, "gate_up", w, rows, d // (4 if w.dtype == "f32" else 8), params, (x,), (experts, out))
    return out


def experts_down(act: Tensor, w, experts: Tensor, weights: Tensor, out: Tensor | None = None,
                 groups: Groups | None = None) -> Tensor:
    """out[t] = sum_j weights[t, j] * (W_e act[t, j]) with e = experts[t, j]: the down projection and the
    weighted combine over the k slots. act [T, k, F] f32; w [E, D, F] f32/f16/bf16 or Q8_0; experts [T, k]
    i32; weights [T, k] f32; returns [T, D] f32. Slots whose expert id is outside [0, E) add nothing.
    groups: group_pairs(experts, E) to take the grouped (prefill) path: the projection of each pair into a
    [T*k, D] scratch, then the weighted sum over the slots (combine)."""
    kernel = "moe.experts_down"
    dtype_in(kernel, "act", act, ("f32",))
    dtype_in(kernel, "weights", weights, ("f32",))
    expect(kernel, len(act.shape) == 3, "act must be [T, k, F]", act=act)
    t = act.shape[0]
    e, d, f, k = _check_experts(kernel, w, experts, t)
    expect(kernel, act.shape == (t, k, f) and weights.shape == (t, k),
           f"act must be ({t}, {k}, {f}) and weights ({t}, {k})", act=act, weights=weights, w=getattr(w, "quants", w))
    if out is None:
        out = runtime().empty((t, d), "f32", label=kernel)
    expect(kernel, out.shape == (t, d) and out.dtype == "f32", f"out must be ({t}, {d}) f32", out=out)
    if t * d == 0:
        return out

    def params(e0, count, accumulate):
        return pack_params(t * k, d, f, k, e0, count, accumulate, 0)

    flat = act.view((t * k, f))  # [T*k, F]: one activation row per pair
    if groups is not None:
        _check_groups(kernel, groups, e, t, k)
        rt = runtime()
        y = rt.scratch((t * k, d))  # [T*k, D]: each pair's projection, before the weights
        gathered_matmul(flat, w, groups.order, groups.tile_expert, y, t * k, d, f)
        wg = tuning.current().moe_expert_wg
        rt.kernel("moe", "combine", WG=wg)(-(-t * d // wg), pack_params(t, d, k, e), y, experts, weights, out)
        y.release()
        return out
    if isinstance(w, Q8Weight):
        aq, as_ = _quantized(flat)
        _dispatch(kernel, "down", w, t * d, k * (f // QK), params, (aq, as_), (experts, weights, out))
        aq.release()
        as_.release()
    else:
        _dispatch(kernel, "down", w, t * d, k * f // (4 if w.dtype == "f32" else 8), params, (flat,),
                  (experts, weights, out))
    return out


# -- numpy references ------------------------------------------------------------------------------

def route_ref(logits: np.ndarray, k: int, norm_topk_prob: bool) -> tuple[np.ndarray, np.ndarray]:
    """HF's router in float32 (softmax, top-k descending with ties to the lower id, renormalise)."""
    x = logits.astype(np.float32)
    ex = np.exp((x - x.max(-1, keepdims=True)).astype(np.float64)).astype(np.float32)
    probs = (ex / ex.sum(-1, keepdims=True, dtype=np.float32)).astype(np.float32)
    order = np.lexsort((np.broadcast_to(np.arange(x.shape[1]), x.shape), -probs), axis=-1)[:, :k]  # [T, k]
    w = np.take_along_axis(probs, order, -1)
    if norm_topk_prob:
        w = (w / w.sum(-1, keepdims=True, dtype=np.float32)).astype(np.float32)
    return w.astype(np.float32), order.astype(np.int32)


def silu_ref(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    return v / (1.0 + np.exp(-v))


def experts_gate_up_ref(x: np.ndarray, w: np.ndarray, experts: np.ndarray) -> np.ndarray:
    """x [T, D], w [E, 2F, D] (the values the kernel reads), experts [T, k] -> act [T, k, F] in float64."""
    f = w.shape[1] // 2
    h = np.einsum("tknd,td->tkn", w.astype(np.float64)[experts], x.astype(np.float64))  # [T, k, 2F]
    return (silu_ref(h[..., :f]) * h[..., f:]).astype(np.float32)


def experts_down_ref(act: np.ndarray, w: np.ndarray, experts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    y = np.einsum("tkdf,tkf->tkd", w.astype(np.float64)[experts], act.astype(np.float64))  # [T, k, D]
    return np.einsum("tkd,tk->td", y, weights.astype(np.float64)).astype(np.float32)
