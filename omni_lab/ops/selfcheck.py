"""A quick check of every kernel entry point against its numpy reference: the op registry's quick cases.

Run by `omni-lab selfcheck` and at the start of `omni-lab demo`: on a new adapter it says in seconds
whether our kernels compute what they should there. Which entry points of shaders/ the cases reached is
recorded as they dispatch, so an entry point no quick case reaches shows as unchecked. The full sweeps are
the registry's other cases (tests/test_ops.py).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from ..gpu import runtime
from .registry import CheckResult, check, entry_points, quick_cases

__all__ = ["CheckResult", "run_selfcheck", "entry_point_report"]


def run_selfcheck(seed: int = 0) -> list[CheckResult]:
    """One CheckResult per quick case (`op` is the case's id), each with the kernels it dispatched."""
    results = []
    for case in quick_cases():
        rng = np.random.default_rng([seed, zlib.crc32(case.id.encode())])  # a case's inputs do not depend on the others
        with runtime().recording() as kernels:  # what a case that raises had dispatched, too
            try:
                result = check(case, rng)
            except Exception as e:  # one kernel failing on an adapter must not hide the others' results
                result = CheckResult(case.id, math.nan, case.bound, 0.0, frozenset(kernels), f"{type(e).__name__}: {e}", case)
        results.append(result)
    return results


def _margin(r: CheckResult) -> float:
    """How close a result came to failing: nmse / bound, inf for a failure."""
    if not r.ok:
        return math.inf
    return r.nmse / r.bound if r.bound else 0.0


def entry_point_report(results: list[CheckResult]) -> list[dict]:
    """For each compute entry point of shaders/ (registry.entry_points), the result of the case that came
    closest to failing among those that dispatched it: kernel, ok, nmse, bound, case, op, params, error.
    An entry point no case dispatched has case None and ok False."""
    report = []
    for kernel in entry_points():
        mine = [r for r in results if kernel in r.kernels]
        if not mine:
            report.append({"kernel": kernel, "ok": False, "nmse": None, "bound": None, "case": None, "op": None,
                           "params": None, "error": "no quick case dispatched it"})
            continue
        r = max(mine, key=_margin)
        report.append({"kernel": kernel, "ok": r.ok, "nmse": r.nmse if math.isfinite(r.nmse) else None,
                       "bound": r.bound, "case": r.op, "op": r.case.name, "params": r.case.params, "error": r.error})
    return report
