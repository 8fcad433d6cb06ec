"""The op registry (omni_lab/ops/registry.py): every case within its op's NMSE bound of the numpy reference
with the sentinels around its outputs intact, and every compute entry point of shaders/ checked by
`omni-lab selfcheck`, whose quick cases are registry cases too."""

import json

import pytest

from omni_lab.ops import registry

CASES = registry.all_cases()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(rt, rng, case):
    result = registry.check(case, rng)
    assert result.error is None, result.error
    assert result.nmse <= case.bound, f"NMSE {result.nmse:.3g} over the bound {case.bound:.3g}"
    assert result.kernels, "the case dispatched no kernel"


def test_selfcheck_checks_every_entry_point(rt, capsys):
    from omni_lab.cli import main

    status = main(["selfcheck", "--json"])
    report = json.loads(capsys.readouterr().out)
    # lib/tile_gather.wgsl's entry, in all three
    assert {"tiles.main", "tiles_q8.main", "tiles_dot4.main"} <= set(registry.entry_points())
    assert [p["kernel"] for p in report["entry_points"]] == registry.entry_points()
    unchecked = [p["kernel"] for p in report["entry_points"] if p["case"] is None]
    assert not unchecked, f"no quick case dispatches {', '.join(unchecked)}"
    failed = [f"{p['kernel']} ({p['case']}: {p['error'] or p['nmse']})" for p in report["entry_points"] if not p["ok"]]
    assert not failed, f"failed: {'; '.join(failed)}"
    assert status == 0 and report["checked"] == report["total"] == len(registry.entry_points())


def test_subgroup_variants_are_listed_only_where_they_build(rt):
    """shaders/*_sg.wgsl (subgroup operations) do not compile without the adapter's `subgroup` feature, so
    entry_points leaves them out there; each has its workgroup-memory twin of the same entries."""
    plain = registry.entry_points(subgroups=False)
    both = registry.entry_points(subgroups=True)
    sg = [k for k in both if k.split(".")[0].endswith("_sg")]
    assert sg and not any(k.split(".")[0].endswith("_sg") for k in plain)
    assert set(both) == set(plain) | set(sg)
    assert {k.replace("_sg.", ".") for k in sg} <= set(plain)
    assert registry.entry_points() == (both if rt.gpu.has_subgroups else plain)
