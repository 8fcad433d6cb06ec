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
from .registry import NMSE_MATMUL, padded_output, rand, sweep

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


# -- registry cases (ops/registry.py) --------------------------------------------------------------

def _gathered_case(rng, rows, x_div, e, n, kdim, gate_up, dtype):
    """The kernel's own contract, apart from the callers' row lists: pairs p = 0 .. rows * x_div - 1 reading
    x row p // x_div, each with a random matrix of e, listed shuffled in tiles padded with NO_ROW, and a
    last tile of no matrix (-1)."""
    from .moe import experts_down_ref, experts_gate_up_ref, random_stack  # here: moe imports this module

    rt = runtime()
    w, w_seen = random_stack(rng, e, 2 * n if gate_up else n, kdim, dtype)
    x = rand(rng, rows, kdim)
    pairs = rows * x_div
    matrix = rng.integers(0, e, size=pairs).astype(np.int32)
    order, tile_expert = [], []
    for m in range(e):
        mine = rng.permutation(np.flatnonzero(matrix == m))
        tiles = -(-len(mine) // TILE_ROWS)
        order += list(mine) + [NO_ROW] * (tiles * TILE_ROWS - len(mine))
        tile_expert += [m] * tiles
    order += [NO_ROW] * TILE_ROWS
    tile_expert.append(-1)
    out = padded_output((pairs, n))
    gathered_matmul(rt.upload(x), w, rt.upload(np.array(order, np.uint32)), rt.upload(np.array(tile_expert, np.int32)),
                    out, pairs, n, kdim, x_div=x_div, gate_up=gate_up)
    xp = x[np.arange(pairs) // x_div]  # [P, kdim]: the x row of each pair
    if gate_up:
        want = experts_gate_up_ref(xp, w_seen, matrix[:, None])[:, 0]
    else:
        want = experts_down_ref(xp[:, None], w_seen, matrix[:, None], np.ones((pairs, 1), np.float32))
    return out.numpy(), want


def cases():
    grid = [
        dict(rows=37, x_div=1, e=3, n=70, kdim=45, gate_up=False, dtype="f32"),  # kdim % 4 != 0: element-wise loads
        dict(rows=20, x_div=3, e=5, n=33, kdim=64, gate_up=True, dtype="bf16"),
        dict(rows=70, x_div=1, e=1, n=64, kdim=100, gate_up=True, dtype="f16"),
    ]
    grid_q8 = [
        dict(rows=9, x_div=2, e=2, n=130, kdim=96, gate_up=False, dtype="q8_0"),
        dict(rows=11, x_div=8, e=4, n=17, kdim=160, gate_up=True, dtype="q8_0"),
    ]
    return [
        # As linear.matmul's bound: f32 sums of f32 products.
        *sweep("tiles", "gathered_matmul", NMSE_MATMUL * 1e-3, _gathered_case, grid, quick=[grid[1]]),
        # Q8_0 weights dequantized exactly into the tile (as the grouped experts' bound).
        *sweep("tiles", "gathered_matmul", 1e-11, _gathered_case, grid_q8, quick=[grid_q8[1]]),
    ]
