"""extract / compare with --audio: one comparison spans the audio encoder and the thinker (encoder
activations, the merged input embeddings, the thinker's layers, the logits), against Transformers in float32,
on an espeak-ng recording; a bug planted in the encoder of ours is found there; the reference is keyed by the
prompt ids and the audio features both."""

import shutil
import subprocess

import numpy as np
import pytest
import torch

from omni_lab import cli
from omni_lab.compare import Bounds
from omni_lab.models import audio_encoder as enc
from omni_lab.models.audio_in import INPUTS_EMBEDS, audio_prompt_ids, load_audio_inputs
from omni_lab.models.thinker import LIVE
from omni_lab.models.tiny_omni import build_tiny_omni
from omni_lab.reference import ReferenceMismatch
from omni_lab.workbench import capture_reference, compare_model, extract
from checkpoint_edits import edited_copy

PROMPT = "What is said?"
PLANTED = "thinker.audio_tower.layers.1.fc1.weight"  # the checkpoint's key of the live ...audio_tower.layers.1.fc1


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    tmp = tmp_path_factory.mktemp("audio_compare")
    wav = tmp / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Hello world, this is a test."], check=True, capture_output=True)
    path = build_tiny_omni(tmp / "ckpt", seed=2, preset="tiny")
    feats = load_audio_inputs(path, [wav], 512)
    inputs = {"input_ids": audio_prompt_ids(path, [f.shape[1] for f in feats], PROMPT), "input_features": feats}
    ref = capture_reference(path, inputs, "float32", component="thinker", root=tmp / "refs")
    return {"tmp": tmp, "wav": wav, "path": path, "inputs": inputs, "ref": ref}


def test_cli_compare_spans_encoder_and_thinker(setup, capsys):
    tmp = setup["tmp"]
    rc = cli.main(["compare", "--model", str(setup["path"]), "--audio", str(setup["wav"]), "--prompt", PROMPT,
                   "--reference", str(setup["ref"].path), "--references", str(tmp / "refs"), "--out", str(tmp / "cli")])
    assert rc == 0, capsys.readouterr().out
    assert "all within bounds" in capsys.readouterr().out
    names = setup["ref"].names
    first_thinker = names.index(INPUTS_EMBEDS)
    assert all(n.startswith(enc.PREFIX) for n in names[:first_thinker]) and names[first_thinker - 1] == enc.OUTPUT
    assert all(n.startswith(LIVE) for n in names[first_thinker:-1]) and names[-1] == "thinker.lm_head"


def test_cli_extract_writes_both_namespaces(setup):
    out = setup["tmp"] / "ours.npz"
    assert cli.main(["extract", "--model", str(setup["path"]), "--audio", str(setup["wav"]), "--prompt", PROMPT,
                     "--backend", "wgpu", "--out", str(out)]) == 0
    ours = dict(np.load(out))
    assert list(ours) == setup["ref"].names
    np.testing.assert_allclose(ours["thinker.lm_head"], setup["ref"]["thinker.lm_head"], rtol=0, atol=1e-4)


def test_planted_encoder_bug_is_the_first_divergence(setup, rng):
    """One encoder weight edited in a copy of the checkpoint that only our side reads: the first divergence is
    the activation it feeds, everything before it within bounds, and the thinker after it diverges too."""
    def plant(tensors):
        w = tensors[PLANTED].float()
        noise = torch.from_numpy(rng.standard_normal(tuple(w.shape)).astype(np.float32))
        tensors[PLANTED] = (w + 0.2 * w.pow(2).mean().sqrt() * noise).to(tensors[PLANTED].dtype)

    tmp = setup["tmp"]
    bad = edited_copy(setup["path"], tmp / "bad", edit_tensors=plant)
    ours = extract(bad, setup["inputs"], "wgpu", component="thinker")
    comparison, index, _ = compare_model(setup["path"], setup["inputs"], tmp / "bug", reference=setup["ref"].path,
                                         root=tmp / "refs", bounds=Bounds(), ours=ours, component="thinker")
    fd = comparison.first_divergence
    assert fd is not None and fd.name == f"{enc.PREFIX}.layers.1.fc1", comparison.summary()
    assert all(r.within_bounds for r in comparison.rows[:fd.index])
    assert not comparison["thinker.lm_head"].within_bounds
    assert index.is_file()


def test_reference_is_keyed_by_the_audio_too(setup):
    """The same prompt ids with other features is another input: the stored reference is refused, naming them."""
    other = {"input_ids": setup["inputs"]["input_ids"], "input_features": [0.5 * f for f in setup["inputs"]["input_features"]]}
    with pytest.raises(ReferenceMismatch, match=r"inputs\.input_features"):
        compare_model(setup["path"], other, setup["tmp"] / "other", reference=setup["ref"].path,
                      root=setup["tmp"] / "refs", component="thinker")
