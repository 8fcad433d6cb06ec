"""Mixture-of-experts ops: HF's top-k router, per-expert matvec reading expert ids from a GPU buffer, and
the weighted combine. Nothing is read back: the experts a token uses stay on the GPU.

Expert weights are stacked [E, N, D] in nn.Linear's [out, in] layout per expert. Stacks larger than one
storage binding are bound in expert pieces, one dispatch per piece; each pair's row is written by the
piece that holds its expert.
"""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect
from .linear import WEIGHT_DTYPES, WTYPE

WG = 64
TPR = {"f32": 16, "f16": 16, "bf16": 16}
MAX_EXPERTS = 4096  # route keeps a token's probabilities in workgroup memory (16 KiB at this size)


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
        kern = rt.kernel("moe", "route", WG=WG, E_MAX=max(WG, _pow2_at_least(e)))
        kern(t, pack_params(t, e, k, int(bool(norm_topk_prob))), logits, out_weights, out_experts)
    return out_weights, out_experts


def moe_matvec(x: Tensor, w: Tensor, experts: Tensor, out: Tensor | None = None) -> Tensor:
    """out[t, j] = w[experts[t, j]] @ x[t] (x [T, D]) or @ x[t, j] (x [T, k, D]), for all (token, slot)
    pairs in one dispatch per binding piece. w [E, N, D] f32/f16/bf16; experts [T, k] i32; out [T, k, N]
    f32. A pair whose expert id is outside [0, E) is left unwritten."""
    dtype_in("moe_matvec", "x", x, ("f32",))
    dtype_in("moe_matvec", "w", w, WEIGHT_DTYPES)
    dtype_in("moe_matvec", "experts", experts, ("i32",))
    expect("moe_matvec", len(w.shape) == 3 and w.shape[0] > 0, "w must be [E, N, D]", w=w)
    e, n, d = w.shape
    expect("moe_matvec", len(experts.shape) == 2, "experts must be [T, k]", experts=experts)
    t, k = experts.shape
    expect("moe_matvec", x.shape in ((t, d), (t, k, d)),
           f"x must be [T, D] = ({t}, {d}) or [T, k, D] = ({t}, {k}, {d})", x=x, w=w, experts=experts)
    rt = runtime()
    if out is None:
        out = rt.empty((t, k, n), "f32", label="moe_matvec")
    expect("moe_matvec", out.shape == (t, k, n) and out.dtype == "f32", f"out must be ({t}, {k}, {n}) f32", out=out)
    if t == 0 or n == 0:
        return out
    vector = d % (4 if w.dtype == "f32" else 8) == 0
    tpr = TPR[w.dtype]
    kern = rt.kernel("moe", "main" if vector else "main_ragged", WG=WG, TPR=tpr, WTYPE=WTYPE[w.dtype])
    rows = t * k * n
    gpu = rt.gpu
    for e0, piece in w.row_pieces(gpu.max_binding, gpu.offset_alignment):
        params = pack_params(t * k, n, d, k, int(len(x.shape) == 3), e0, piece.shape[0], 0)
        kern(-(-rows // (WG // tpr)), params, x, piece, experts, out)
    return out


def moe_combine(y: Tensor, weights: Tensor, out: Tensor | None = None) -> Tensor:
    """out[t] = sum_j weights[t, j] * y[t, j]: y [T, k, D] f32, weights [T, k] f32 -> [T, D] f32."""
    dtype_in("moe_combine", "y", y, ("f32",))
    dtype_in("moe_combine", "weights", weights, ("f32",))
    expect("moe_combine", len(y.shape) == 3 and weights.shape == y.shape[:2],
           "y must be [T, k, D] and weights [T, k]", y=y, weights=weights)
    t, k, d = y.shape
    if out is None:
        out = runtime().empty((t, d), "f32", label="moe_combine")
    expect("moe_combine", out.shape == (t, d) and out.dtype == "f32", f"out must be ({t}, {d}) f32", out=out)
    if t * d:
        runtime().kernel("moe", "combine", WG=WG)(-(-(t * d) // WG), pack_params(t, k, d, 0), y, weights, out)
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


def moe_matvec_ref(x: np.ndarray, w: np.ndarray, experts: np.ndarray) -> np.ndarray:
    t, k = experts.shape
    xs = x.astype(np.float64)
    xs = np.broadcast_to(xs[:, None, :], (t, k, xs.shape[-1])) if x.ndim == 2 else xs  # [T, k, D]
    return np.einsum("tknd,tkd->tkn", w.astype(np.float64)[experts], xs).astype(np.float32)


def moe_combine_ref(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.einsum("tkd,tk->td", y.astype(np.float64), weights.astype(np.float64)).astype(np.float32)
