"""Metrics against hand-checked values, bounds, and first divergence on synthetic activation sets."""

import json
import math

import numpy as np
import pytest

from omni_lab.compare import Bounds, compare_sets, metrics, per_token_metrics
from omni_lab.reference import dense_qwen3_names


def synthetic_set(rng, layers=8, tokens=5, hidden=16):
    return {n: rng.standard_normal((tokens, hidden)).astype(np.float32) for n in dense_qwen3_names(layers)}


def test_identical_arrays():
    a = np.arange(12, dtype=np.float32).reshape(3, 4) - 5
    m = metrics(a, a.copy())
    assert m == {"mse": 0.0, "cosine": 1.0, "nmse": 0.0, "max_abs": 0.0}


def test_hand_checked_values():
    # ours = [1, 2], ref = [1, 0]: d = [0, 2]; mse 4/2; nmse 4/1; cos 1/sqrt(5); max 2
    m = metrics(np.array([[1.0, 2.0]]), np.array([[1.0, 0.0]]))
    assert m["mse"] == 2.0 and m["nmse"] == 4.0 and m["max_abs"] == 2.0
    assert m["cosine"] == pytest.approx(1 / math.sqrt(5), rel=1e-15)


def test_orthogonal_and_opposite():
    assert metrics([[1.0, 0.0]], [[0.0, 3.0]])["cosine"] == 0.0
    assert metrics([[1.0, -2.0]], [[-1.0, 2.0]])["cosine"] == pytest.approx(-1.0)
    assert metrics([[2.0, 4.0]], [[1.0, 2.0]])["cosine"] == pytest.approx(1.0)  # scale-blind, unlike nmse
    assert metrics([[2.0, 4.0]], [[1.0, 2.0]])["nmse"] == pytest.approx(1.0)


def test_zero_and_nonfinite_edges():
    z = np.zeros((2, 3))
    assert metrics(z, z)["cosine"] == 1.0 and metrics(z, z)["nmse"] == 0.0
    assert metrics(np.ones((2, 3)), z)["nmse"] == math.inf and metrics(np.ones((2, 3)), z)["cosine"] == 0.0
    bad = np.ones((2, 3))
    bad[1, 1] = np.nan
    m = metrics(bad, np.ones((2, 3)))
    assert all(math.isnan(v) for v in m.values())
    assert Bounds().violations(m)  # NaN never passes


def test_per_token():
    ref = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    ours = np.array([[1.0, 0.0], [1.0, 0.0], [3.0, 4.5]])
    pt = per_token_metrics(ours, ref)
    np.testing.assert_allclose(pt["mse"], [0.0, 1.0, 0.125])
    np.testing.assert_allclose(pt["cosine"], [1.0, 0.0, (9 + 18) / (5 * math.sqrt(9 + 20.25))])
    np.testing.assert_allclose(pt["nmse"], [0.0, 2.0, 0.25 / 25])
    np.testing.assert_allclose(pt["max_abs"], [0.0, 1.0, 0.5])


def test_bounds_settable():
    m = {"mse": 2e-5, "cosine": 0.9995, "nmse": 1e-3, "max_abs": 0.1}
    assert Bounds().violations(m) == ["mse 2e-05 >= 1e-05"]
    assert Bounds(mse=1e-4).violations(m) == []
    assert Bounds(mse=None, cosine=0.9999).violations(m) == ["cosine 0.9995 <= 0.9999"]
    assert len(Bounds(nmse=1e-4, max_abs=0.01).violations(m)) == 3


def test_first_divergence_at_layer_5(rng):
    ref = synthetic_set(rng)
    ours = {k: v + np.float32(1e-5) * rng.standard_normal(v.shape).astype(np.float32) for k, v in ref.items()}
    # The bug sits in layer 5's residual add: everything from model.layers.5 on is off.
    names = list(ref)
    for n in names[names.index("model.layers.5"):]:
        ours[n] = ours[n] + 0.5 * rng.standard_normal(ours[n].shape).astype(np.float32)
    c = compare_sets(ours, ref)
    fd = c.first_divergence
    assert fd.name == "model.layers.5"
    assert fd.input_name == "model.layers.5.mlp" and fd.input_row.within_bounds
    np.testing.assert_array_equal(fd.ours_input, ours["model.layers.5.mlp"])
    np.testing.assert_array_equal(fd.ref_input, ref["model.layers.5.mlp"])
    np.testing.assert_array_equal(fd.ours, ours["model.layers.5"])
    assert [r.name for r in c.rows] == names
    assert all(r.within_bounds for r in c.rows[: names.index("model.layers.5")])
    assert not c.passed and len(c.failures) == len(names) - names.index("model.layers.5")
    assert "model.layers.5" in c.summary()

    j = c.to_json()
    json.dumps(j, allow_nan=False)  # strict JSON
    assert j["first_divergence"] == "model.layers.5"
    assert [a["name"] for a in j["activations"]] == names
    assert set(j["activations"][0]) >= {"name", "mse", "cosine", "nmse", "max_abs", "within_bounds"}


def test_one_token_corrupted_is_located(rng):
    ref = synthetic_set(rng, layers=3, tokens=7)
    ours = {k: v.copy() for k, v in ref.items()}
    ours["model.layers.1.self_attn"][4] *= -1
    c = compare_sets(ours, ref)
    assert c.first_divergence.name == "model.layers.1.self_attn"
    assert c.first_divergence.worst_token == 4
    assert c.to_json()["first_divergence_detail"]["worst_token"] == 4


def test_missing_names_and_shape_mismatch(rng):
    ref = synthetic_set(rng, layers=2)
    ours = {k: v.copy() for k, v in ref.items()}
    del ours["model.layers.0.mlp"]
    ours["model.layers.1.mlp.router"] = np.zeros((5, 4), np.float32)
    ours["model.layers.1.self_attn"] = ours["model.layers.1.self_attn"][:, :8]
    c = compare_sets(ours, ref)
    assert c["model.layers.0.mlp"].status == "missing_in_ours" and c["model.layers.0.mlp"].within_bounds is None
    assert c.rows[-1].name == "model.layers.1.mlp.router" and c.rows[-1].status == "missing_in_ref"
    assert c["model.layers.1.self_attn"].status == "shape_mismatch"
    assert c.first_divergence.name == "model.layers.1.self_attn"
    assert not c.passed
    json.dumps(c.to_json(), allow_nan=False)


def test_nan_in_ours_fails_and_serialises(rng):
    ref = synthetic_set(rng, layers=2)
    ours = {k: v.copy() for k, v in ref.items()}
    ours["model.norm"][0, 0] = np.nan
    c = compare_sets(ours, ref)
    assert c.first_divergence.name == "model.norm"
    row = c.to_json()["activations"][-2]
    assert row["mse"] is None and row["nonfinite_ours"] == 1 and row["within_bounds"] is False


def test_overrides(rng):
    ref = synthetic_set(rng, layers=2)
    ours = {k: v + np.float32(0.01) for k, v in ref.items()}
    assert compare_sets(ours, ref).first_divergence.name == "model.embed_tokens"
    c = compare_sets(ours, ref, Bounds(mse=1e-3), overrides={"lm_head": Bounds(mse=1e-6)})
    assert c.first_divergence.name == "lm_head"
