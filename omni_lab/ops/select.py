"""argmax and top-k over the last dim of f32 rows, results left on the GPU (greedy decoding, sampling's
top-k over a 152k vocabulary, MoE routing's top-8 of 128 experts over many rows).

Order: larger value first, ties by lower index (torch.argmax's first-index rule; torch.topk leaves
ties unspecified, we fix them this way); NaN ranks above +inf, -0 equals +0.
"""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime, tuning
from ._check import dtype_in, expect
from .norm import workgroup_for
from .registry import padded_output, sweep

MAX_CHUNK = 2048  # entries sorted per workgroup: two u32 arrays, 16 KiB of workgroup memory
MAX_K = MAX_CHUNK // 2  # so that every round shrinks a row: len' = ceil(len / CHUNK) * k


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _rows(kernel: str, x: Tensor) -> tuple[int, int]:
    dtype_in(kernel, "x", x, ("f32",))
    expect(kernel, len(x.shape) >= 1 and x.shape[-1] > 0, "x must be [..., C] with C > 0", x=x)
    return x.numel // x.shape[-1], x.shape[-1]


_top1_values: dict[int, Tensor] = {}


def argmax(x: Tensor, out: Tensor | None = None, top: Tensor | None = None) -> Tensor:
    """Index of the largest entry of each row (the first on ties). x [..., C] f32 -> [...] i32. `top` [...] f32,
    if given, receives each row's largest value: NaN when the row holds a NaN (NaN ranks first), +inf when it
    holds +inf, so reading it beside the index tells whether the row was finite at its top."""
    rows, c = _rows("argmax", x)
    shape = x.shape[:-1]
    if out is None:
        out = runtime().empty(shape, "i32", label="argmax")
    expect("argmax", out.shape == shape and out.dtype == "i32", f"out must be {shape} i32", out=out, x=x)
    if top is None:
        top = _top1_values.get(rows)
        if top is None:
            top = _top1_values[rows] = runtime().empty(shape, "f32", label="argmax.top")
    expect("argmax", top.numel == rows and top.dtype == "f32", f"top must hold {rows} f32", top=top, x=x)
    table = tuning.current()
    if rows and c > table.argmax_split_columns and rows < table.argmax_split_rows:
        # One workgroup per row leaves a GPU idle on a vocabulary-wide row (236 us for 152k logits on an
        # H200): the row's chunks go to many workgroups, then one a row takes the best of their bests, with
        # the same order (first index on ties). (Top-k with k = 1 did this by sorting each chunk: 56 us.)
        wg = 256
        nchunks = -(-c // (4 * wg))
        rt = runtime()
        cand = rt.scratch((rows, nchunks, 2), "u32")
        rt.kernel("select", "argmax_chunks", WG=wg)(rows * nchunks, pack_params(rows, c, 0, nchunks), x, cand)
        rt.kernel("select", "argmax_cands", WG=wg)(rows, pack_params(rows, nchunks, 0, 0), cand, out, top)
        cand.release()  # later dispatches run after these: the scratch is free again
    elif rows:
        runtime().kernel("select", "argmax", WG=workgroup_for(c))(rows, pack_params(rows, c, 0, 0), x, out, top)
    return out


def topk(x: Tensor, k: int, out_values: Tensor | None = None,
         out_indices: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The k largest entries of each row, sorted descending, and their indices (ties: lower index
    first). x [..., C] f32 -> values [..., k] f32, indices [..., k] i32."""
    rows, c = _rows("topk", x)
    expect("topk", 1 <= k <= min(c, MAX_K), f"k={k} must be in [1, min(C, {MAX_K})]", x=x)
    shape = x.shape[:-1] + (k,)
    rt = runtime()
    if out_values is None:
        out_values = rt.empty(shape, "f32", label="topk.values")
    if out_indices is None:
        out_indices = rt.empty(shape, "i32", label="topk.indices")
    expect("topk", out_values.shape == shape and out_values.dtype == "f32", f"out_values must be {shape} f32",
           out_values=out_values)
    expect("topk", out_indices.shape == shape and out_indices.dtype == "i32", f"out_indices must be {shape} i32",
           out_indices=out_indices)
    if not rows:
        return out_values, out_indices
    src, length, source = x, c, "x"
    while True:
        chunk = min(MAX_CHUNK, max(2, _pow2_at_least(length)))
        nchunks = -(-length // chunk)
        kern_args = dict(WG=min(256, chunk // 2), CHUNK=chunk)
        params = pack_params(rows, length, k, nchunks)
        if nchunks == 1:
            rt.kernel("select", f"final_{source}", **kern_args)(rows, params, src, out_values, out_indices)
            break
        # [R, nchunks, k] (key, index) pairs: this round's survivors, next round's input.
        cand = rt.scratch((rows, nchunks * k, 2), "u32")
        rt.kernel("select", f"chunks_{source}", **kern_args)(rows * nchunks, params, src, cand)
        if source == "cand":
            src.release()  # later dispatches run after this round's, so reuse of the buffer is safe
        src, length, source = cand, nchunks * k, "cand"
    if source == "cand":
        src.release()
    return out_values, out_indices


def order(values: np.ndarray) -> np.ndarray:
    """Column order of each row under our rule: descending, NaN first, -0 == +0, ties by lower index."""
    v = np.asarray(values, dtype=np.float32)
    nan = np.isnan(v)
    key = np.where(nan, 0.0, v).astype(np.float64)
    cols = np.broadcast_to(np.arange(v.shape[-1]), v.shape)
    # lexsort: the last key is the primary one; all ascending, hence the negations.
    return np.lexsort((cols, -key, -nan.astype(np.int8)), axis=-1)


def argmax_ref(x: np.ndarray) -> np.ndarray:
    return order(x)[..., 0].astype(np.int32)


def topk_ref(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx = order(x)[..., :k]
    return np.take_along_axis(np.asarray(x, dtype=np.float32), idx, axis=-1), idx.astype(np.int32)


# -- registry cases (ops/registry.py) --------------------------------------------------------------

def distinct_rows(rng, rows, cols):
    """Random rows without ties: shuffled integers plus a fraction below 0.5, so no two entries round alike."""
    ranks = rng.permuted(np.tile(np.arange(cols), (rows, 1)), axis=1)
    return (ranks - cols / 2 + 0.5 * rng.random((rows, cols))).astype(np.float32)


def tied_rows(rng, rows, cols, levels=5):
    """Random rows of a few levels, a tenth of them -0: ties everywhere."""
    x = rng.integers(0, levels, size=(rows, cols)).astype(np.float32)
    x[rng.random((rows, cols)) < 0.1] = -0.0
    return x


def _argmax_case(rng, rows, cols, ties=False):
    """The index and the top value, exact; a NaN in a row (every third) is its top, wherever it lies. With
    ties, the top value recurs along the row and the first column of it wins."""
    x = tied_rows(rng, rows, cols, levels=3) if ties else distinct_rows(rng, rows, cols)
    x[slice(2 if ties else 0, None, 3), rng.integers(cols)] = np.nan  # tied: row 0 (some cases' only row) NaN-free
    out, top = padded_output((rows,), "i32"), padded_output((rows,))
    argmax(runtime().upload(x), out=out, top=top)
    idx = argmax_ref(x)
    got, want = top.numpy(), np.take_along_axis(x, idx[:, None].astype(np.int64), 1)[:, 0]

    def split(v):  # NaN where it is, the value elsewhere: NMSE takes no NaN
        return np.isnan(v).astype(np.float32), np.where(np.isnan(v), 0, v)

    return (out.numpy(), *split(got)), (idx, *split(want))


def _topk_case(rng, rows, cols, k, ties=False):
    """Values and indices both exact: without ties against the one right answer (torch.topk's too), with
    ties against our lower-index rule."""
    x = tied_rows(rng, rows, cols, levels=3) if ties else distinct_rows(rng, rows, cols)
    values, indices = padded_output((rows, k)), padded_output((rows, k), "i32")
    topk(runtime().upload(x), k, out_values=values, out_indices=indices)
    return (values.numpy(), indices.numpy()), topk_ref(x, k)


ARGMAX_SHAPES = [(1, 1), (3, 7), (7, 33), (33, 100), (2, 257), (5, 1000), (300, 128), (1, 152_064), (2, 300_007)]
# Past tuning's argmax_split_columns (16384), few rows: the split entries (argmax_chunks + argmax_cands).
ARGMAX_TIED_SHAPES = [(3, 7), (1, 152_064), (3, 40_000)]
TOPK_CASES = [(1, 1, 1), (3, 7, 3), (2, 7, 7), (33, 100, 8), (7, 257, 64), (5, 1000, 64), (512, 128, 8), (3, 4099, 100),
              (1, 152_064, 1), (1, 152_064, 50), (1, 152_064, 64), (2, 300_007, 20), (1, 5000, 1024)]
TOPK_TIED_CASES = [(3, 7, 7), (64, 128, 8), (5, 1000, 64), (2, 5000, 100), (1, 152_064, 64)]


def cases():
    # Indices and selected values are exact: NMSE bound 0.
    return [
        *sweep("select", "argmax", 0.0, _argmax_case, [dict(rows=r, cols=c) for r, c in ARGMAX_SHAPES],
               quick=[dict(rows=5, cols=1000)]),
        *sweep("select", "argmax", 0.0, _argmax_case, [dict(rows=r, cols=c, ties=True) for r, c in ARGMAX_TIED_SHAPES],
               quick=[dict(rows=3, cols=40_000, ties=True)]),
        *sweep("select", "topk", 0.0, _topk_case, [dict(rows=r, cols=c, k=k) for r, c, k in TOPK_CASES],
               quick=[dict(rows=5, cols=1000, k=64), dict(rows=1, cols=152_064, k=50)]),
        *sweep("select", "topk", 0.0, _topk_case, [dict(rows=r, cols=c, k=k, ties=True) for r, c, k in TOPK_TIED_CASES]),
    ]
