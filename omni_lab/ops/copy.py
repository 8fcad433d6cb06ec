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


def copy_ref(src: np.ndarray) -> np.ndarray:
    return src.copy()
