"""A quick check of every kernel against its numpy reference on one small ragged case each.

Run by `omni-lab selfcheck` and at the start of `omni-lab demo`: on a new adapter it says in seconds
whether our kernels compute what they should there. The full sweeps live in tests/.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..gpu import runtime


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
        host, seen = linear.stored(rng.standard_normal((67, 136)).astype(np.float32), dtype)
        x1 = rng.standard_normal(136).astype(np.float32)
        xm = rng.standard_normal((13, 136)).astype(np.float32)
        cases.append((f"matvec.{dtype}", lambda h=host, s=seen, x=x1, d=dtype: (
            linear.matvec(rt.upload(x), rt.upload(h, d)).numpy(), linear.matvec_ref(x, s)), 1e-10))
        cases.append((f"matmul.{dtype}", lambda h=host, s=seen, x=xm, d=dtype: (
            linear.matmul(rt.upload(x), rt.upload(h, d)).numpy(), linear.matmul_ref(x, s)), 1e-10))
    return cases


def _q8_cases(rng):
    from ..formats.q8_0 import quantize_q8_0, split_q8_0, upload_q8_0
    from . import q8_0 as q8

    rt = runtime()
    w = rng.standard_normal((67, 160)).astype(np.float32)
    blocks = quantize_q8_0(w)
    wq, wd = split_q8_0(blocks, w.shape)
    qw = upload_q8_0(blocks, w.shape)
    x1 = rng.standard_normal(160).astype(np.float32)
    xm = rng.standard_normal((13, 160)).astype(np.float32)
    return [
        ("q8_matvec.dot4", lambda: (q8.q8_matvec(rt.upload(x1), qw).numpy(), q8.q8_matvec_ref(x1, wq, wd)), 1e-9),
        ("q8_matvec.f32", lambda: (q8.q8_matvec_f32(rt.upload(x1), qw).numpy(), q8.q8_matvec_f32_ref(x1, wq, wd)), 1e-9),
        ("q8_matmul", lambda: (q8.q8_matmul(rt.upload(xm), qw).numpy(), q8.q8_matmul_ref(xm, wq, wd)), 1e-9),
    ]


def _row_op_cases(rng):
    from . import elementwise, norm, select, softmax

    rt = runtime()
    x = rng.standard_normal((5, 203)).astype(np.float32)
    w = rng.standard_normal(203).astype(np.float32)
    return [
        ("rmsnorm", lambda: (norm.rmsnorm(rt.upload(x), rt.upload(w), 1e-6).numpy(), norm.rmsnorm_ref(x, w, 1e-6)), 1e-10),
        ("softmax", lambda: (softmax.softmax(rt.upload(x)).numpy(), softmax.softmax_ref(x)), 1e-10),
        ("swiglu", lambda: (elementwise.swiglu(rt.upload(x), rt.upload(x[::-1].copy())).numpy(),
                            elementwise.swiglu_ref(x, x[::-1].copy())), 1e-9),
        ("argmax", lambda: (select.argmax(rt.upload(x)).numpy().astype(np.float64) + 1, np.argmax(x, -1) + 1.0), 0.0),
    ]


CASE_SOURCES = [_linear_cases, _q8_cases, _row_op_cases]


def run_selfcheck(seed: int = 0) -> list[CheckResult]:
    rng = np.random.default_rng(seed)
    results = []
    for source in CASE_SOURCES:
        for name, fn, bound in source(rng):
            t0 = time.perf_counter()
            ours, ref = fn()
            results.append(CheckResult(name, nmse(ours, ref), bound, time.perf_counter() - t0))
    return results
