"""Tensor copy on the GPU (also the copy-bandwidth yardstick of the kernel benchmark)."""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import expect
from .registry import padded_output, sweep

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


# -- registry cases (ops/registry.py) --------------------------------------------------------------

def _copy_case(rng, words):
    """`words` 16-byte words of random bits, so that any change of a bit shows."""
    src = rng.integers(0, 2**32, size=4 * words, dtype=np.uint64).astype(np.uint32)
    out = padded_output((4 * words,), "u32")
    copy(runtime().upload(src), out)
    return out.numpy(), copy_ref(src)


def cases():
    # Around one workgroup's WG * PER_THREAD words, and a tail past whole workgroups. Exact: bound 0.
    return sweep("copy", "copy", 0.0, _copy_case,
                 [dict(words=n) for n in (1, 3, 1023, WG * PER_THREAD, 1025, 4099, 100_003)], quick=[dict(words=4099)])
