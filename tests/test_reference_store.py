"""The reference store: round trip in order, manifest contents, refusal of a mismatched reference."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from omni_lab.activations import Activation, specs_by_name
from omni_lab.compare import compare_sets
from omni_lab.reference import ReferenceMismatch, hash_model, load_reference, save_reference


def fake_checkpoint(path, seed=0, big=False):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 8}))
    rng = np.random.default_rng(seed)
    n = (3 << 20) // 4 if big else 64  # 3 MiB exercises the first/last-MiB path of the fast hash
    save_file({"w": rng.standard_normal(n).astype(np.float32)}, str(path / "model.safetensors"))
    return path


def acts(rng):
    # Deliberately not alphabetical, and one name that np.savez's keyword form could not take.
    names = ["model.embed_tokens", "model.layers.0.self_attn", "model.layers.0.mlp", "model.layers.0", "file",
             "model.norm", "lm_head"]
    return {n: rng.standard_normal((4, 6)).astype(np.float32) for n in names}


IDS = [151644, 872, 198, 9707, 11]


def test_round_trip(tmp_path, rng):
    model = fake_checkpoint(tmp_path / "ckpt")
    a = acts(rng)
    out = save_reference("tiny", a, model_path=model, inputs={"input_ids": torch.tensor([IDS])}, dtype="float32",
                         root=tmp_path / "refs")
    assert out == tmp_path / "refs" / "tiny"
    assert sorted(p.name for p in (tmp_path / "refs").iterdir()) == ["tiny"]  # no temporary left behind
    ref = load_reference(out, expect_model=model, expect_inputs={"input_ids": IDS}, expect_dtype="float32")
    assert ref.names == list(a)
    for n in a:
        assert ref[n].dtype == np.float32
        np.testing.assert_array_equal(ref[n], a[n])
    m = ref.manifest
    assert m["inputs"] == {"input_ids": IDS} and m["dtype"] == "float32" and m["names"] == list(a)
    assert m["model"]["hash_mode"] == "full" and len(m["model"]["weights_sha256"]) == 64
    assert m["model"]["config_sha256"] and m["captured_at"]
    assert set(m["versions"]) >= {"torch", "transformers", "numpy", "omni_lab"}
    # by name under the root, and with a batch-of-1 tensor as the expected ids
    load_reference("tiny", root=tmp_path / "refs", expect_inputs={"input_ids": torch.tensor([IDS])})


def test_mismatched_model_is_refused(tmp_path, rng):
    out = save_reference("r", acts(rng), model_path=fake_checkpoint(tmp_path / "a", seed=0),
                         inputs={"input_ids": IDS}, dtype="float32", root=tmp_path)
    other = fake_checkpoint(tmp_path / "b", seed=1)
    with pytest.raises(ReferenceMismatch) as e:
        load_reference(out, expect_model=other)
    assert [d[0] for d in e.value.differences] == ["model.weights_sha256"]
    stored = json.loads((out / "manifest.json").read_text())["model"]["weights_sha256"]
    assert stored in str(e.value) and hash_model(other)["weights_sha256"] in str(e.value)

    (other / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 16}))
    with pytest.raises(ReferenceMismatch, match="model.config_sha256"):
        load_reference(out, expect_model=other)


def test_mismatched_inputs_are_refused(tmp_path, rng):
    model = fake_checkpoint(tmp_path / "ckpt")
    out = save_reference("r", acts(rng), model_path=model, inputs={"input_ids": IDS}, dtype="bfloat16",
                         root=tmp_path)
    with pytest.raises(ReferenceMismatch) as e:
        load_reference(out, expect_model=model, expect_inputs={"input_ids": IDS[:3] + [7] + IDS[4:]})
    msg = str(e.value)
    assert "inputs.input_ids" in msg and "first difference at index 3" in msg
    with pytest.raises(ReferenceMismatch, match=r"inputs.audio: stored '\(not stored\)'"):
        load_reference(out, expect_inputs={"input_ids": IDS, "audio": np.zeros(16000, np.float32)})
    with pytest.raises(ReferenceMismatch, match="dtype: stored 'bfloat16', given 'float32'"):
        load_reference(out, expect_dtype="float32")


def test_large_inputs_are_hashed(tmp_path, rng):
    audio = rng.standard_normal(24000).astype(np.float32)
    out = save_reference("r", acts(rng), model_path=fake_checkpoint(tmp_path / "c"),
                         inputs={"input_ids": IDS, "audio": audio}, dtype="float32", root=tmp_path)
    stored = json.loads((out / "manifest.json").read_text())["inputs"]["audio"]
    assert stored["shape"] == [24000] and len(stored["sha256"]) == 64
    load_reference(out, expect_inputs={"input_ids": IDS, "audio": audio.copy()})
    audio[100] += 1e-3
    with pytest.raises(ReferenceMismatch, match="inputs.audio"):
        load_reference(out, expect_inputs={"input_ids": IDS, "audio": audio})


def test_fast_hash_mode(tmp_path, rng):
    model = fake_checkpoint(tmp_path / "big", big=True)
    full, fast = hash_model(model), hash_model(model, "fast")
    assert full["weights_sha256"] != fast["weights_sha256"]
    out = save_reference("r", acts(rng), model_path=model, hash_mode="fast", inputs={"input_ids": IDS},
                         dtype="float32", root=tmp_path)
    load_reference(out, expect_model=model)  # re-hashed in the stored (fast) mode
    with pytest.raises(ReferenceMismatch, match="model.hash_mode"):
        load_reference(out, expect_model=full)
    # Documented blind spot of the fast mode: a change in the middle of a large file.
    st = model / "model.safetensors"
    data = bytearray(st.read_bytes())
    data[len(data) // 2] ^= 0xFF
    st.write_bytes(bytes(data))
    load_reference(out, expect_model=model)
    assert hash_model(model)["weights_sha256"] != full["weights_sha256"]


def test_gguf_file_hash(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + bytes(1000))
    h = hash_model(f)
    assert h["config_sha256"] is None and h["weight_files"] == [["m.gguf", 1004]]


def test_overwrite_is_atomic_swap(tmp_path, rng):
    model = fake_checkpoint(tmp_path / "ckpt")
    kw = dict(model_path=model, inputs={"input_ids": IDS}, dtype="float32", root=tmp_path / "refs")
    save_reference("r", {"x": np.zeros((2, 2))}, **kw)
    save_reference("r", {"y": np.ones((3, 2))}, **kw)
    assert load_reference(tmp_path / "refs" / "r").names == ["y"]
    assert [p.name for p in (tmp_path / "refs").iterdir()] == ["r"]
    with pytest.raises(FileExistsError):
        save_reference("r", {"y": np.ones((3, 2))}, overwrite=False, **kw)
    with pytest.raises(ValueError, match=r"\[tokens, features\]"):
        save_reference("s", {"y": np.ones(3)}, **kw)
    assert [p.name for p in (tmp_path / "refs").iterdir()] == ["r"]


def typed_acts(rng):
    ids = np.stack([rng.choice(16, 4, replace=False) for _ in range(5)])
    w = rng.random((5, 4))
    acts = {"thinker.model.language_model.layers.0.mlp.router": np.concatenate([ids, w / w.sum(1, keepdims=True)], 1),
            "code2wav.decoder.1": rng.standard_normal((8, 40)), "code2wav": rng.standard_normal(1920)}
    specs = [Activation("thinker.model.language_model.layers.0.mlp.router", (5, 8), "TF", "routing"),
             Activation("code2wav.decoder.1", (8, 40), "CT"), Activation("code2wav", (1920,), "N", "waveform")]
    return acts, specs


def test_specs_round_trip_and_type_the_comparison(tmp_path, rng):
    acts, specs = typed_acts(rng)
    kw = dict(model_path=fake_checkpoint(tmp_path / "ckpt"), inputs={"input_ids": IDS}, dtype="float32", root=tmp_path)
    ref = load_reference(save_reference("typed", acts, specs=specs, **kw))
    assert ref.specs == specs_by_name(specs) and list(ref.specs) == list(acts)
    assert ref["code2wav"].shape == (1920,)  # a flat signal is stored flat
    stored = json.loads((ref.path / "manifest.json").read_text())["activations"]
    assert stored["code2wav.decoder.1"] == {"shape": [8, 40], "layout": "CT", "kind": "float"}

    ours = {n: a.copy() for n, a in ref.activations.items()}
    ours["thinker.model.language_model.layers.0.mlp.router"][2, 1] = 99  # another expert
    c = compare_sets(ours, ref)  # the types come from the reference
    assert [r.kind for r in c.rows] == ["routing", "float", "waveform"]
    assert c.first_divergence.name == "thinker.model.language_model.layers.0.mlp.router"
    assert c.first_divergence.row.violations == ["1 of 20 expert ids differ"]
    assert c["code2wav.decoder.1"].per_token["nmse"].shape == (40,) and c["code2wav"].snr_db == math.inf


def test_old_manifest_without_specs_loads(tmp_path, rng):
    out = save_reference("old", acts(rng), model_path=fake_checkpoint(tmp_path / "ckpt"), inputs={"input_ids": IDS},
                         dtype="float32", root=tmp_path)
    m = json.loads((out / "manifest.json").read_text())
    assert m.pop("activations") == {}  # nothing typed: every activation is float [tokens, features]
    (out / "manifest.json").write_text(json.dumps(m))
    ref = load_reference(out)
    assert ref.specs == {} and all(r.kind == "float" for r in compare_sets(ref.activations, ref).rows)


def test_bad_specs_and_shapes_are_refused(tmp_path, rng):
    acts_, specs = typed_acts(rng)
    kw = dict(model_path=fake_checkpoint(tmp_path / "ckpt"), inputs={"input_ids": IDS}, dtype="float32", root=tmp_path)
    with pytest.raises(ValueError, match=r"'code2wav.decoder.1' has shape \(8, 40\), its type says \(8, 41\)"):
        save_reference("r", acts_, specs=[specs[0], Activation("code2wav.decoder.1", (8, 41), "CT"), specs[2]], **kw)
    with pytest.raises(ValueError, match="not in the set: \\['lm_head'\\]"):
        save_reference("r", acts_, specs=specs + [Activation("lm_head", (5, 8))], **kw)
    router = "thinker.model.language_model.layers.0.mlp.router"
    big = {**acts_, router: acts_[router].copy()}
    big[router][0, 0] = 2 ** 24 + 1  # float32 would store 2**24: an exact comparison would see a wrong expert
    with pytest.raises(ValueError, match=f"'{router}': its ids are not exact in float32"):
        save_reference("r", big, specs=specs, **kw)
    assert not (tmp_path / "r").exists()

    out = save_reference("r", acts_, specs=specs, **kw)
    m = json.loads((out / "manifest.json").read_text())
    m["shapes"]["code2wav.decoder.1"] = [8, 39]
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"'code2wav.decoder.1' is \[8, 40\] in activations.npz but \[8, 39\] in "
                                         r"manifest.json shapes"):
        load_reference(out)
    m["shapes"]["code2wav.decoder.1"] = [8, 40]
    m["activations"]["code2wav"]["shape"] = [1921]
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"'code2wav' is \[1920\] in activations.npz but \[1921\] in manifest.json "
                                         r"activations"):
        load_reference(out)
