"""Numerically stable softmax over the last dim of f32 rows, any length (the 152064-entry vocabulary
included). out may be x (in place)."""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect
from .norm import workgroup_for


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
