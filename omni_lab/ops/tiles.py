"""The prefill's one matmul (shaders/lib/tiles.wgsl): out[p] = W_e x[p / x_div] for the rows p listed in
tiles of TILE_ROWS, each tile with one weight matrix e, f32/f16/bf16 or Q8_0 weights (dequantized into the
tile; activations stay f32), f32 math.

Dense linears (ops/linear.matmul, ops/q8_0.q8_matmul) list the rows 0 .. M-1 in order, all with matrix 0;
the MoE experts (ops/moe.py) list the (token, slot) pairs grouped by expert, so each expert's weights are
read once per tile of pairs. One kernel, so a speed-up or a fix reaches every prefill projection. Its
numpy references are its callers': linear.matmul_ref, q8_0.q8_matmul_ref and moe.experts_*_ref.
"""

from __future__ import annotations

import numpy as np

from ..formats.q8_0 import Q8Weight
from ..gpu import Tensor, pack_params, runtime
from .linear import WTYPE

TILE_ROWS, TILE_N = 64, 64  # lib/tiles.wgsl's TM, TN
NO_ROW = 0xFFFFFFFF         # padding in a tile's row list

_IN_ORDER: dict[tuple, tuple[Tensor, Tensor]] = {}


def rows_in_order(m: int) -> tuple[Tensor, Tensor]:
    """(order, tile_expert) listing rows 0 .. m-1 in tiles of TILE_ROWS, all with matrix 0: a dense matmul.
    Built once per m on this device."""
    rt = runtime()
    key = (id(rt.gpu.device), m)
    if key not in _IN_ORDER:
        tiles = -(-m // TILE_ROWS)
        order = np.full(tiles * TILE_ROWS, NO_ROW, np.uint32)
        order[:m] = np.arange(m, dtype=np.uint32)
        _IN_ORDER[key] = (rt.upload(order, "u32", label=f"tiles.rows_in_order[{m}]"),
                          rt.upload(np.zeros(tiles, np.int32), "i32", label=f"tiles.rows_in_order[{m}]"))
    return _IN_ORDER[key]


def gathered_matmul(x: Tensor, w, order: Tensor, tile_expert: Tensor, out: Tensor, rows: int, n: int, kdim: int,
                    x_div: int = 1, gate_up: bool = False) -> None:
    """The dispatches of lib/tiles.wgsl (callers check shapes): x [R, kdim] f32; w a stack [E, N or 2N, kdim]
    (bound in pieces of whole matrices) or one matrix [N, kdim] (bound in row pieces, each writing its own
    columns of out); out [rows, N] f32. gate_up: w holds each matrix's gate rows then its up rows, and out
    gets silu(gate) * up."""
    rt = runtime()
    q8 = isinstance(w, Q8Weight)
    consts = dict(GATE_UP=gate_up, VEC=kdim % 4 == 0)
    if not q8:
        consts["WTYPE"] = WTYPE[w.dtype]
    kern = rt.kernel("tiles_q8" if q8 else "tiles", "main", **consts)
    stack = len(w.shape) == 3
    gpu = rt.gpu
    for first, piece in w.row_pieces(gpu.max_binding, gpu.offset_alignment):
        # A stack's pieces hold whole matrices (experts first .. first + count); a matrix's pieces hold
        # output rows first .. first + count of matrix 0.
        e_base, e_count, cols, col_base = (first, piece.shape[0], n, 0) if stack else (0, 1, piece.shape[0], first)
        tensors = (piece.quants, piece.scales) if q8 else (piece,)
        kern((-(-cols // TILE_N), tile_expert.shape[0], 1),
             pack_params(rows, cols, kdim, x_div, e_base, e_count, n, col_base),
             x, order, tile_expert, out, *tensors)
