"""The HTML report (files written, images referenced and present) and the widget explorer."""

import json
import re

import numpy as np

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
