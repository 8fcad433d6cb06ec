"""Helpers for kernel tests in the spirit of llama.cpp's test-backend-ops: NMSE against a numpy
reference with per-op bounds, and sentinel padding that catches writes outside an output."""

from __future__ import annotations

import numpy as np

from omni_lab.gpu import Tensor, runtime

# Per-op NMSE bounds (sum((a-b)^2) / sum(b^2)).
NMSE_ELEMENTWISE = 1e-7
NMSE_MATMUL = 5e-4

SENTINEL = np.float32(-7.25e30)
PAD = 64  # elements of sentinel on each side of an output


def nmse(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != reference {b.shape}"
    assert np.isfinite(a).all(), "output has NaN or Inf"
    denom = float(np.sum(b * b))
    return float(np.sum((a - b) ** 2)) / (denom if denom > 0 else 1.0)


def padded_output(shape, dtype: str = "f32") -> Tensor:
    """An output tensor inside a buffer whose PAD elements before and after hold a sentinel."""
    rt = runtime()
    n = int(np.prod(shape))
    align = rt.gpu.offset_alignment
    lead = max(PAD * 4, align) // align * align  # bytes before the output, aligned for binding
    host = np.full(lead // 4 + n + PAD, SENTINEL, dtype=np.float32)
    if dtype in ("i32", "u32"):
        host = host.view(np.int32 if dtype == "i32" else np.uint32)
    whole = rt.upload(host)
    return whole.view(tuple(shape), dtype, offset=lead)


def check_sentinels(out: Tensor) -> None:
    """Assert nothing was written around `out` (reads the whole padded buffer)."""
    n_words = out.buffer.size // 4
    whole = Tensor(out.buffer, (n_words,), "u32").numpy()
    lead = out.offset // 4
    n = out.nbytes // 4
    sentinel = np.array([SENTINEL], dtype=np.float32).view(np.uint32)[0]
    before, after = whole[:lead], whole[lead + n: lead + n + PAD]
    assert (before == sentinel).all(), f"kernel wrote {int((before != sentinel).sum())} words before its output"
    assert (after == sentinel).all(), f"kernel wrote {int((after != sentinel).sum())} words after its output"


def rand(rng: np.random.Generator, *shape, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)
