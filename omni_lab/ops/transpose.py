"""2-D transpose of f32 tensors: [R, C] -> [C, R], for code2wav's change between [T, C] (its transformer,
ConvNeXt's LayerNorm and linears) and channels-first [C, T] (its convolutions). ops/copy.py copies bytes
only. A tensor past the storage-binding limit is moved in blocks of (x rows) x (y rows) (ops/pieces.py)."""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect
from .pieces import rows_per_window, spans, window
from .registry import Case, padded_output, sweep

TILE = 16


def transpose(x: Tensor, out: Tensor | None = None) -> Tensor:
    """x [R, C] f32 -> out [C, R] f32 (not in place)."""
    kn = "transpose"
    dtype_in(kn, "x", x, ("f32",))
    expect(kn, len(x.shape) == 2, "x must be [R, C]", x=x)
    r, c = x.shape
    if out is None:
        out = runtime().empty((c, r), "f32", label=kn)
    expect(kn, out.shape == (c, r) and out.dtype == "f32", f"out must be {(c, r)} f32", out=out, x=x)
    expect(kn, out.buffer is not x.buffer, "out must not share x's buffer", out=out, x=x)
    if x.numel == 0:
        return out
    kern = runtime().kernel("transpose", TILE=TILE)
    for r0, r1 in spans(0, r, rows_per_window(kn, "x", x, c)):
        xw, x_off = window(x, r0 * c, (r1 - r0) * c)
        for c0, c1 in spans(0, c, rows_per_window(kn, "out", out, r)):
            yw, y_off = window(out, c0 * r, (c1 - c0) * r)
            tiles_c = -(-(c1 - c0) // TILE)
            n_tiles = -(-(r1 - r0) // TILE) * tiles_c
            kern(n_tiles, pack_params(r, c, r0, r1, c0, c1, x_off, y_off, tiles_c), xw, yw)
    return out


def transpose_ref(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x).T)


def _case(rng, r: int, c: int):
    x = rng.standard_normal((r, c)).astype(np.float32)
    out = padded_output((c, r))
    transpose(runtime().upload(x), out=out)
    return out.numpy(), transpose_ref(x)


SWEEP = [(1, 1), (3, 7), (17, 33), (100, 1024), (257, 96), (4099, 5), (2, 20_003)]


def cases() -> list[Case]:
    # A copy: the result is exact, so the bound is 0.
    grid = [dict(r=r, c=c) for r, c in SWEEP]
    return sweep("transpose", "transpose", 0.0, _case, grid, quick=[grid[2]])
