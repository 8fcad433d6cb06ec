"""Numerically stable softmax over the last dim of f32 rows, any length (the 152064-entry vocabulary
included). out may be x (in place)."""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect
from .norm import workgroup_for
from .registry import NMSE_ELEMENTWISE, padded_output, rand, require, sweep


def softmax(x: Tensor, out: Tensor | None = None) -> Tensor:
    """softmax(x, dim=-1). x [..., C] f32 -> same shape f32."""
    dtype_in("softmax", "x", x, ("f32",))
    expect("softmax", len(x.shape) >= 1 and x.shape[-1] > 0, "x must be [..., C] with C > 0", x=x)
    if out is None:
        out = runtime().empty(x.shape, "f32", label="softmax")
    expect("softmax", out.shape == x.shape and out.dtype == "f32", f"out must be {x.shape} f32", out=out, x=x)
    c = x.shape[-1]
    rows = x.numel // c
    if rows:
        runtime().kernel("softmax", WG=workgroup_for(c))(rows, pack_params(rows, c), x, out)
    return out


def softmax_ref(x: np.ndarray) -> np.ndarray:
    x64 = np.asarray(x, dtype=np.float64)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


# -- registry cases (ops/registry.py) --------------------------------------------------------------

# exp to ~1.3 ulp and a tree-reduced f32 sum: NMSE near 1e-14.
NMSE_BOUND = NMSE_ELEMENTWISE * 1e-4
SHAPES = [(1, 1), (3, 7), (7, 33), (33, 100), (2, 257), (5, 1000), (300, 128), (3, 4099), (1, 152_064), (2, 200_003)]


def _softmax_case(rng, rows, cols, scale):
    rt = runtime()
    x = rand(rng, rows, cols, scale=scale) + 1000.0 * rng.standard_normal((rows, 1)).astype(np.float32)  # row offsets: stability
    out = padded_output((rows, cols))
    softmax(rt.upload(x), out=out)
    y = out.numpy()
    sums = y.sum(axis=-1)
    require(np.allclose(sums, 1.0, rtol=1e-5, atol=0), f"row sums {sums.min()} .. {sums.max()}, not 1 to 1e-5")
    return y, softmax_ref(x)


def cases():
    return sweep("softmax", "softmax", NMSE_BOUND, _softmax_case,
                 [dict(rows=r, cols=c, scale=s) for r, c in SHAPES for s in (1.0, 30.0)],
                 quick=[dict(rows=5, cols=1000, scale=30.0)])
