"""Mixture-of-experts ops: HF's top-k router, and the selected experts' SwiGLU MLP in two dispatches
(gate and up projections with the SwiGLU product; down projection with the weighted sum over the k slots)
that read expert ids and routing weights from GPU buffers. Nothing is read back: the experts a token uses
stay on the GPU.

Expert weights are stacked over experts in nn.Linear's [out, in] layout: gate_up [E, 2F, D] (gate_proj
rows then up_proj rows per expert, transformers' fused `gate_up_proj`) and down [E, D, F], as f32/f16/bf16
Tensors or Q8_0 (formats.q8_0.Q8Weight, int8 activations through dot4I8Packed: at one token quantized
in the expert kernels' own workgroups, `*_q8x`, otherwise by a quantize_activations dispatch before them). Stacks larger than one
storage binding are bound in expert pieces, one dispatch per piece: gate_up's rows are written by the
piece holding their expert, and down's pieces each add the slots they hold.

Decode (one token) is bound by dispatches, not bytes: experts_gate_up_routed is route and experts_gate_up
in one dispatch (each workgroup routes the token from the router's logits with route's own code), and with
Q8_0 experts it writes act as the int8 blocks down reads, so no quantize_activations runs between them.
`routed_ok` says where a MoE block takes it (the released models' 128 experts are within it).

Prefill (many tokens) groups the pairs by expert first (`group_pairs`), and the projections run the
prefill's tiled matmul (ops/tiles.py) over those groups: each expert's weight tile meets a tile of the pairs
that chose it, so an expert's weights are read once per tile of pairs instead of once per pair; down's
weighted sum over the slots becomes its own `combine` dispatch. Pass the groups to experts_gate_up /
experts_down to take that path. Q8_0 weights there take the tuning table's q8_prefill_path, as every prefill
projection does: "dot4" quantizes the activations once (gate_up: each token's x row, read by all k pairs of
that token; down: the act rows) and takes int8 products; "f32" dequantizes the weights into the tile and
multiplies f32 activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats.q8_0 import QK, Q8Weight, quantize_q8_0, split_q8_0, upload_q8_0
from ..gpu import Tensor, bf16_to_f32, pack_params, runtime, tuning
from ._check import dtype_in, expect
from .linear import WEIGHT_DTYPES, WTYPE, launch_tpr, random_weights
from .q8_0 import dequantize_ref, quantize_activations_ref, staging
from .registry import NMSE_ELEMENTWISE, NMSE_MATMUL, padded_output, rand, require, sweep
from .tiles import TILE_ROWS, gathered_matmul

WG, ROUTE_WG_MAX = 64, 256  # route's workgroup size, by the expert count
MAX_EXPERTS = 4096  # route keeps a token's probabilities in workgroup memory (16 KiB at this size)
GROUP_WG = 256    # group: one workgroup
# The per-pair kernels' workgroup and threads per row, and the prompt lengths from which experts run
# grouped, are the tuning table's (gpu/tuning.py: moe_*).


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
        # moe.wgsl's route, or moe_sg.wgsl's on subgroup operations (lib/moe_route.wgsl)
        kern = rt.kernel(rt.subgroup_variant("moe"), "route", WG=wg, E_MAX=max(wg, _pow2_at_least(e)), K_MAX=_pow2_at_least(k))
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


def _expert_params(pairs: int, n: int, d: int, k: int, e0: int, count: int, accumulate: int = 0, route_e: int = 0,
                   route_norm: int = 0) -> bytes:
    """The experts' ExpertParams (lib/moe_gate_up.wgsl)."""
    return pack_params(pairs, n, d, k, e0, count, accumulate, route_e, route_norm, 0, 0, 0)


def _dispatch(kernel: str, entry: str, w, rows: int, words: int, params, head: tuple, tail: tuple,
              staged: int = 0, route: tuple[int, int] | None = None) -> None:
    """One dispatch per expert piece of w: bindings head + (w's tensors) + tail; params(e0, count, first).
    staged: the blocks of f32 input that the Q8_0 `*_q8x` entry quantizes in workgroup memory (0: the
    `*_q8` entry, reading quantized activations). route: the router's (E, k) for the `*_routed` entries,
    which route the token themselves (moe_sg.wgsl's where the table takes subgroups, as route)."""
    rt = runtime()
    q8 = isinstance(w, Q8Weight)
    vec = q8 or w.shape[-1] % (4 if w.dtype == "f32" else 8) == 0
    table = tuning.current()
    wg = table.moe_expert_wg
    tpr = launch_tpr(rows, words, table.moe_min_tpr, wg)
    if route and q8:
        tpr = min(tpr, wg // QK)  # whole Q8_0 blocks of act a workgroup (gate_up_q8_routed)
    consts = dict(WG=wg, TPR=tpr) if q8 else dict(WG=wg, TPR=tpr, WTYPE=WTYPE[w.dtype], VEC=vec)
    if staged:
        consts["XB"] = staged
    if route:
        consts.update(E_MAX=max(64, _pow2_at_least(route[0])), K_MAX=_pow2_at_least(route[1]))
    name = entry + ("_q8x" if staged else "_q8" if q8 else "") + ("_routed" if route else "")
    kern = rt.kernel(rt.subgroup_variant("moe") if route else "moe", name, **consts)
    gpu = rt.gpu
    for i, (e0, piece) in enumerate(w.row_pieces(gpu.max_binding, gpu.offset_alignment)):
        tensors = (piece.quants, piece.scales) if q8 else (piece,)
        kern(-(-rows // (wg // tpr)), params(e0, piece.shape[0], int(i > 0)), *head, *tensors, *tail)


def _stages(t: int, k: int) -> bool:
    """Whether a Q8_0 expert launch of T = `t` tokens over inputs of `k` values a token quantizes them in
    its workgroups (`*_q8x`: one token, K within ops/q8_0.fuses_quantization) instead of a
    quantize_activations dispatch before it."""
    from .q8_0 import fuses_quantization

    return t == 1 and fuses_quantization(k, tuning.current().moe_expert_wg)


def _quantized(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [R, K] f32 -> int8 activations and block scales in scratch buffers (released by the caller)."""
    from .q8_0 import quantize_activations

    rt = runtime()
    r, k = x.shape
    return quantize_activations(x, out=(rt.scratch((r, k // 4), "u32"), rt.scratch((r, k // QK), "f32")))


def _grouped(x: Tensor, w, groups: "Groups", out: Tensor, n: int, kdim: int, x_div: int, gate_up: bool,
             quantized: tuple[Tensor, Tensor] | None = None) -> None:
    """The grouped projection (ops/tiles.py) of x's rows [R, kdim] for the groups' pairs (pair p reads row
    p // x_div). Q8_0 weights on the dot4 prefill path read x's int8 blocks: `quantized` where the caller made
    them, otherwise quantized here, once for all the pairs."""
    from .q8_0 import q8_prefill_path, quantized_rows

    rows = (groups.order, groups.tile_expert, out, groups.pairs, n, kdim)
    if not isinstance(w, Q8Weight) or q8_prefill_path() == "f32":
        gathered_matmul(x, w, *rows, x_div=x_div, gate_up=gate_up)
        return
    xq = quantized or quantized_rows(x)
    gathered_matmul(xq, w, *rows, x_div=x_div, gate_up=gate_up)
    if quantized is None:
        for t in xq:
            t.release()


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


def experts_gate_up(x: Tensor, w, experts: Tensor, out: Tensor | None = None, groups: Groups | None = None,
                    quantized: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """act[t, j] = silu(G_e x[t]) * (U_e x[t]) with e = experts[t, j], for every (token, slot) pair.
    x [T, D] f32; w [E, 2F, D] (per expert F gate rows, then F up rows), f32/f16/bf16 or Q8_0; experts
    [T, k] i32; returns act [T, k, F] f32. A pair whose expert id is outside [0, E) is left unwritten.
    groups: group_pairs(experts, E) to take the grouped (prefill) path. quantized: x's int8 blocks already
    made (quantize_activations' (xq, xd), by the norm before), which the per-pair Q8_0 path and the grouped
    dot4 path then read."""
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
    if quantized is not None and isinstance(w, Q8Weight):
        expect(kernel, quantized[0].numel == t * d // 4 and quantized[1].numel == t * d // QK,
               f"quantized must be x's blocks: ([{t}, {d // 4}] u32, [{t}, {d // QK}] f32)", xq=quantized[0])
    if groups is not None:
        _check_groups(kernel, groups, e, t, k)
        _grouped(x, w, groups, out, f, d, k, True, quantized)
        return out
    rows = t * k * f

    def params(e0, count, _):
        return _expert_params(t * k, f, d, k, e0, count)

    if isinstance(w, Q8Weight) and _stages(t, d):
        _dispatch(kernel, "gate_up", w, rows, d // QK, params, (x,), (experts, out), staged=d // QK)
    elif isinstance(w, Q8Weight) and quantized is not None:
        _dispatch(kernel, "gate_up", w, rows, d // QK, params, quantized, (experts, out))
    elif isinstance(w, Q8Weight):
        xq, xs = _quantized(x)
        _dispatch(kernel, "gate_up", w, rows, d // QK, params, (xq, xs), (experts, out))
        xq.release()  # later dispatches run after this one in queue order: the scratch is free again
        xs.release()
    else:
        _dispatch(kernel, "gate_up", w, rows, d // (4 if w.dtype == "f32" else 8), params, (x,), (experts, out))
    return out


def _routes(e: int, w) -> bool:
    """Whether experts_gate_up_routed takes E = `e` experts stored like `w`: every workgroup of the experts
    (tuning moe_expert_wg threads, at least 32) ranks all E, one expert a thread, so E within it (the
    released models have 128; a larger E costs each workgroup more than route's one workgroup a token);
    Q8_0 act is written in whole blocks of 32 of F."""
    wg = tuning.current().moe_expert_wg
    return QK <= wg and 0 < e <= wg and (not isinstance(w, Q8Weight) or w.shape[1] % (2 * QK) == 0)


def routed_ok(t: int, gate_up, down) -> bool:
    """Whether a MoE block's step of T = `t` tokens routes inside its gate_up dispatch
    (experts_gate_up_routed) instead of a moe.route dispatch before it: one token, E within _routes, and
    for Q8_0 gate_up a Q8_0 down (which reads the act blocks it writes; a 16-bit down would need f32 act)
    and x not quantized in the experts' workgroups (gate_up_q8x, where the tuning table fuses it: that path
    keeps route), where the tuning table's moe_routed is on."""
    if t != 1 or not tuning.current().moe_routed or not _routes(gate_up.shape[0], gate_up):
        return False
    return not isinstance(gate_up, Q8Weight) or (isinstance(down, Q8Weight) and not _stages(1, gate_up.shape[-1]))


def experts_gate_up_routed(x: Tensor, w, logits: Tensor, k: int, norm_topk_prob: bool,
                           out_weights: Tensor | None = None, out_experts: Tensor | None = None, out=None,
                           quantized: tuple[Tensor, Tensor] | None = None):
    """route(logits, k, norm_topk_prob) and experts_gate_up of its experts for one token, in one dispatch
    a piece of w: every workgroup routes the token itself (route's code: the same experts and weights), and
    one writes the route to out_weights / out_experts [1, k] for experts_down and for taps. x [1, D] f32;
    w [E, 2F, D] f32/f16/bf16 or Q8_0; logits [1, E] or [E] f32 (the router's); E within _routes.
    Returns (act, weights, experts): act [1, k, F] f32 for 16-bit w (out); for Q8_0 w act's Q8_0 blocks
    (aq [k, F/4] u32, as [k, F/32] f32: out), the int8 values quantize_activations would make of the f32
    act, which experts_down reads with no quantize dispatch between. quantized: x's int8 blocks already made
    (by the norm before), else quantize_activations here."""
    kernel = "moe.experts_gate_up_routed"
    dtype_in(kernel, "x", x, ("f32",))
    dtype_in(kernel, "logits", logits, ("f32",))
    q8 = isinstance(w, Q8Weight)
    if q8:
        expect(kernel, len(w.shape) == 3 and w.shape[-1] % QK == 0, f"Q8_0 w must be [E, 2F, D] with D % {QK} == 0",
               quants=w.quants)
    else:
        dtype_in(kernel, "w", w, WEIGHT_DTYPES)
        expect(kernel, len(w.shape) == 3, "w must be [E, 2F, D]", w=w)
    e, f2, d = w.shape
    f = f2 // 2
    expect(kernel, f2 % 2 == 0 and x.shape == (1, d), f"x must be [1, D] with w [E, 2F, D], D = {d}", x=x)
    expect(kernel, logits.numel == e and logits.shape[-1] == e, f"logits must be [1, E] with E = {e}", logits=logits)
    expect(kernel, 1 <= k <= e, f"k={k} must be in [1, E={e}]", logits=logits)
    expect(kernel, _routes(e, w), f"E={e} experts are past what one expert workgroup routes (one a thread, "
           f"moe_expert_wg = {tuning.current().moe_expert_wg}){', or F % 32 != 0' if q8 else ''}: use route and "
           "experts_gate_up", logits=logits)
    rt = runtime()
    if out_weights is None:
        out_weights = rt.empty((1, k), "f32", label=kernel)
    if out_experts is None:
        out_experts = rt.empty((1, k), "i32", label=kernel)
    expect(kernel, out_weights.shape == (1, k) and out_weights.dtype == "f32", f"out_weights must be (1, {k}) f32",
           out_weights=out_weights)
    expect(kernel, out_experts.shape == (1, k) and out_experts.dtype == "i32", f"out_experts must be (1, {k}) i32",
           out_experts=out_experts)
    if q8:
        if out is None:
            out = (rt.empty((k, f // 4), "u32", label=kernel), rt.empty((k, f // QK), "f32", label=kernel))
        _check_act_blocks(kernel, out, k, f)
    else:
        if out is None:
            out = rt.empty((1, k, f), "f32", label=kernel)
        expect(kernel, out.shape == (1, k, f) and out.dtype == "f32", f"out must be (1, {k}, {f}) f32", out=out)
    route_tail = (out_weights, out_experts)

    def params(e0, count, _):
        return _expert_params(k, f, d, k, e0, count, 0, e, int(bool(norm_topk_prob)))

    if not q8:
        _dispatch(kernel, "gate_up", w, k * f, d // (4 if w.dtype == "f32" else 8), params, (x,),
                  (logits, out, *route_tail), route=(e, k))
        return out, out_weights, out_experts
    if quantized is not None:
        expect(kernel, quantized[0].numel == d // 4 and quantized[1].numel == d // QK,
               f"quantized must be x's blocks: ([{d // 4}] u32, [{d // QK}] f32)", xq=quantized[0])
    xq = quantized or _quantized(x)
    _dispatch(kernel, "gate_up", w, k * f, d // QK, params, xq, (logits, *out, *route_tail), route=(e, k))
    if quantized is None:
        for scratch in xq:
            scratch.release()  # later dispatches run after this one in queue order: the scratch is free again
    return out, out_weights, out_experts


def _check_act_blocks(kernel: str, blocks, pairs: int, f: int) -> None:
    """blocks: (aq [pairs, F/4] u32, as [pairs, F/32] f32), act's Q8_0 blocks."""
    expect(kernel, isinstance(blocks, tuple) and len(blocks) == 2, "Q8_0 act must be the pair (aq, as)")
    aq, as_ = blocks
    expect(kernel, f % QK == 0 and aq.shape == (pairs, f // 4) and aq.dtype == "u32"
           and as_.shape == (pairs, f // QK) and as_.dtype == "f32",
           f"Q8_0 act must be ([{pairs}, {f // 4}] u32, [{pairs}, {f // QK}] f32)", aq=aq, scales=as_)


def experts_down(act, w, experts: Tensor, weights: Tensor, out: Tensor | None = None,
                 groups: Groups | None = None) -> Tensor:
    """out[t] = sum_j weights[t, j] * (W_e act[t, j]) with e = experts[t, j]: the down projection and the
    weighted combine over the k slots. act [T, k, F] f32, or for Q8_0 w per pair act's Q8_0 blocks (aq
    [T*k, F/4] u32, as [T*k, F/32] f32, as quantize_activations makes them: experts_gate_up_routed's at
    decode), read as they are; w [E, D, F] f32/f16/bf16 or Q8_0; experts [T, k] i32; weights [T, k] f32;
    returns [T, D] f32. Slots whose expert id is outside [0, E) add nothing. groups: group_pairs(experts, E)
    to take the grouped (prefill) path: the projection of each pair into a [T*k, D] scratch, then the
    weighted sum over the slots (combine)."""
    kernel = "moe.experts_down"
    dtype_in(kernel, "weights", weights, ("f32",))
    blocks = isinstance(act, tuple)
    if blocks:
        expect(kernel, isinstance(w, Q8Weight) and groups is None and len(experts.shape) == 2,
               "Q8_0 act blocks are read by Q8_0 w per pair, with experts [T, k]", experts=experts)
        t = experts.shape[0]
    else:
        dtype_in(kernel, "act", act, ("f32",))
        expect(kernel, len(act.shape) == 3, "act must be [T, k, F]", act=act)
        t = act.shape[0]
    e, d, f, k = _check_experts(kernel, w, experts, t)
    if blocks:
        _check_act_blocks(kernel, act, t * k, f)
    expect(kernel, weights.shape == (t, k) and (blocks or act.shape == (t, k, f)),
           f"act must be ({t}, {k}, {f}) and weights ({t}, {k})", weights=weights, w=getattr(w, "quants", w),
           **({} if blocks else {"act": act}))
    if out is None:
        out = runtime().empty((t, d), "f32", label=kernel)
    expect(kernel, out.shape == (t, d) and out.dtype == "f32", f"out must be ({t}, {d}) f32", out=out)
    if t * d == 0:
        return out

    def params(e0, count, accumulate):
        return _expert_params(t * k, d, f, k, e0, count, accumulate)

    if blocks:
        _dispatch(kernel, "down", w, t * d, k * (f // QK), params, act, (experts, weights, out))
        return out
    flat = act.view((t * k, f))  # [T*k, F]: one activation row per pair
    if groups is not None:
        _check_groups(kernel, groups, e, t, k)
        rt = runtime()
        y = rt.scratch((t * k, d))  # [T*k, D]: each pair's projection, before the weights
        _grouped(flat, w, groups, y, d, f, 1, False)
        wg = tuning.current().moe_expert_wg
        rt.kernel("moe", "combine", WG=wg)(-(-t * d // wg), pack_params(t, d, k, e), y, experts, weights, out)
        y.release()
        return out
    if isinstance(w, Q8Weight) and _stages(t, k * f):
        _dispatch(kernel, "down", w, t * d, k * (f // QK), params, (flat,), (experts, weights, out), staged=k * f // QK)
    elif isinstance(w, Q8Weight):
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


# -- registry cases (ops/registry.py) --------------------------------------------------------------

def expert_ids(rng, t, k, e):
    """[T, k] i32: k distinct experts of E for each token."""
    return np.stack([rng.choice(e, size=k, replace=False) for _ in range(t)]).astype(np.int32)


def grouping(experts: np.ndarray, e: int, grouped: bool):
    """(experts on the GPU, group_pairs of them or None for the per-pair kernels)."""
    ex = runtime().upload(experts)
    return ex, (group_pairs(ex, e) if grouped else None)


def q8_stack(rng, e, n, d):
    """Random Q8_0 expert stack [E, N, D] quantized by gguf's rule: (Q8Weight, the float values it holds)."""
    blocks = quantize_q8_0(rand(rng, e, n, d, scale=d ** -0.5))  # [E, N, D/32*34]
    wq, wd = split_q8_0(blocks, (e, n, d))
    return upload_q8_0(blocks, (e, n, d)), dequantize_ref(wq.reshape(e * n, d), wd.reshape(e * n, -1)).reshape(e, n, d)


def q8_seen(x):
    """Activations as the per-pair Q8_0 kernels see them: quantized per block of 32 like llama.cpp, then exact."""
    q, d = quantize_activations_ref(x)
    blocks = q.astype(np.float64).reshape(*x.shape[:-1], -1, QK) * d[..., None].astype(np.float64)
    return blocks.reshape(x.shape)


def _route_case(rng, t, e, k, norm, subgroups=None, ties=False):
    """subgroups: the tuning table's switch for the case (None: the table's). ties: logits drawn from a few
    values, so that equal probabilities compete for the last kept ranks (HF keeps the lower ids)."""
    rt = runtime()
    logits = rand(rng, t, e, scale=2.0)
    if ties:
        logits = rng.integers(0, 4, (t, e)).astype(np.float32)
    ow, oe = padded_output((t, k)), padded_output((t, k), "i32")
    with tuning.override(**({} if subgroups is None else {"subgroups": subgroups})):
        route(rt.upload(logits), k, norm, out_weights=ow, out_experts=oe)
    ref_w, ref_e = route_ref(logits, k, norm)
    require(np.array_equal(oe.numpy(), ref_e), "selected experts differ")
    return ow.numpy(), ref_w


def random_stack(rng, e, n, d, dtype):
    """A random expert stack [E, N, D] (f32/f16/bf16 or "q8_0") on the GPU, and the float values the
    kernels read."""
    if dtype == "q8_0":
        return q8_stack(rng, e, n, d)
    host_w, w_seen = random_weights(rng, e * n, d, dtype)
    return runtime().upload(host_w.reshape(e, n, d), dtype), w_seen.reshape(e, n, d)


# Per pair, Q8_0 experts take int8 activations: exact block sums, so q8_seen of the activations is the
# reference's input. Grouped, they take the prefill path `path` (the tuning table's q8_prefill_path): dot4
# likewise (q8_seen), f32 dequantizes the weights into the tile and multiplies f32 activations.
def int8_activations(dtype: str, grouped: bool, path: str) -> bool:
    """Whether Q8_0 experts on this path see their activations rounded to int8 (q8_seen)."""
    return dtype == "q8_0" and (not grouped or path == "dot4")


def _gate_up_case(rng, t, k, e, f, d, dtype, grouped, staged=False, path="dot4"):
    w, w_seen = random_stack(rng, e, 2 * f, d, dtype)
    experts = expert_ids(rng, t, k, e)
    x = rand(rng, t, d)
    out = padded_output((t, k, f))
    ex, groups = grouping(experts, e, grouped)
    # staged: the Q8_0 entries that quantize x in their workgroups at one token
    with staging(staged), tuning.override(q8_prefill_path=path):
        experts_gate_up(runtime().upload(x), w, ex, out=out, groups=groups)
    x_seen = q8_seen(x) if int8_activations(dtype, grouped, path) else x
    return out.numpy(), experts_gate_up_ref(x_seen, w_seen, experts)


def _down_case(rng, t, k, e, f, d, dtype, grouped, staged=False, path="dot4", blocks=False):
    """blocks: act passed as its Q8_0 blocks, not as f32 (as experts_gate_up_routed hands them on)."""
    from .q8_0 import quantize_activations

    rt = runtime()
    w, w_seen = random_stack(rng, e, d, f, dtype)
    experts = expert_ids(rng, t, k, e)
    act, rw = rand(rng, t, k, f), rng.random((t, k)).astype(np.float32)
    out = padded_output((t, d))
    ex, groups = grouping(experts, e, grouped)
    act_in = quantize_activations(rt.upload(act.reshape(t * k, f))) if blocks else rt.upload(act)
    with staging(staged), tuning.override(q8_prefill_path=path):
        experts_down(act_in, w, ex, rt.upload(rw), out=out, groups=groups)
    act_seen = q8_seen(act) if int8_activations(dtype, grouped, path) else act
    return out.numpy(), experts_down_ref(act_seen, w_seen, experts, rw)


def act_blocks_seen(blocks: tuple[Tensor, Tensor], k: int, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 act blocks (aq [k, F/4] u32, as [k, F/32] f32) read back: (int8 values [k, F], their values)."""
    q = blocks[0].numpy().view(np.int8).reshape(k, f)
    return q, (q.astype(np.float64).reshape(k, -1, QK) * blocks[1].numpy()[..., None].astype(np.float64)).reshape(k, f)


def _routed_logits(rng, e: int, ties: bool) -> np.ndarray:
    return rng.integers(0, 4, (1, e)).astype(np.float32) if ties else rand(rng, 1, e, scale=2.0)


def _routed_case(rng, e, k, f, d, dtype, norm=True, subgroups=None, ties=False, wg=None, min_tpr=None):
    """experts_gate_up_routed: its route against route_ref (the same experts, ties to the lower id; the
    weights), its act against experts_gate_up_ref of route_ref's experts. Q8_0 act comes as int8 blocks:
    against quantize_activations_ref of the reference act, within one int8 step (the f32 act and the
    reference's can fall either side of a rounding half), which the bound allows once or twice.
    subgroups, wg, min_tpr: the tuning table's switch, experts' workgroup and least threads a row for the
    case (None: the table's), for both reductions and other row geometries (rows a workgroup past K * F)."""
    rt = runtime()
    w, w_seen = random_stack(rng, e, 2 * f, d, dtype)
    logits, x = _routed_logits(rng, e, ties), rand(rng, 1, d)
    ow, oe = padded_output((1, k)), padded_output((1, k), "i32")
    q8 = dtype == "q8_0"
    out = (padded_output((k, f // 4), "u32"), padded_output((k, f // QK))) if q8 else padded_output((1, k, f))
    table = {n: v for n, v in (("subgroups", subgroups), ("moe_expert_wg", wg), ("moe_min_tpr", min_tpr))
             if v is not None}
    with tuning.override(**table):
        experts_gate_up_routed(rt.upload(x), w, rt.upload(logits), k, norm, out_weights=ow, out_experts=oe, out=out)
    ref_w, ref_e = route_ref(logits, k, norm)
    require(np.array_equal(oe.numpy(), ref_e), "selected experts differ")
    ref = experts_gate_up_ref(q8_seen(x) if q8 else x, w_seen, ref_e)  # [1, k, F]
    if not q8:
        return (out.numpy(), ow.numpy()), (ref, ref_w)
    q, seen = act_blocks_seen(out, k, f)
    ref_q, _ = quantize_activations_ref(ref[0])
    require(np.abs(q.astype(np.int32) - ref_q).max() <= 1, "int8 act more than one step from the reference's")
    return (seen, ow.numpy()), (q8_seen(ref[0]), ref_w)


# Expert stacks over 128 MiB are bound in expert pieces (lavapipe's limit): gate_up rows land in the piece
# that holds their expert, down's pieces add up (per pair) or each write their pairs' rows (grouped).
SPLIT_EXPERTS = np.array([[0, 8], [4, 7], [8, 1]], np.int32)


def _split_gate_up_case(rng, e, f, d, dtype, path="dot4"):
    rt = runtime()
    if dtype == "q8_0":
        wq = rng.integers(-127, 128, size=(e, 2 * f, d), dtype=np.int8)
        ws = (rng.uniform(0.5, 1.5, size=(e, 2 * f, d // QK)) * 1e-3).astype(np.float16)
        w = Q8Weight((e, 2 * f, d), rt.upload(wq.view(np.uint32), "u32"), rt.upload(ws, "f16"))
        used = np.unique(SPLIT_EXPERTS)  # the reference widens only the experts the pairs use
        seen = dequantize_ref(wq[used].reshape(-1, d), ws[used].reshape(len(used) * 2 * f, -1)).reshape(len(used), 2 * f, d)
        local = np.searchsorted(used, SPLIT_EXPERTS).astype(np.int32)
        x = rand(rng, 3, d)
        refs = (experts_gate_up_ref(q8_seen(x), seen, local),
                experts_gate_up_ref(q8_seen(x) if path == "dot4" else x, seen, local))
    else:
        bits = rng.integers(0x3C00, 0x3D00, size=(e, 2 * f, d), dtype=np.uint16) ^ (
            rng.integers(0, 2, size=(e, 2 * f, d), dtype=np.uint16) << 15)
        w = rt.upload(bits, "bf16")
        x = rand(rng, 3, d, scale=d ** -0.5)
        ref = experts_gate_up_ref(x, bf16_to_f32(bits), SPLIT_EXPERTS)
        refs = (ref, ref)
    require(len(w.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)) > 1, "the stack is bound in one piece")
    ex, groups = grouping(SPLIT_EXPERTS, e, True)
    outs = []
    with tuning.override(q8_prefill_path=path):
        for g in (None, groups):
            outs.append(padded_output((3, 2, f)))
            experts_gate_up(rt.upload(x), w, ex, out=outs[-1], groups=g)
    return tuple(o.numpy() for o in outs), refs


def _split_down_case(rng, e, f, d, dtype):
    rt = runtime()
    bits = rng.integers(0x3C00, 0x3D00, size=(e, d, f), dtype=np.uint16)
    w = rt.upload(bits, dtype)
    require(len(w.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)) > 1, "the stack is bound in one piece")
    act, rw = rand(rng, 3, 2, f), rng.random((3, 2)).astype(np.float32)
    ex, groups = grouping(SPLIT_EXPERTS, e, True)
    outs = []
    for g in (None, groups):
        outs.append(padded_output((3, d)))
        experts_down(rt.upload(act), w, ex, rt.upload(rw), out=outs[-1], groups=g)
    ref = experts_down_ref(act, bf16_to_f32(bits), SPLIT_EXPERTS, rw)
    return tuple(o.numpy() for o in outs), (ref, ref)


def _split_routed_case(rng, e, f, d, dtype):
    """experts_gate_up_routed over a stack bound in pieces: the experts the route picks (SPLIT_EXPERTS'
    first token's and one more) lie in both pieces, every piece routes, the first one writes the route."""
    rt = runtime()
    if dtype == "q8_0":
        wq = rng.integers(-127, 128, size=(e, 2 * f, d), dtype=np.int8)
        ws = (rng.uniform(0.5, 1.5, size=(e, 2 * f, d // QK)) * 1e-3).astype(np.float16)
        w = Q8Weight((e, 2 * f, d), rt.upload(wq.view(np.uint32), "u32"), rt.upload(ws, "f16"))
    else:
        bits = rng.integers(0x3C00, 0x3D00, size=(e, 2 * f, d), dtype=np.uint16) ^ (
            rng.integers(0, 2, size=(e, 2 * f, d), dtype=np.uint16) << 15)
        w = rt.upload(bits, "bf16")
    require(len(w.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)) > 1, "the stack is bound in one piece")
    chosen = np.array([8, 0, 4], np.int32)  # in rank order; expert 8 lies past the first piece
    logits = rand(rng, 1, e, scale=0.1)
    logits[0, chosen] = [3.0, 2.5, 2.0]
    k = len(chosen)
    x = rand(rng, 1, d, scale=1.0 if dtype == "q8_0" else d ** -0.5)
    ow, oe = padded_output((1, k)), padded_output((1, k), "i32")
    q8 = dtype == "q8_0"
    out = (padded_output((k, f // 4), "u32"), padded_output((k, f // QK))) if q8 else padded_output((1, k, f))
    experts_gate_up_routed(rt.upload(x), w, rt.upload(logits), k, True, out_weights=ow, out_experts=oe, out=out)
    ref_w, ref_e = route_ref(logits, k, True)
    require(np.array_equal(ref_e[0], chosen) and np.array_equal(oe.numpy(), ref_e), "selected experts differ")
    if q8:  # the reference widens only the experts chosen
        seen = dequantize_ref(wq[chosen].reshape(-1, d), ws[chosen].reshape(k * 2 * f, -1)).reshape(k, 2 * f, d)
        ref = experts_gate_up_ref(q8_seen(x), seen, np.arange(k, dtype=np.int32)[None])
        return (act_blocks_seen(out, k, f)[1], ow.numpy()), (q8_seen(ref[0]), ref_w)
    ref = experts_gate_up_ref(x, bf16_to_f32(bits[chosen]), np.arange(k, dtype=np.int32)[None])
    return (out.numpy(), ow.numpy()), (ref, ref_w)


# route (T, E, k, norm): the thinker's decode (128 experts, top 8), E past the workgroup (1000, 4096: several
# experts a thread), E not a multiple of 16; then the same with ties (logits of a few values).
ROUTE_CASES = [(1, 8, 2, True), (5, 8, 3, False), (37, 128, 8, True), (3, 60, 6, True), (2, 3, 3, True),
               (70, 129, 1, False), (4, 1000, 7, True), (1, 128, 8, True), (1, 4096, 8, True)]
ROUTE_TIES = [(3, 128, 8, True), (2, 1000, 7, False), (4, 20, 6, True), (1, 4096, 8, True)]
# (T, k, E, F, D): D and F ragged (not multiples of 8) in some, to take the element-wise path.
EXPERT_SHAPES = [(1, 2, 8, 32, 64), (3, 3, 8, 7, 24), (5, 2, 4, 33, 40), (9, 8, 16, 17, 31), (2, 1, 3, 5, 5),
                 (4, 6, 128, 12, 128), (1, 8, 128, 96, 256)]
Q8_SHAPES = [(1, 2, 8, 32, 64), (3, 3, 8, 96, 32), (6, 8, 16, 64, 160), (1, 8, 128, 96, 256)]
_KEYS = ("t", "k", "e", "f", "d")
# experts_gate_up_routed (E, k, F, D), within _routes' E <= 256: E not a multiple of 16, D and F ragged (the
# element-wise path) for 16-bit weights; Q8_0 at multiples of 32, and at the thinker's F and D (768, 2048).
ROUTED_SHAPES = [(8, 2, 32, 64), (128, 8, 96, 256), (60, 6, 17, 31), (3, 3, 7, 24), (200, 1, 5, 5), (129, 7, 12, 128)]
ROUTED_Q8_SHAPES = [(8, 2, 32, 64), (128, 8, 96, 256), (60, 6, 64, 160), (3, 3, 96, 32), (200, 7, 32, 64),
                    (10, 8, 768, 2048)]
_ROUTED_KEYS = ("e", "k", "f", "d")


def cases():
    dense = [dict(zip(_KEYS, s), dtype=dt, grouped=g) for dt in WEIGHT_DTYPES for s in EXPERT_SHAPES for g in (False, True)]
    q8 = [dict(zip(_KEYS, s), dtype="q8_0", grouped=False) for s in Q8_SHAPES]
    q8 += [dict(zip(_KEYS, s), dtype="q8_0", grouped=False, staged=True) for s in Q8_SHAPES if s[0] == 1]
    # Grouped on both prefill paths: int8 activations (tiles_dot4) and f32 (tiles_q8).
    q8 += [dict(zip(_KEYS, s), dtype="q8_0", grouped=True, path=pa) for s in Q8_SHAPES + [(40, 8, 16, 64, 96)]
           for pa in ("dot4", "f32")]
    quick = [dict(t=9, k=8, e=16, f=17, d=31, dtype="bf16", grouped=g) for g in (False, True)]
    # t=3 per pair quantizes in its own dispatch (gate_up_q8, down_q8); t=1 in the experts' workgroups (*_q8x).
    quick_q8 = [dict(t=3, k=3, e=8, f=96, d=32, dtype="q8_0", grouped=False)]
    quick_q8 += [dict(t=3, k=3, e=8, f=96, d=32, dtype="q8_0", grouped=True, path=pa) for pa in ("dot4", "f32")]
    quick_q8 += [dict(t=1, k=2, e=8, f=32, d=64, dtype="q8_0", grouped=False, staged=True)]
    # Q8_0 act handed to down as its blocks (as experts_gate_up_routed does), per pair.
    q8_blocks = [dict(zip(_KEYS, s), dtype="q8_0", grouped=False, blocks=True) for s in Q8_SHAPES]
    routed = [dict(zip(_ROUTED_KEYS, s), dtype=dt, subgroups=sg) for sg in (True, False)
              for dt, shapes in (("bf16", ROUTED_SHAPES), ("q8_0", ROUTED_Q8_SHAPES)) for s in shapes]
    routed += [dict(e=128, k=8, f=32, d=64, dtype=dt, subgroups=sg, **v) for dt in ("f32", "f16", "bf16", "q8_0")
               for sg in (True, False) for v in ({"ties": True}, {"norm": False})]
    # A workgroup of 64 (E = 60 <= 64); fewer threads a row (moe_min_tpr 1: Q8_0 at D = 64 takes 2, so a
    # workgroup's 128 rows run past K * F = 64 and its second block has no rows)
    both = [(dt, sg) for dt in ("bf16", "q8_0") for sg in (True, False)]
    routed += [dict(e=60, k=6, f=32, d=64, dtype=dt, subgroups=sg, wg=64) for dt, sg in both]
    routed += [dict(e=8, k=2, f=32, d=64, dtype=dt, subgroups=sg, min_tpr=1) for dt, sg in both]
    quick_routed = [dict(e=8, k=2, f=32, d=64, dtype=dt, subgroups=sg) for dt, sg in both]
    return [
        *sweep("moe", "route", NMSE_ELEMENTWISE * 1e-2, _route_case,
               [dict(t=t, e=e, k=k, norm=n, subgroups=sg) for t, e, k, n in ROUTE_CASES for sg in (True, False)]
               + [dict(t=t, e=e, k=k, norm=n, subgroups=sg, ties=True) for t, e, k, n in ROUTE_TIES for sg in (True, False)],
               quick=[dict(t=37, e=128, k=8, norm=True, subgroups=sg) for sg in (True, False)]),
        *sweep("moe", "experts_gate_up", NMSE_MATMUL * 1e-3, _gate_up_case, dense, quick=quick),
        *sweep("moe", "experts_down", NMSE_MATMUL * 1e-3, _down_case, dense, quick=quick),
        # Q8_0: exact weights and exact int8 block sums (per pair and grouped dot4), so only f32 sums differ.
        *sweep("moe", "experts_gate_up", 1e-11, _gate_up_case, q8, quick=quick_q8),
        *sweep("moe", "experts_down", 1e-11, _down_case, q8 + q8_blocks, quick=quick_q8),
        *sweep("moe", "experts_gate_up_routed", NMSE_MATMUL * 1e-3, _routed_case,
               [c for c in routed if c["dtype"] != "q8_0"], quick=[c for c in quick_routed if c["dtype"] != "q8_0"]),
        # Q8_0: the act blocks against the reference's own quantization, one int8 step allowed now and then
        *sweep("moe", "experts_gate_up_routed", 1e-5, _routed_case,
               [c for c in routed if c["dtype"] == "q8_0"], quick=[c for c in quick_routed if c["dtype"] == "q8_0"]),
        # 9 experts of [2048, 4096] bf16 or [2048, 8192] int8 are 151 MB; down [9, 4096, 2048] bf16 likewise.
        *sweep("moe", "experts_gate_up", 1e-9, _split_gate_up_case, [dict(e=9, f=1024, d=4096, dtype="bf16")], large=True),
        *sweep("moe", "experts_gate_up", 1e-11, _split_gate_up_case,
               [dict(e=9, f=1024, d=8192, dtype="q8_0", path=pa) for pa in ("dot4", "f32")], large=True),
        *sweep("moe", "experts_down", 1e-9, _split_down_case, [dict(e=9, f=2048, d=4096, dtype="bf16")], large=True),
        *sweep("moe", "experts_gate_up_routed", 1e-9, _split_routed_case, [dict(e=9, f=1024, d=4096, dtype="bf16")],
               large=True),
        *sweep("moe", "experts_gate_up_routed", 1e-5, _split_routed_case, [dict(e=9, f=1024, d=8192, dtype="q8_0")],
               large=True),
    ]
