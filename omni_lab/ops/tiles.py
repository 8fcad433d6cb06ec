"""The prefill's one matmul (shaders/lib/tile_gather.wgsl): out[p] = W_e x[p / x_div] for the rows p listed
in tiles of TILE_ROWS, each tile with one weight matrix e. Two inner loops share its row gather, tiles and
store: f32 x (lib/tiles.wgsl) with f32/f16/bf16 weights or Q8_0 weights dequantized into the tile, f32 math;
and int8 x (quantize_activations' blocks) with Q8_0 weights (tiles_dot4.wgsl), exact i32 block sums through
dot4I8Packed. The Q8_0 callers choose between the two by the tuning table's q8_prefill_path.

Dense linears (ops/linear.matmul, ops/q8_0.q8_matmul) list the rows 0 .. M-1 in order, all with matrix 0;
the MoE experts (ops/moe.py) list the (token, slot) pairs grouped by expert, so each expert's weights are
read once per tile of pairs. One kernel, so a speed-up or a fix reaches every prefill projection. Its
numpy references are its callers': linear.matmul_ref, q8_0.q8_matmul_ref (either path) and moe.experts_*_ref
(over q8_0.q8_seen activations for the int8 path).
"""

from __future__ import annotations

import numpy as np

from ..formats.q8_0 import Q8Weight
from ..gpu import KernelError, Tensor, pack_params, runtime, tuning
from .linear import WTYPE
from .registry import NMSE_MATMUL, padded_output, rand, require, sweep

TILE_ROWS, TILE_N = 64, 64  # lib/tile_gather.wgsl's TM, TN
NO_ROW = 0xFFFFFFFF         # padding in a tile's row list
STEP_QUADS = 8              # lib/tiles.wgsl's QS: quads of K a step, what a split holds a multiple of
MIN_SPLIT_STEPS = 4         # steps a split at least: fewer would spend its time loading and storing
SPLIT_WG = 256

_PARTIALS: dict[tuple, Tensor] = {}

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


def k_splits(groups: int, kdim: int, rows: int, n: int) -> int:
    """How many splits of K a matmul of `groups` workgroups takes: enough to bring it to the tuning table's
    matmul_split_below workgroups (a short prefill's projections otherwise leave most compute units idle,
    each of the few running through all of K), each split at least MIN_SPLIT_STEPS steps, the partial
    planes within one binding; 1 if it has enough already."""
    below = tuning.current().matmul_split_below
    if groups >= below:
        return 1
    steps = -(-kdim // (4 * STEP_QUADS))
    fit = (runtime().gpu.max_binding - runtime().gpu.offset_alignment) // max(1, 4 * rows * n)
    return max(1, min(-(-below // groups), steps // MIN_SPLIT_STEPS, fit))


def split_sizes(total: int, splits: int, step: int) -> tuple[int, int]:
    """(units a split, splits) for `splits` splits of `total` units of K in whole steps of `step`: the split
    count again from the rounded size, so that none comes out empty (1 split: all of K)."""
    if splits <= 1:
        return total, 1
    size = -(-total // (splits * step)) * step
    return size, -(-total // size)


def _partials(elements: int) -> Tensor:
    """A scratch [elements] f32 for split-K's partial planes, one per size on this device (each matmul's
    planes are written and summed before the next dispatch runs, so matmuls may share it)."""
    rt = runtime()
    key = (id(rt.gpu.device), elements)
    if key not in _PARTIALS:
        _PARTIALS[key] = rt.empty((elements,), "f32", label="tiles.split_partials")
    return _PARTIALS[key]


def split_into(splits: int, plane: int, n: int, ldo: int, col_base: int, dispatch, out: Tensor) -> None:
    """Split-K's two passes: dispatch(part) writes `splits` planes of `plane` partial sums ([rows, n] each)
    into a scratch, and split_sum adds them in order into out[row * ldo + col_base + f]."""
    part = _partials(splits * plane)
    dispatch(part)
    runtime().kernel("split_sum", WG=SPLIT_WG)(-(-plane // SPLIT_WG), pack_params(plane, n, splits, plane, ldo, col_base),
                                               part, out)


def gathered_matmul(x, w, order: Tensor, tile_expert: Tensor, out: Tensor, rows: int, n: int, kdim: int,
                    x_div: int = 1, gate_up: bool = False, binding_bytes: int | None = None,
                    splits: int | None = None) -> None:
    """The dispatches of the tiled matmul (callers check shapes): x [R, kdim] f32, or for Q8_0 weights the
    pair (xq [R, kdim/4] u32, xs [R, kdim/32] f32) of ops/q8_0.quantize_activations (int8 products,
    tiles_dot4.wgsl); w a stack [E, N or 2N, kdim] (bound in pieces of whole matrices) or one matrix
    [N, kdim] (bound in row pieces, each writing its own columns of out); out [rows, N] f32. gate_up: w holds
    each matrix's gate rows then its up rows, and out gets silu(gate) * up. binding_bytes: bind w in pieces
    of at most this many bytes (default the adapter's binding limit; the registry's cases make pieces of a
    small stack with it). splits: of K (k_splits by default; 1 for int8 x and gate_up, whose SwiGLU needs
    whole sums)."""
    rt = runtime()
    q8 = isinstance(w, Q8Weight)
    int8 = isinstance(x, tuple)
    if int8 and not q8:
        raise KernelError("tiles.gathered_matmul: int8 activations (xq, xs) need Q8_0 weights")
    consts = dict(GATE_UP=gate_up)
    if not int8:
        consts["VEC"] = kdim % 4 == 0
    if not q8:
        consts["WTYPE"] = WTYPE[w.dtype]
    kern = rt.kernel("tiles_dot4" if int8 else "tiles_q8" if q8 else "tiles", "main", **consts)
    stack = len(w.shape) == 3
    gpu = rt.gpu
    quads = -(-kdim // 4)
    for first, piece in w.row_pieces(binding_bytes or gpu.max_binding, gpu.offset_alignment):
        # A stack's pieces hold whole matrices (experts first .. first + count); a matrix's pieces hold
        # output rows first .. first + count of matrix 0.
        e_base, e_count, cols, col_base = (first, piece.shape[0], n, 0) if stack else (0, 1, piece.shape[0], first)
        groups = (-(-cols // TILE_N), tile_expert.shape[0], 1)
        wanted = 1 if int8 or gate_up else splits or k_splits(groups[0] * groups[1], kdim, rows, cols)
        split, s = split_sizes(quads, wanted, STEP_QUADS)
        if s > 1:  # [s, rows, cols] planes of partial sums, then split_sum adds them up into out
            plane = rows * cols
            params = pack_params(rows, cols, kdim, x_div, e_base, e_count, cols, 0, split, plane, 0, 0)
            split_into(s, plane, cols, n, col_base, lambda part: kern(
                (groups[0], groups[1], s), params, x, order, tile_expert, part,
                *((piece.quants, piece.scales) if q8 else (piece,))), out)
            continue
        params = pack_params(rows, cols, kdim, x_div, e_base, e_count, n, col_base, split, 0, 0, 0)
        if int8:  # bindings 1 xq, 2 order, 3 tile_expert, 4 out, 5 wq, 6 ws, 7 xs
            kern(groups, params, x[0], order, tile_expert, out, piece.quants, piece.scales, x[1])
        else:
            kern(groups, params, x, order, tile_expert, out, *((piece.quants, piece.scales) if q8 else (piece,)))


# -- registry cases (ops/registry.py) --------------------------------------------------------------

def _gathered_case(rng, rows, x_div, e, n, kdim, gate_up, dtype, act="f32", pieces=0, rounding=False, splits=None):
    """The kernel's own contract, apart from the callers' row lists: pairs p = 0 .. rows * x_div - 1 reading
    x row p // x_div, each with a random matrix of e, listed shuffled in tiles padded with NO_ROW, and a
    last tile of no matrix (-1). act "int8": Q8_0 weights against x quantized on the GPU (tiles_dot4), whose
    reference reads x as q8_seen rounds it. pieces: the stack bound that many matrices a piece (e_count <
    E). rounding: x rows whose int8 rounding matters (q8_0.rounding_rows). splits: of K (split_sum adds
    the partial planes)."""
    from .moe import experts_down_ref, experts_gate_up_ref, q8_seen, random_stack  # here: moe imports this module
    from .q8_0 import quantize_activations, rounding_rows

    rt = runtime()
    w, w_seen = random_stack(rng, e, 2 * n if gate_up else n, kdim, dtype)
    x = rounding_rows(rng, rows, kdim) if rounding else rand(rng, rows, kdim)
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
    xt = rt.upload(x)
    binding_bytes = None
    if pieces:
        binding_bytes = pieces * max(w.quants.nbytes, w.scales.nbytes) // e
        require(len(w.row_pieces(binding_bytes, rt.gpu.offset_alignment)) == -(-e // pieces),
                f"the stack is not bound {pieces} matrices a piece")
    gathered_matmul(quantize_activations(xt) if act == "int8" else xt, w, rt.upload(np.array(order, np.uint32)),
                    rt.upload(np.array(tile_expert, np.int32)), out, pairs, n, kdim, x_div=x_div, gate_up=gate_up,
                    binding_bytes=binding_bytes, splits=splits)
    xp = (q8_seen(x) if act == "int8" else x)[np.arange(pairs) // x_div]  # [P, kdim]: the x row of each pair
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
        # split-K: ragged K (the last split shorter, element-wise loads), several matrices, two row tiles
        dict(rows=37, x_div=1, e=3, n=70, kdim=301, gate_up=False, dtype="f32", splits=3),
        dict(rows=70, x_div=1, e=1, n=130, kdim=512, gate_up=False, dtype="bf16", splits=5),
    ]
    grid_q8 = [
        dict(rows=9, x_div=2, e=2, n=130, kdim=96, gate_up=False, dtype="q8_0"),
        dict(rows=11, x_div=8, e=4, n=17, kdim=160, gate_up=True, dtype="q8_0"),
        dict(rows=30, x_div=3, e=5, n=48, kdim=256, gate_up=True, dtype="q8_0", pieces=2),
        dict(rows=30, x_div=1, e=2, n=48, kdim=512, gate_up=False, dtype="q8_0", pieces=1, splits=4),  # split-K
    ]
    # int8 activations (tiles_dot4): ragged N and partial tiles, x_div > 1, two tiles of rows and an odd
    # block count (the steps' two halves of workgroup memory), pieces of 2 and 3 matrices, rounding rows.
    grid_int8 = [dict(p, act="int8") for p in grid_q8] + [
        dict(rows=70, x_div=1, e=1, n=64, kdim=1056, gate_up=False, dtype="q8_0", act="int8"),
        dict(rows=25, x_div=2, e=4, n=40, kdim=512, gate_up=False, dtype="q8_0", act="int8", pieces=3),
        dict(rows=20, x_div=1, e=2, n=70, kdim=128, gate_up=True, dtype="q8_0", act="int8", rounding=True),
    ]
    return [
        # As linear.matmul's bound: f32 sums of f32 products.
        *sweep("tiles", "gathered_matmul", NMSE_MATMUL * 1e-3, _gathered_case, grid, quick=[grid[1], grid[4]]),
        # Q8_0 weights dequantized exactly into the tile (as the grouped experts' bound).
        *sweep("tiles", "gathered_matmul", 1e-11, _gathered_case, grid_q8, quick=[grid_q8[1]]),
        # Exact int8 block sums of the quantized x (an occasional +-1 quant where the GPU's 1/d differs from
        # numpy's in the last ulp: q8_0.NMSE_Q8_EXACT's note), f32 sums of the scaled blocks.
        *sweep("tiles", "gathered_matmul", 1e-11, _gathered_case, grid_int8, quick=[grid_int8[1]]),
    ]
