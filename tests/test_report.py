"""The HTML report (files written, images referenced and present) and the widget explorer."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from omni_lab.activations import Activation
from omni_lab.compare import compare_sets
from omni_lab.reference import dense_qwen3_names
from omni_lab.report import explorer, split_names, write_report
from omni_lab.report.figures import NameParts

MANIFEST = {"dtype": "float32", "model": {"path": "/models/tiny", "weights_sha256": "ab" * 32, "hash_mode": "full"},
            "inputs": {"input_ids": [1, 2, 3, 4, 5, 6]}, "names": []}


def sets(rng, names, corrupt_from=None, tokens=6, hidden=12):
    ref = {n: rng.standard_normal((tokens, hidden)).astype(np.float32) for n in names}
    ours = {n: a + np.float32(1e-6) * rng.standard_normal(a.shape).astype(np.float32) for n, a in ref.items()}
    if corrupt_from:
        for n in names[names.index(corrupt_from):]:
            ours[n] = ours[n] + 0.3 * rng.standard_normal(ours[n].shape).astype(np.float32)
    return ours, ref


def referenced_images(index):
    return re.findall(r"<img src='([^']+)'", index.read_text())


def test_report_with_divergence(tmp_path, rng):
    names = dense_qwen3_names(8)
    ours, ref = sets(rng, names, corrupt_from="model.layers.5")
    ours["model.layers.5"][2, 3] = np.nan
    c = compare_sets(ours, ref, manifest=MANIFEST)
    index = write_report(c, tmp_path / "rep")
    text = index.read_text()
    imgs = referenced_images(index)
    assert set(imgs) == {"metrics_vs_layer.png", "token_heatmap.png", "error_hist.png"}
    for f in imgs:
        assert (index.parent / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "First divergence: <code>model.layers.5</code>" in text
    assert text.index("First divergence") < text.index("<table")  # named at the top
    assert "Reference dtype" in text and ">float32<" in text
    assert text.count("<tr class='first'>") == 1
    assert text.count("<tr class='fail'>") == len(names) - names.index("model.layers.5") - 1
    j = json.loads((index.parent / "report.json").read_text())
    assert j["first_divergence"] == "model.layers.5" and j["reference"]["dtype"] == "float32"
    assert len(j["activations"]) == len(names)


def test_report_all_within_bounds_and_missing(tmp_path, rng):
    names = dense_qwen3_names(3)
    ours, ref = sets(rng, names)
    del ours["model.layers.1.mlp"]
    c = compare_sets(ours, ref, manifest=MANIFEST)
    index = write_report(c, tmp_path)
    text = index.read_text()
    assert f"All {len(names) - 1} compared activations are within bounds" in text
    assert "<tr class='missing'>" in text and "missing_in_ours" in text
    assert all((tmp_path / f).is_file() for f in referenced_images(index))


def test_components_are_split(tmp_path, rng):
    names = (["thinker.audio_tower.layers.0", "thinker.audio_tower.layers.1"]
             + [f"thinker.model.language_model.layers.{i}{s}" for i in range(3) for s in (".self_attn", ".mlp.router", "")]
             + ["thinker.model.language_model.norm", "thinker.lm_head"])
    parts = split_names(names)
    assert parts["thinker.model.language_model.layers.2.mlp.router"] == NameParts("thinker.model.language_model", 2, "mlp.router")
    assert parts["thinker.audio_tower.layers.1"] == NameParts("thinker.audio_tower", 1, "residual")
    assert parts["thinker.model.language_model.norm"] == NameParts("thinker.model.language_model", None, "norm")
    assert parts["thinker.lm_head"].layer is None
    ours, ref = sets(rng, names)
    index = write_report(compare_sets(ours, ref), tmp_path)
    imgs = referenced_images(index)
    assert "metrics_vs_layer_thinker.audio_tower.png" in imgs
    assert "metrics_vs_layer_thinker.model.language_model.png" in imgs
    assert all((tmp_path / f).is_file() for f in imgs)


def test_explorer_reacts(rng):
    names = dense_qwen3_names(4)
    ours, ref = sets(rng, names, corrupt_from="model.layers.2.mlp")
    c = compare_sets(ours, ref, manifest=MANIFEST)
    box = explorer(c, ours, ref)
    assert box.selected() == "model.layers.2.mlp"  # opens on the first divergence
    assert box.renders >= 1 and box.image.value[:4] == b"\x89PNG"
    first_png, renders = box.image.value, box.renders

    box.layer.value = 0
    assert box.selected() == "model.layers.0.mlp"
    assert box.renders == renders + 1 and box.image.value != first_png  # one redraw per user action
    assert "model.layers.0.mlp" in box.info.value and "within bounds" in box.info.value

    box.activation.value = "residual"
    assert box.selected() == "model.layers.0"
    box.token.value = 5
    assert "token 5" in box.info.value

    box.layer.value = -1  # the component's names outside its layers
    assert set(box.activation.options) == {"embed_tokens", "norm"}
    renders = box.renders
    box.component.value = "(other)"
    assert box.selected() == "lm_head" and box.renders == renders + 1
    box.component.value = "model"
    assert box.selected() is not None


LM = "thinker.model.language_model"


def mixed_sets(rng, tokens=6):
    """A speech model's mix: thinker layers [T, F] with routers, an audio conv with no index, the vocoder's
    upsampling and decoder blocks [C, T] at growing time steps, and its flat waveform."""
    specs = [Activation(f"{LM}.embed_tokens", (tokens, 12))]
    for i in range(3):
        specs += [Activation(f"{LM}.layers.{i}.self_attn", (tokens, 12)),
                  Activation(f"{LM}.layers.{i}.mlp.router", (tokens, 8), kind="routing"),
                  Activation(f"{LM}.layers.{i}.mlp", (tokens, 12)), Activation(f"{LM}.layers.{i}", (tokens, 12))]
    specs += [Activation(f"{LM}.norm", (tokens, 12)), Activation("thinker.audio_tower.conv_out", (tokens, 12))]
    specs += [Activation(f"code2wav.upsample.{i}.{j}", (16, tokens * 2 ** (i + 1)), "CT")
              for i in range(2) for j in range(2)]
    specs += [Activation(f"code2wav.decoder.{i}", (16 >> i, tokens * 4 * 2 ** i), "CT") for i in range(4)]
    specs += [Activation("code2wav", (tokens * 32,), "N", "waveform")]
    ref = {}
    for a in specs:
        if a.kind == "routing":
            ids = np.stack([rng.choice(16, 4, replace=False) for _ in range(tokens)])
            ref[a.name] = np.concatenate([ids, rng.random((tokens, 4))], axis=1).astype(np.float32)
        else:
            ref[a.name] = rng.standard_normal(a.shape).astype(np.float32)
    ours = {n: a + np.float32(1e-6) * rng.standard_normal(a.shape).astype(np.float32) for n, a in ref.items()}
    for n in ours:
        if n.endswith(".router"):
            ours[n][:, :4] = ref[n][:, :4]  # the ids exactly; noise on the weights only
    return ours, ref, specs


def test_report_of_mixed_names_and_kinds(tmp_path, rng):
    ours, ref, specs = mixed_sets(rng)
    bad = f"{LM}.layers.1.mlp.router"
    ours[bad][3, 0] = next(e for e in range(16) if e not in ref[bad][3, :4])  # token 3 picks another expert
    parts = split_names(ref)
    assert parts["code2wav.decoder.2"] == NameParts("code2wav.decoder", 2, "residual")
    assert parts["code2wav.upsample.0.1"] == NameParts("code2wav.upsample", 0, "1")
    assert parts["thinker.audio_tower.conv_out"] == NameParts("thinker.audio_tower", None, "conv_out")
    assert parts["code2wav"] == NameParts("(other)", None, "code2wav")

    c = compare_sets(ours, ref, specs=specs, manifest=MANIFEST)
    assert c.first_divergence.name == bad and len(c.failures) == 1
    index = write_report(c, tmp_path)
    text = index.read_text()
    imgs = referenced_images(index)
    assert set(imgs) == {f"metrics_vs_layer_{LM}.png", f"token_heatmap_{LM}.png",
                         "metrics_vs_layer_code2wav.decoder.png", "token_heatmap_code2wav.decoder.png",
                         "metrics_vs_layer_code2wav.upsample.png", "waveform_code2wav.png", "error_hist.png"}
    assert "Per-time-step NMSE of each block&#x27;s output, code2wav.decoder" in text
    for f in imgs:
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for n in ref:
        assert f"<td class='name'>{n}</td>" in text
    assert f"First divergence: <code>{bad}</code> (1 of 24 expert ids differ)" in text
    assert "<td>equal 23 of 24</td>" in text and text.count("<td>equal 24 of 24</td>") == 2
    assert "Histogram of the error of thinker.model.language_model.layers.1.mlp.router (its weights)" in text
    assert "SNR " in text and "float, CT" in text and "waveform, N" in text
    j = json.loads((tmp_path / "report.json").read_text())
    kinds = {a["name"]: (a["kind"], a["layout"]) for a in j["activations"]}
    assert kinds[bad] == ("routing", "TF") and kinds["code2wav.decoder.3"] == ("float", "CT")
    assert kinds["code2wav"] == ("waveform", "N") and j["first_divergence_detail"]["worst_token"] == 3


def test_explorer_on_mixed_kinds(rng):
    ours, ref, specs = mixed_sets(rng)
    box = explorer(compare_sets(ours, ref, specs=specs), ours, ref)
    box.component.value = "code2wav.decoder"
    box.layer.value = 3
    assert box.selected() == "code2wav.decoder.3" and box.token.max == 6 * 4 * 8 - 1  # time steps, not channels
    box.token.value = 100
    assert "time step 100" in box.info.value and "(float, CT)" in box.info.value
    box.component.value = "(other)"
    assert box.selected() == "code2wav" and box.token.max == 0 and "SNR" in box.info.value
    assert box.image.value[:4] == b"\x89PNG"
    box.component.value = LM
    box.layer.value = 0
    box.activation.value = "mlp.router"
    assert "equal 24 of 24" in box.info.value and "weights: MSE" in box.info.value


def test_write_report_extra_writes_report_json_once(tmp_path, rng, monkeypatch):
    ours, ref = sets(rng, dense_qwen3_names(2))
    c = compare_sets(ours, ref, manifest=MANIFEST)
    writes = []
    real_replace = os.replace

    def replace(src, dst):
        writes.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    index = write_report(c, tmp_path, extra={"timing": {"ours_s": 1.5}, "model": "/models/tiny"})
    # every file is renamed into place (atomically), report.json once and last: its presence means complete
    assert writes.count("report.json") == 1 and writes[-1] == "report.json" and "index.html" in writes
    assert {w for w in writes if w.endswith(".png")} == {p.name for p in tmp_path.glob("*.png")}
    j = json.loads((tmp_path / "report.json").read_text())
    assert j["timing"] == {"ours_s": 1.5} and j["model"] == "/models/tiny" and j["passed"] is True
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".png")) == ["index.html", "report.json"]
    assert index == tmp_path / "index.html"
    with pytest.raises(ValueError, match=r"\['passed'\] would overwrite"):
        c.save_json(tmp_path / "report.json", extra={"passed": False})
    assert json.loads((tmp_path / "report.json").read_text()) == j


def test_bounds_follow_the_reference_dtype_and_say_so(tmp_path, rng):
    from omni_lab.compare import Bounds
    from omni_lab.compare.metrics import DTYPE_BOUNDS

    _, ref = sets(rng, dense_qwen3_names(2))
    ref = {n: 100 * a for n, a in ref.items()}  # activations of a real scale: MSE grows with it, NMSE does not
    ours = {n: a + 3e-3 * np.abs(a).mean() * rng.standard_normal(a.shape) for n, a in ref.items()}  # bf16-sized
    f32 = compare_sets(ours, ref, manifest=MANIFEST)
    bf16 = compare_sets(ours, ref, manifest={**MANIFEST, "dtype": "bfloat16"})
    given = compare_sets(ours, ref, Bounds(mse=1.0), manifest={**MANIFEST, "dtype": "bfloat16"})
    assert (f32.bounds_basis, bf16.bounds_basis, given.bounds_basis) == ("float32", "bfloat16", "given")
    assert bf16.bounds == DTYPE_BOUNDS["bfloat16"] and bf16.passed and not f32.passed
    assert "(the bfloat16 default bounds)" in bf16.summary() and "(given bounds)" in given.summary()
    page = (write_report(bf16, tmp_path)).read_text()
    assert "the defaults for a bfloat16 reference: cosine > 0.999, nmse < 0.001" in page
    assert json.loads((tmp_path / "report.json").read_text())["bounds_basis"] == "bfloat16"


def test_violation_shows_the_digits_that_break_the_bound():
    from omni_lab.compare import Bounds

    m = {"mse": 1.001e-5, "cosine": 0.99899999, "nmse": 0.0, "max_abs": 0.0}
    assert Bounds().violations(m) == ["mse 1.001e-05 >= 1e-05", "cosine 0.99899999 <= 0.999"]


def test_headroom_says_which_side_of_the_bound(tmp_path, rng):
    from omni_lab.report.html import margin

    assert margin(1e-7, 1e-5) == "100x below the bound 1e-05"
    assert margin(5.9e-4, 1e-5) == "59x above the bound 1e-05"
    ours, ref = sets(rng, dense_qwen3_names(2))
    page = write_report(compare_sets(ours, ref, manifest=MANIFEST), tmp_path).read_text()
    assert "<th>1 &minus; cosine</th>" in page and "largest 1 - cosine" in page
    assert not re.search(r"<td>1\.00000000</td>", page)  # the old cosine column, identical on every row


def test_heatmap_rows_show_their_tokens(tmp_path, rng):
    """The heatmap's rows are labelled with the prompt's tokens, decoded by the checkpoint's tokenizer named in
    the manifest (control characters escaped); without a tokenizer they keep their numbers."""
    from omni_lab.models.tiny import build_tiny_qwen3
    from omni_lab.report import figures
    from omni_lab.report.html import token_labels
    from omni_lab.workbench import tokenizer_for

    path = build_tiny_qwen3(tmp_path / "tiny")
    ids = tokenizer_for(path)("Hello\n world")["input_ids"]
    names = dense_qwen3_names(3)
    ours, ref = sets(rng, names, tokens=len(ids))
    c = compare_sets(ours, ref, manifest={**MANIFEST, "model": {"path": str(path)}, "inputs": {"input_ids": ids}})
    labels = token_labels(c)
    assert labels == [tokenizer_for(path).decode([i]) for i in ids] and "".join(labels) == "Hello\n world"
    fig = figures.token_layer_heatmap(c, tokens=labels)
    shown = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(shown) == len(ids) and all(s.startswith(f"{i} ") for i, s in enumerate(shown))
    assert any("\\n" in s for s in shown)  # the newline escaped, not a broken label
    assert token_labels(compare_sets(ours, ref, manifest=MANIFEST)) is None  # /models/tiny has no tokenizer
