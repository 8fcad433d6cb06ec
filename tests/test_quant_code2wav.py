"""Q8_0 for code2wav: a tiny Qwen3-Omni quantized with `omni-lab quantize` vocodes from its GGUF (the linears as
Q8_0, the convolutions and the code embedding as stored), close to the BF16 checkpoint's waveform; the
quantization report of the vocoder end to end; and `--keep "code2wav.*"`, which must make the two waveforms
bit-identical where the default does not."""

import contextlib
import io
import json
import math
import re

import numpy as np
import pytest

from omni_lab.compare.audio import WAVEFORM_BOUNDS, waveform_metrics
from omni_lab.formats.q8_0 import Q8Weight
from omni_lab.formats.safetensors_io import CheckpointError
from omni_lab.gpu import Tensor
from omni_lab.models.code2wav import PREFIX, Code2Wav
from omni_lab.models.tiny_omni import build_tiny_omni

FRAMES = 40  # as many as WAVEFORM_BOUNDS were measured over


def quantize(src, out, *keep):
    from omni_lab.cli import main

    with np.errstate(all="ignore"):  # gguf divides by zero scales of all-zero blocks (and handles it)
        assert main(["quantize", str(src), str(out), "--no-progress", *(("--keep", *keep) if keep else ())]) == 0
    return out


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    """(checkpoint, its Q8_0 GGUF, the GGUF made with --keep 'code2wav.*', codes [16, FRAMES])."""
    root = tmp_path_factory.mktemp("quant_code2wav")
    src = build_tiny_omni(root / "ckpt", seed=0, preset="tiny")
    codes = np.random.default_rng(7).integers(0, 48, (16, FRAMES), dtype=np.int64)
    return src, quantize(src, root / "q8_0.gguf"), quantize(src, root / "keep.gguf", "code2wav.*"), codes


# ---- loading from the GGUF ------------------------------------------------------------------------------
def test_vocoder_from_the_q8_0_gguf_is_close_to_bf16(omni):
    src, gguf, _, codes = omni
    q = Code2Wav.load(gguf, max_len=64, progress=False)
    ref = Code2Wav.load(src, max_len=64, progress=False)
    m = waveform_metrics(q.forward(codes)[PREFIX], ref.forward(codes)[PREFIX])
    assert WAVEFORM_BOUNDS["q8_0"].violations(m) == [], m
    assert np.isfinite(m["snr_db"]) and m["max_abs"] > 0  # Q8_0 really ran: not the BF16 weights again
    # Its linears are Q8_0 where K allows (the tiny MLP's down_proj has K = 48), everything else as stored.
    for layer in q.transformer.layers:
        a = layer.self_attn
        assert all(isinstance(w, Q8Weight) for w in (a.q_proj, a.k_proj, a.v_proj, a.o_proj))
        assert isinstance(layer.mlp.gate_proj, Q8Weight) and isinstance(layer.mlp.up_proj, Q8Weight)
        assert isinstance(layer.mlp.down_proj, Tensor) and layer.mlp.down_proj.dtype == "bf16"
    for up, block in q.upsample:
        assert isinstance(block.pwconv1, Q8Weight) and isinstance(block.pwconv2, Q8Weight)
        assert up.weight.dtype == block.dwconv.weight.dtype == "bf16"
    assert q.code_embedding.dtype == "bf16" and q.decoder_out.weight.dtype == "bf16"


def test_a_gguf_with_a_q8_0_code_embedding_is_refused_by_name(omni, tmp_path, monkeypatch):
    """A GGUF written before the rule kept the code embedding as stored: the loader names the tensor instead
    of failing inside the gather's dtype check."""
    from omni_lab.formats import quantize as qz

    src = omni[0]
    monkeypatch.setattr(qz, "KEEP_AS_STORED", ())
    old = quantize(src, tmp_path / "old.gguf")
    with pytest.raises(CheckpointError, match=r"tensor 'code2wav.code_embedding.weight' is Q8_0, but its kernel reads "
                                              r"16-bit or f32 weights only; quantize the checkpoint again"):
        Code2Wav.load(old, max_len=16, progress=False)


# ---- the report -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_report(omni, tmp_path_factory):
    """`omni-lab quant-report --codes` of the default GGUF: (its directory, what it printed)."""
    from omni_lab.cli import main

    src, gguf, _, codes = omni
    root = tmp_path_factory.mktemp("cli_report")
    np.save(root / "codes.npy", codes.T)  # [frames, 16], as a user may save them
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["quant-report", "--model", str(src), "--gguf", str(gguf), "--codes", str(root / "codes.npy"),
                   "--out", str(root / "report"), "--no-progress"])
    assert rc == 0, printed.getvalue()
    return root / "report", printed.getvalue()


def test_code2wav_report_end_to_end(cli_report, omni):
    import soundfile as sf

    from omni_lab.formats.gguf_io import GGUFCheckpoint
    from omni_lab.models.code2wav import code2wav_activations

    out, printed = cli_report
    _, gguf, _, codes = omni
    assert re.search(r"waveform SNR [0-9.]+ dB, SI-SDR [0-9.]+ dB, mel distance [0-9.]+ dB, .*within the q8_0 bounds",
                     printed) and "code2wav weight SQNR" in printed and f"report: {out / 'index.html'}" in printed
    assert sorted(p.name for p in out.iterdir()) == ["code2wav_bf16.wav", "code2wav_q8_0.wav", "drift.png",
                                                     "index.html", "report.json", "sqnr.png", "waveform.png"]
    data = json.loads((out / "report.json").read_text())
    page = (out / "index.html").read_text()
    # the waveform: finite, within WAVEFORM_BOUNDS["q8_0"], and what the two WAV files hold
    w, b = data["waveform"], WAVEFORM_BOUNDS["q8_0"]
    assert w["within_bounds"] and w["violations"] == [] and not w["identical"]
    assert b.snr_db <= w["snr_db"] < 60 and b.si_sdr_db <= w["si_sdr_db"] and 0 < w["mel_distance_db"] <= b.mel_distance_db
    ref, rate = sf.read(out / w["files"]["bf16"], dtype="float32")
    q, _ = sf.read(out / w["files"]["q8_0"], dtype="float32")
    assert rate == w["sample_rate"] == 24000 and ref.size == q.size == w["samples"] > 0
    got = waveform_metrics(q, ref)
    assert got["snr_db"] == pytest.approx(w["snr_db"]) and got["max_abs"] == pytest.approx(w["max_abs"])
    # two players, each of a file next to the page; every figure shown
    sources = re.findall(r"<audio [^>]*src='([^']+)'", page)
    assert sorted(sources) == sorted(w["files"].values()) and all((out / f).is_file() for f in sources)
    for png in ("waveform.png", "drift.png", "sqnr.png"):
        assert (out / png).stat().st_size > 1000 and f"src='{png}'" in page
    assert "Both sides are <b>our</b> kernels" in page and 'class="verdict pass"' in page
    # the SQNR of exactly the tensors the GGUF quantized, code2wav's as their own group
    g = GGUFCheckpoint(gguf)
    mine = {t["name"]: t for t in data["weights"]["tensors"] if t["name"].startswith("code2wav.") and t["stored_dtype"] == "q8_0"}
    assert set(mine) == {n for n in g.names if n.startswith("code2wav.") and g.dtype(n) == "q8_0"} and len(mine) == 16
    assert all(40 < t["sqnr_db"] < 50 for t in mine.values())
    group = data["weights"]["groups"]["code2wav"]
    assert group["quantized"] == 16 and group["median_db"] == pytest.approx(np.median([t["sqnr_db"] for t in mine.values()]))
    reasons = {r["reason"]: r["tensors"] for r in data["weights"]["code2wav_kept"]}
    assert any("embedding_mean" in r and t == ["code2wav.code_embedding.weight"] for r, t in reasons.items())
    assert any(r.startswith("K = 48") for r in reasons)  # the tiny MLP's down_proj
    # drift of every activation, typed by the component's activations
    acts = data["activations"]
    assert [a["name"] for a in acts] == [a.name for a in code2wav_activations(Code2Wav.config_from(g.config), FRAMES)]
    assert acts[-1]["kind"] == "waveform" and acts[-1]["snr_db"] == pytest.approx(w["snr_db"])
    assert {a["layout"] for a in acts} == {"TF", "CT", "N"}
    assert acts[0]["name"] == "code2wav.code_embedding.mean" and acts[0]["nmse"] == 0  # the table kept it BF16
    assert all(a["nmse"] > 0 for a in acts[1:])  # every later one moves: Q8_0 linears start in layer 0
    assert data["component"] == "code2wav" and data["inputs"]["frames"] == FRAMES
    assert np.array_equal(np.array(data["inputs"]["codes"]), codes)  # [frames, 16] on disk, [16, frames] here


def test_keep_code2wav_makes_the_waveform_bit_identical(omni, tmp_path):
    """The check that can fail: with code2wav kept BF16 the vocoder's weights are the checkpoint's, so the
    waveform must be bit-identical (SNR inf, null in the JSON), and the default GGUF's must not be."""
    from omni_lab.report.quant_report import quant_report

    src, gguf, keep, codes = omni
    kept = quant_report(src, keep, codes=codes, out_dir=tmp_path / "keep")
    assert kept.identical and kept.waveform["snr_db"] == math.inf and kept.passed
    data = json.loads((tmp_path / "keep" / "report.json").read_text())
    assert data["waveform"]["identical"] and data["waveform"]["snr_db"] is None and data["waveform"]["si_sdr_db"] is None
    assert data["waveform"]["mel_distance_db"] == 0.0 and data["waveform"]["max_abs"] == 0.0
    assert all(a["nmse"] == 0 for a in data["activations"])  # every activation, not only the waveform
    assert data["weights"]["groups"]["code2wav"]["quantized"] == 0 and data["weights"]["summary"]["quantized"] > 0
    assert "bit-identical" in kept.summary() and any("No weight of code2wav is Q8_0" in n for n in kept.notes)
    default = quant_report(src, gguf, codes=codes)
    assert not default.identical and math.isfinite(default.waveform["snr_db"]) and default.index is None


def test_a_waveform_out_of_bounds_fails_the_cli(cli_report, omni, tmp_path, monkeypatch, capsys):
    from omni_lab.cli import main
    from omni_lab.compare.audio import WaveformBounds

    src, gguf, _, _ = omni
    measured = json.loads((cli_report[0] / "report.json").read_text())["waveform"]["snr_db"]
    monkeypatch.setitem(WAVEFORM_BOUNDS, "q8_0", WaveformBounds(snr_db=measured + 1))  # just above what Q8_0 gives
    assert main(["quant-report", "--model", str(src), "--gguf", str(gguf), "--codes", str(cli_report[0].parent / "codes.npy"),
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 1
    assert "OUT of the q8_0 bounds: SNR" in capsys.readouterr().out
    assert 'class="verdict fail"' in (tmp_path / "r" / "index.html").read_text()


def test_bad_codes_are_refused_before_anything_runs(omni, tmp_path, capsys):
    from omni_lab.cli import main

    src, gguf, _, codes = omni
    bad = codes.copy()
    bad[2, 5] = 48
    np.save(tmp_path / "bad.npy", bad)
    np.save(tmp_path / "float.npy", codes.astype(np.float32))
    for name, message in (("bad", "code 48 at codebook 2, frame 5 is outside [0, 48)"),
                          ("float", "must be an integer array")):
        assert main(["quant-report", "--model", str(src), "--gguf", str(gguf), "--codes", str(tmp_path / f"{name}.npy"),
                     "--out", str(tmp_path / name), "--no-progress"]) == 2
        assert message in capsys.readouterr().err, name
        assert not (tmp_path / name).exists()
