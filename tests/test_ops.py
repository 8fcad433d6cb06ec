"""The op registry (omni_lab/ops/registry.py): every case within its op's NMSE bound of the numpy reference
with the sentinels around its outputs intact."""

import pytest

from omni_lab.ops import registry

CASES = registry.all_cases()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(rt, rng, case):
    result = registry.check(case, rng)
    assert result.error is None, result.error
    assert result.nmse <= case.bound, f"NMSE {result.nmse:.3g} over the bound {case.bound:.3g}"
    assert result.kernels, "the case dispatched no kernel"
