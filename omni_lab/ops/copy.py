"""Tensor copy on the GPU (also the copy-bandwidth yardstick of the kernel benchmark)."""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import expect

WG = 256
PER_THREAD = 4  # matches shaders/copy.wgsl


def copy(src: Tensor, out: Tensor) -> Tensor:
    """out <- src, byte for byte; both 16-byte multiples in size, same size, each under the binding limit."""
    expect("copy", src.nbytes == out.nbytes and src.nbytes % 16 == 0,
           "src and out must have the same size, a multiple of 16 bytes", src=src, out=out)
    words = src.nbytes // 16
    runtime().kernel("copy", WG=WG)(-(-words // (WG * PER_THREAD)), pack_params(words), src, out)
    return out


def rows_at_step(src: Tensor, dst: Tensor, step: Tensor) -> Tensor:
    """dst rows start .. start + T - 1 <- src [T, F] (start = step[0] on the GPU); rows at or past dst's
    end are dropped. src and dst have 4-byte elements and the same row width."""
    expect("rows_at_step", len(src.shape) == 2 and len(dst.shape) == 2 and src.shape[1] == dst.shape[1]
           and src.nbytes == src.numel * 4 and dst.dtype == src.dtype,
           "src [T, F] and dst [rows, F] must share F and a 4-byte dtype", src=src, dst=dst)
    expect("rows_at_step", step.dtype == "u32" and step.numel >= 1, "step must be u32 [4]", step=step)
    t, f = src.shape
    if t:
        runtime().kernel("copy", "rows_at_step", WG=WG)(-(-(t * f) // WG), pack_params(t * f, f, dst.shape[0]),
                                                        src, dst, step)
    return dst


def copy_ref(src: np.ndarray) -> np.ndarray:
    return src.copy()


def rows_at_step_ref(src: np.ndarray, dst: np.ndarray, start: int) -> np.ndarray:
    out = dst.copy()
    n = max(0, min(len(src), len(dst) - start))
    out[start:start + n] = src[:n]
    return out
