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


# -- registry cases (ops/registry.py) --------------------------------------------------------------

def _copy_case(rng, words):
    """`words` 16-byte words of random bits, so that any change of a bit shows."""
    src = rng.integers(0, 2**32, size=4 * words, dtype=np.uint64).astype(np.uint32)
    out = padded_output((4 * words,), "u32")
    copy(runtime().upload(src), out)
    return out.numpy(), copy_ref(src)


def _rows_at_step_case(rng, t, f, rows, start):
    """T rows of random bits into a [rows, F] buffer at `start`; rows past its end dropped. Exact."""
    src = rng.integers(0, 2**32, size=(t, f), dtype=np.uint64).astype(np.uint32)
    dst0 = rng.integers(0, 2**32, size=(rows, f), dtype=np.uint64).astype(np.uint32)
    out = padded_output((rows, f), "u32")
    rt = runtime()
    rt.write(out, dst0)
    rows_at_step(rt.upload(src), out, rt.upload(np.array([start, 0, 0, 0], np.uint32)))
    return out.numpy(), rows_at_step_ref(src, dst0, start)


def cases():
    # Around one workgroup's WG * PER_THREAD words, and a tail past whole workgroups. Exact: bound 0.
    return (sweep("copy", "copy", 0.0, _copy_case,
                  [dict(words=n) for n in (1, 3, 1023, WG * PER_THREAD, 1025, 4099, 100_003)], quick=[dict(words=4099)])
            # Ragged rows and widths, a step that runs past the end, one that starts on the last row.
            + sweep("copy", "rows_at_step", 0.0, _rows_at_step_case,
                    [dict(t=3, f=5, rows=10, start=2), dict(t=1, f=7, rows=4, start=3), dict(t=4, f=3, rows=5, start=3),
                     dict(t=2, f=9, rows=6, start=6), dict(t=67, f=259, rows=300, start=31)],
                    quick=[dict(t=67, f=259, rows=300, start=31)]))
