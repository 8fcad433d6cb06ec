"""The quantization report of speech on the tiny Omni: BF16 against itself agrees in every code; a planted Q8_0
failure in one part (a talker codec head so small that Q8_0's f16 scales flush it to zero) is ranked first by
the per-part sensitivity, and the advice keeps that part in BF16; the report's files exist and parse."""

import contextlib
import io
import json
import re

import numpy as np
import pytest
from checkpoint_edits import edited_copy

from omni_lab.models.tiny_omni import build_tiny_omni
from omni_lab.report.quant_speech import PARTS, codec_agreement, keep_all_but, part_of, speech_quant_report

MAX_FRAMES, MAX_NEW_TOKENS = 8, 8
PROMPT = "Привет мир"


def quantize(src, out, *args):
    from omni_lab.cli import main

    with np.errstate(all="ignore"):  # gguf divides by zero scales of all-zero blocks (and handles it)
        assert main(["quantize", str(src), str(out), "--no-progress", *args]) == 0
    return out


@pytest.fixture(scope="module", autouse=True)
def q8_path():
    """The dot4 decode matvec, named: without it the first Q8_0 step times both paths (seconds on lavapipe)."""
    from omni_lab.gpu import tuning

    with tuning.override(q8_matvec_path="dot4"):
        yield


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    from omni_lab.workbench import prompt_ids

    src = build_tiny_omni(tmp_path_factory.mktemp("quant_speech") / "ckpt", seed=0, preset="tiny")
    return src, prompt_ids(src, prompt=PROMPT, chat=True)


def test_every_key_is_in_exactly_one_part(omni):
    from omni_lab.formats.safetensors_io import Checkpoint

    names = Checkpoint(omni[0]).names
    assert all(part_of(n) is not None for n in names)
    counts = {p: sum(part_of(n) == p for n in names) for p, _ in PARTS}
    assert all(counts.values()), counts
    assert part_of("talker.code_predictor.model.layers.0.mlp.up_proj.weight") == "code_predictor"
    assert part_of("talker.codec_head.weight") == "talker"
    assert "talker.code_predictor.*" not in keep_all_but("code_predictor") and "thinker.*" in keep_all_but("talker")


def test_codec_agreement_counts_missing_frames_as_different():
    ref = np.arange(48).reshape(3, 16)
    codes = ref[:2].copy()
    codes[1, 5] += 1
    a = codec_agreement(codes, ref)
    assert a["frames"] == [2, 3] and a["first_different_frame"] == 1
    assert a["per_frame"] == [1.0, 15 / 16] and a["per_codebook"][5] == 0.5 and a["per_codebook"][0] == 1.0
    assert a["overall"] == pytest.approx(31 / 48)
    assert codec_agreement(ref[:2], ref)["first_different_frame"] == 2  # equal as far as both go, then one stops


def test_bf16_against_itself_agrees_in_every_code(omni, tmp_path):
    """A GGUF converted without quantizing holds the checkpoint's values: every code and sample must match."""
    src, ids = omni
    same = quantize(src, tmp_path / "bf16.gguf", "--type", "none")
    r = speech_quant_report(src, same, ids, tmp_path / "report", max_new_tokens=MAX_NEW_TOKENS, max_frames=MAX_FRAMES,
                            sensitivity=False)
    a = r.q8.agreement
    assert len(r.bf16.codes) > 0 and a["overall"] == 1.0 and a["per_codebook"] == [1.0] * 16
    assert a["first_different_frame"] is None and r.q8.text_diff is None and not r.q8.sensitive
    assert np.array_equal(r.q8.spoken.wave, r.bf16.wave) and r.q8.waveform["snr_db"] == np.inf
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["variants"][0]["waveform"]["snr_db"] is None  # inf: null in strict JSON
    assert data["ranking"] == [] and "not measured" in r.advice()


@pytest.fixture(scope="module")
def planted(omni, tmp_path_factory):
    """A checkpoint whose talker codec head is scaled by 1e-7: BF16 keeps it (and greedy codes do not change with
    the scale), Q8_0 flushes every block to zero (f16 scales underflow), so the talker alone breaks. Returns
    (its directory, its Q8_0 GGUF, the CLI's report directory, what the CLI printed)."""
    from omni_lab.cli import main

    root = tmp_path_factory.mktemp("planted")

    def shrink(tensors):
        tensors["talker.codec_head.weight"] *= 1e-7

    src = edited_copy(omni[0], root / "ckpt", edit_tensors=shrink)
    gguf = quantize(src, root / "q8_0.gguf")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["quant-report", "--model", str(src), "--gguf", str(gguf), "--speak", "--prompt", PROMPT,
                   "--max-frames", str(MAX_FRAMES), "--max-new-tokens", str(MAX_NEW_TOKENS), "--out",
                   str(root / "report"), "--no-progress"])
    assert rc == 0, printed.getvalue()
    return src, gguf, root / "report", printed.getvalue()


def test_a_planted_talker_failure_is_ranked_first(planted):
    _, _, out, printed = planted
    data = json.loads((out / "report.json").read_text())
    assert data["ranking"][0] == "talker" and sorted(data["ranking"]) == sorted(p for p, _ in PARTS)
    assert "talker" in data["sensitive"]
    talker = next(v for v in data["variants"] if v["name"] == "talker")
    assert talker["agreement"]["overall"] < 0.5 and talker["sensitive"]
    assert np.all(np.array(talker["codes"])[:, 0] == 0)  # zero logits: the first id not suppressed, every frame
    code2wav = next(v for v in data["variants"] if v["name"] == "code2wav")
    assert code2wav["agreement"]["overall"] == 1.0  # the vocoder cannot change a code
    assert set(dict(PARTS)["talker"]) <= set(data["suggested_keep"])
    assert "--keep 'talker.model.*' 'talker.codec_head.*'" in data["command"] and data["command"] in printed
    assert re.search(r"talker +codes [0-9.]+% equal.*SENSITIVE", printed) and f"report: {out / 'index.html'}" in printed


def test_the_report_files_exist_and_parse(planted):
    import soundfile as sf

    _, gguf, out, _ = planted
    data = json.loads((out / "report.json").read_text())
    page = (out / "index.html").read_text()
    assert data["component"] == "speech" and data["gguf"] == str(gguf) and data["inputs"]["max_frames"] == MAX_FRAMES
    assert [v["name"] for v in data["variants"]] == ["Q8_0", *(p for p, _ in PARTS)]
    assert all(len(v["agreement"]["per_codebook"]) == 16 for v in data["variants"])
    sources = re.findall(r"<audio [^>]*src='([^']+)'", page)
    assert sorted(sources) == sorted([data["bf16"]["file"], *(v["file"] for v in data["variants"])])
    for f in sources:
        wave, rate = sf.read(out / f, dtype="float32")
        assert rate == data["sample_rate"] == 24000
    assert sf.read(out / data["bf16"]["file"])[0].size == data["bf16"]["samples"] > 0
    for png in ("agreement.png", "waveform.png", "sqnr.png"):
        assert (out / png).stat().st_size > 1000 and f"src='{png}'" in page
    assert data["weights"]["parts"]["talker"]["min_db"] < 1  # the flushed head, named in the per-part SQNR
    assert not any(p.name.startswith(".variants-") for p in out.iterdir())  # the variants' GGUFs are gone


def test_speak_without_a_text_prompt_is_refused(omni, tmp_path, capsys):
    from omni_lab.cli import main

    src, _ = omni
    np.save(tmp_path / "codes.npy", np.zeros((16, 2), np.int64))
    assert main(["quant-report", "--model", str(src), "--gguf", str(tmp_path / "x.gguf"), "--speak", "--codes",
                 str(tmp_path / "codes.npy"), "--out", str(tmp_path / "r")]) == 2
    assert "--speak takes --prompt or --prompt-ids" in capsys.readouterr().err and not (tmp_path / "r").exists()
