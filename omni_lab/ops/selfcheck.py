"""A quick check of every kernel against its numpy reference on one small ragged case each.

Run by `omni-lab selfcheck` and at the start of `omni-lab demo`: on a new adapter it says in seconds
whether our kernels compute what they should there. The full sweeps live in tests/.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..gpu import bf16_bits, bf16_to_f32, runtime


@dataclass
class CheckResult:
    op: str
    nmse: float
    bound: float
    seconds: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.nmse)) and self.nmse <= self.bound


def nmse(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sum((a - b) ** 2) / max(float(np.sum(b * b)), 1e-300))


def _linear_cases(rng) -> list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray]], float]]:
    from . import linear

    rt = runtime()
    cases = []
    for dtype in ("f32", "f16", "bf16"):
        w = rng.standard_normal((67, 136)).astype(np.float32)
        host = {"f32": w, "f16": w.astype(np.float16), "bf16": bf16_bits(w)}[dtype]
        seen = {"f32": w, "f16": w.astype(np.float16).astype(np.float32), "bf16": bf16_to_f32(bf16_bits(w))}[dtype]
        x1 = rng.standard_normal(136).astype(np.float32)
        xm = rng.standard_normal((13, 136)).astype(np.float32)
        cases.append((f"matvec.{dtype}", lambda h=host, s=seen, x=x1, d=dtype: (
            linear.matvec(rt.upload(x), rt.upload(h, d)).numpy(), linear.matvec_ref(x, s)), 1e-10))
        cases.append((f"matmul.{dtype}", lambda h=host, s=seen, x=xm, d=dtype: (
            linear.matmul(rt.upload(x), rt.upload(h, d)).numpy(), linear.matmul_ref(x, s)), 1e-10))
    return cases


CASE_SOURCES = [_linear_cases]


def run_selfcheck(seed: int = 0) -> list[CheckResult]:
    rng = np.random.default_rng(seed)
    results = []
    for source in CASE_SOURCES:
        for name, fn, bound in source(rng):
            t0 = time.perf_counter()
            ours, ref = fn()
            results.append(CheckResult(name, nmse(ours, ref), bound, time.perf_counter() - t0))
    return results
