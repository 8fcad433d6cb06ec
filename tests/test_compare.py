"""Metrics against hand-checked values, bounds, and first divergence on synthetic activation sets."""

import json
import math

import numpy as np
import pytest

from omni_lab.activations import Activation
from omni_lab.compare import Bounds, WaveformBounds, compare_sets, metrics, per_token_metrics
from omni_lab.compare.quant import expert_agreement
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


# ---- typed activations ----------------------------------------------------------------------------------
def router(rng, tokens=6, k=4, experts=16):
    """A router's [T, 2k]: k distinct expert ids per token, then their (renormalised) weights."""
    ids = np.stack([rng.choice(experts, k, replace=False) for _ in range(tokens)]).astype(np.float32)
    w = rng.random((tokens, k)).astype(np.float32)
    return np.concatenate([ids, w / w.sum(axis=1, keepdims=True)], axis=1)


def test_ids_are_counted_exactly_where_cosine_would_pass(rng):
    # codec codes as the vocoder takes them, [16 groups, 250 frames]: one code 3 -> 4 at frame 137
    ref = {"codes": rng.integers(0, 2048, (16, 250)).astype(np.float32)}
    ref["codes"][5, 137] = 3
    ours = {"codes": ref["codes"].copy()}
    ours["codes"][5, 137] = 4
    assert compare_sets(ours, ref, Bounds(mse=None)).passed  # read as floats, cosine sees nothing
    spec = Activation("codes", (16, 250), "CT", "ids")
    c = compare_sets(ours, ref, specs=[spec])
    row = c["codes"]
    assert (row.equal, row.total) == (3999, 4000) and row.within_bounds is False
    assert row.violations == ["1 of 4000 ids differ"]
    assert row.first_unequal == 137 and c.first_divergence.worst_token == 137
    assert math.isnan(row.cosine) and row.per_token is None
    j = c.to_json()["activations"][0]
    assert (j["kind"], j["layout"], j["equal"], j["total"], j["cosine"]) == ("ids", "CT", 3999, 4000, None)
    json.dumps(c.to_json(), allow_nan=False)
    same = compare_sets({"codes": ref["codes"].astype(np.int64)}, ref, specs={"codes": spec})["codes"]
    assert same.within_bounds and (same.equal, same.total, same.first_unequal) == (4000, 4000, None)


def test_routing_ids_and_weights_must_both_hold(rng):
    names = ["model.layers.0.self_attn", "model.layers.0.mlp.router", "model.layers.0.mlp"]
    ref = {names[0]: rng.standard_normal((6, 8)).astype(np.float32), names[1]: router(rng),
           names[2]: rng.standard_normal((6, 8)).astype(np.float32)}
    specs = [Activation(names[0], (6, 8)), Activation(names[1], (6, 8), kind="routing"), Activation(names[2], (6, 8))]

    one_id = {n: a.copy() for n, a in ref.items()}
    r = one_id[names[1]]
    r[4, 2] = next(e for e in range(16) if e not in r[4, :4])  # token 4 picks another expert, same weights
    c = compare_sets(one_id, ref, specs=specs)
    row = c[names[1]]
    assert row.violations == ["1 of 24 expert ids differ"] and row.within_bounds is False
    assert row.mse == 0.0 and row.cosine == 1.0  # the weights agree exactly
    assert (row.equal, row.total, row.first_unequal) == (23, 24, 4)
    assert c.first_divergence.name == names[1] and c.first_divergence.worst_token == 4
    assert c.first_divergence.input_name == names[0] and c.first_divergence.input_row.within_bounds
    assert compare_sets(one_id, ref).first_divergence.name == names[1]  # untyped, the mse sees it too
    q = expert_agreement(ref[names[1]], one_id[names[1]])  # the MoE statistics read the same ids
    assert q.exact_order == row.equal / row.total and q.tokens_all_same == 5 / 6

    weights_off = {n: a.copy() for n, a in ref.items()}
    weights_off[names[1]][:, 4:] += np.float32(0.01)
    row = compare_sets(weights_off, ref, specs=specs)[names[1]]
    assert (row.equal, row.total) == (24, 24) and row.within_bounds is False
    assert row.violations == [f"mse {row.mse:.3g} >= 1e-05"] and row.mse == pytest.approx(1e-4, rel=1e-3)
    assert row.per_token["mse"].shape == (6,)
    assert compare_sets(ref, ref, specs=specs).passed


def test_channels_by_time_is_judged_per_time_step(rng):
    ref = {"code2wav.decoder.2": rng.standard_normal((8, 50)).astype(np.float32)}
    ours = {"code2wav.decoder.2": ref["code2wav.decoder.2"].copy()}
    ours["code2wav.decoder.2"][:, 37] += 0.5  # every channel of one time step
    ours["code2wav.decoder.2"][3, :] += 0.01  # and a smaller error on one channel at every step
    c = compare_sets(ours, ref, specs=[Activation("code2wav.decoder.2", (8, 50), "CT")])
    row = c["code2wav.decoder.2"]
    assert row.per_token["nmse"].shape == (50,) and int(np.argmax(row.per_token["nmse"])) == 37
    assert c.first_divergence.worst_token == 37 and c.to_json()["activations"][0]["worst_token"] == 37
    assert compare_sets(ours, ref)["code2wav.decoder.2"].per_token["nmse"].shape == (8,)  # untyped: rows
    assert row.nmse == compare_sets(ours, ref)["code2wav.decoder.2"].nmse  # the whole-tensor metrics are the same


def test_waveform_has_snr_and_no_per_token(rng):
    ref = np.sin(np.arange(4800) * 0.05).astype(np.float32)
    noise = rng.standard_normal(ref.shape)
    noise *= np.sqrt((ref.astype(np.float64) ** 2).sum() / (noise ** 2).sum()) * 10 ** (-40 / 20)  # 40 dB exactly
    ours = (ref + noise).astype(np.float32)
    spec = Activation("code2wav", (4800,), "N", "waveform")
    # A waveform is judged by its own bounds; 40 dB passes 30 dB ones (and breaks the float32 defaults, test_audio)
    loose = Bounds(mse=None, cosine=0.999, waveform=WaveformBounds(snr_db=30, si_sdr_db=30, mel_distance_db=None))
    row = compare_sets({"code2wav": ours}, {"code2wav": ref}, loose, specs=[spec])["code2wav"]
    d = ours.astype(np.float64) - ref
    assert row.snr_db == pytest.approx(10 * math.log10((ref.astype(np.float64) ** 2).sum() / (d * d).sum()), rel=1e-12)
    assert row.snr_db == pytest.approx(40, abs=0.01) and row.within_bounds and row.per_token is None
    assert row.to_json()["snr_db"] == row.snr_db
    exact = compare_sets({"code2wav": ref}, {"code2wav": ref}, specs=[spec])["code2wav"]
    assert exact.snr_db == math.inf and exact.to_json()["snr_db"] is None  # strict JSON: nmse 0 says it
    flat = compare_sets({"code2wav": ref[None]}, {"code2wav": ref[None]}, specs=[spec])["code2wav"]
    assert flat.status == "shape_mismatch" and flat.violations == ["not a flat signal [samples]: (1, 4800)"]


def test_specs_come_from_the_reference_manifest(rng):
    ref = {"model.layers.0.mlp.router": router(rng)}
    ours = {"model.layers.0.mlp.router": ref["model.layers.0.mlp.router"].copy()}
    ours["model.layers.0.mlp.router"][0, 0] += 1  # an expert id off by one
    stored = {"activations": {"model.layers.0.mlp.router": {"shape": [6, 8], "layout": "TF", "kind": "routing"}}}
    row = compare_sets(ours, ref, manifest=stored)["model.layers.0.mlp.router"]
    assert row.kind == "routing" and row.violations == ["1 of 24 expert ids differ"]
    untyped = compare_sets(ours, ref, manifest=stored, specs={})["model.layers.0.mlp.router"]
    assert untyped.kind == "float" and untyped.total is None  # explicit specs win over the stored ones
