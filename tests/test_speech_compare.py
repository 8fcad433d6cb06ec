"""`extract` and `compare` of the talker, the code predictor and the whole speech pipeline on a spoken prompt
(models/speech_taps.py): their prefills inside greedy speech, ours against Transformers'
generate(return_audio=True), in float32."""

import json

import numpy as np
import pytest

from omni_lab.cli import main
from omni_lab.models.component import ModelInputError
from omni_lab.models.speech import SpeechConfig, talker_prompt_rows
from omni_lab.models.speech_taps import first_chunk
from omni_lab.models.tiny_omni import build_tiny_omni
from omni_lab.reference import ReferenceMismatch, load_reference
from omni_lab.workbench import activation_specs, model_config, prompt_ids

PROMPT = "Привет мир"
LIMITS = ["--max-new-tokens", "8", "--max-frames", "4"]
MIN_COSINE = 0.99999  # issue 13: every talker and code-predictor activation in float32


@pytest.fixture(scope="module")
def omni(tmp_path_factory, rt):
    tmp = tmp_path_factory.mktemp("speechcmp")
    return {"tmp": tmp, "path": build_tiny_omni(tmp / "ckpt", seed=0, preset="tiny")}


def spoken_args(omni, command, component, *more):
    return [command, "--model", str(omni["path"]), "--prompt", PROMPT, "--component", component, *LIMITS, *more]


@pytest.mark.parametrize("component, last", [("talker", "talker.codec_head"),
                                             ("code_predictor", "talker.code_predictor.lm_head.0")])
def test_compare_passes_in_float32(omni, component, last, capsys):
    out, refs = omni["tmp"] / f"report-{component}", omni["tmp"] / "refs"
    assert main(spoken_args(omni, "compare", component, "--out", str(out), "--references", str(refs))) == 0, \
        capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    rows = report["activations"]
    assert report["passed"] and report["first_divergence"] is None and rows[-1]["name"] == last
    assert all(r["within_bounds"] and r["cosine"] >= MIN_COSINE for r in rows), [r["name"] for r in rows]
    routing = [r for r in rows if r["kind"] == "routing"]
    assert (component == "talker") == bool(routing) and all(r["equal"] == r["total"] for r in routing)
    (manifest,) = [json.loads(m.read_text()) for m in refs.glob(f"*-{component}-*/manifest.json")]
    ids = prompt_ids(omni["path"], prompt=PROMPT, chat=True)
    assert manifest["inputs"] == {"input_ids": ids.tolist(), "speaker": "Ethan", "max_new_tokens": 8, "max_frames": 4}
    rows_in = talker_prompt_rows(ids, SpeechConfig.from_dict(model_config(omni["path"]), "config.json"))
    assert manifest["shapes"][rows[0]["name"]][0] == (rows_in if component == "talker" else 2)
    # The same prompt spoken by another voice is another reference.
    with pytest.raises(ReferenceMismatch, match="inputs.speaker"):
        load_reference(manifest["name"], expect_inputs={**manifest["inputs"], "speaker": "Chelsie"}, root=refs)


@pytest.mark.parametrize("component", ["talker", "code_predictor"])
def test_extract_hf_and_wgpu_hold_the_same_names_and_shapes(omni, component):
    files = {}
    for backend in ("hf", "wgpu"):
        files[backend] = omni["tmp"] / f"{component}-{backend}.npz"
        assert main(spoken_args(omni, "extract", component, "--backend", backend, "--out", str(files[backend]))) == 0
    hf, ours = (dict(np.load(files[b])) for b in ("hf", "wgpu"))
    assert list(hf) == list(ours)
    assert {n: a.shape for n, a in hf.items()} == {n: a.shape for n, a in ours.items()}
    assert set(hf) == {a.name for a in activation_specs(omni["path"], 2, component)}


def test_an_unknown_speaker_is_named_before_anything_runs(omni, capsys):
    out = omni["tmp"] / "nobody"
    assert main(spoken_args(omni, "compare", "talker", "--speaker", "Nobody", "--out", str(out),
                            "--references", str(omni["tmp"] / "refs-nobody"))) == 2
    assert "unknown speaker 'Nobody'" in capsys.readouterr().err
    assert not out.exists() and not (omni["tmp"] / "refs-nobody").exists()


def test_compare_speech_spans_the_four_parts_in_one_namespace(omni, capsys):
    """--component speech: the thinker's prefill, the talker's prompt and prefill, the code predictor's first
    prefill and code2wav's first chunk, in execution order, all within bounds."""
    out = omni["tmp"] / "report-speech"
    assert main(spoken_args(omni, "compare", "speech", "--out", str(out), "--references", str(omni["tmp"] / "refs"))) == 0, \
        capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    names = [r["name"] for r in report["activations"]]
    firsts = [next(i for i, n in enumerate(names) if n.startswith(p))
              for p in ("thinker.", "talker.model.", "talker.code_predictor.", "code2wav.")]
    assert firsts == sorted(firsts) and names[-1] == "code2wav"
    assert report["passed"] and all(r["within_bounds"] for r in report["activations"])
    assert next(r for r in report["activations"] if r["name"] == "code2wav")["kind"] == "waveform"


def test_speech_decodes_exactly_max_frames():
    with pytest.raises(ModelInputError, match="spoke 3 frames, fewer than --max-frames 4"):
        first_chunk(np.zeros((3, 16), np.int64), {"max_frames": 4})
