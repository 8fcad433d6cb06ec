"""The quantization report: its statistics checked against plain numpy on synthetic data, then end to end on
a tiny dense Qwen3 and a tiny Qwen3-Omni (MoE on one layer of three), the CLI, and the refusal of a GGUF that
is not a quantization of the checkpoint."""

import json
import math
import re

import numpy as np
import pytest

from omni_lab.compare import quant
from omni_lab.gpu import tuning
from omni_lab.formats.gguf_io import GGUFCheckpoint
from omni_lab.formats.q8_0 import dequantize_q8_0, quantize_q8_0
from omni_lab.formats.quantize import quantize_checkpoint
from omni_lab.formats.safetensors_io import Checkpoint

TEXT = "Hello, world! How are you today? The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (checkpoint dir, its Q8_0 GGUF): tiny qwen3 (seeds 0 and 1) and tiny omni 'tiny-step2'."""
    from omni_lab.models.tiny import build_tiny_qwen3
    from omni_lab.models.tiny_omni import build_tiny_omni

    root = tmp_path_factory.mktemp("quant_report")
    out = {}
    for name, build in (("qwen3", lambda d: build_tiny_qwen3(d, seed=0)),
                        ("qwen3-seed1", lambda d: build_tiny_qwen3(d, seed=1)),
                        ("omni", lambda d: build_tiny_omni(d, seed=0, preset="tiny-step2"))):
        src = build(root / name)
        with np.errstate(all="ignore"):  # gguf divides by zero scales of all-zero blocks (and handles it)
            out[name] = (src, quantize_checkpoint(src, root / f"{name}.q8_0.gguf", progress=False))
    return out


@pytest.fixture(scope="module")
def dense_report(models, tmp_path_factory):
    from omni_lab.report.quant_report import quant_report

    src, gguf = models["qwen3"]
    out = tmp_path_factory.mktemp("dense_report")
    return quant_report(src, gguf, text=TEXT, out_dir=out), out


@pytest.fixture(scope="module")
def moe_report(models, tmp_path_factory):
    from omni_lab.report.quant_report import quant_report

    src, gguf = models["omni"]
    out = tmp_path_factory.mktemp("moe_report")
    return quant_report(src, gguf, text=TEXT, out_dir=out), out


# ---- statistics on synthetic data ------------------------------------------------------------------------
def test_sqnr_of_q8_0_on_gaussian_weights(rng):
    w = rng.standard_normal((256, 1024)).astype(np.float32)
    w_hat = dequantize_q8_0(quantize_q8_0(w))
    w64, e64 = w.astype(np.float64), w.astype(np.float64) - w_hat.astype(np.float64)
    by_numpy = 10 * np.log10(np.sum(w64 ** 2) / np.sum(e64 ** 2))
    ours = quant.tensor_sqnr_db(w, w_hat)
    assert ours == pytest.approx(by_numpy, rel=1e-12)
    theory = quant.gaussian_q8_0_sqnr_db()
    assert theory == pytest.approx(45.44, abs=0.02)  # 10 log10(32 * 12 * 127^2 / (31 * 5.7095))
    assert abs(ours - theory) < 0.15, (ours, theory)
    # scale invariance: SQNR of Q8_0 does not depend on the weights' magnitude (within f16's normal range)
    assert quant.tensor_sqnr_db(w * 1e-2, dequantize_q8_0(quantize_q8_0(w * 1e-2))) == pytest.approx(ours, abs=0.05)
    assert quant.sqnr_db(1.0, 0.0) == math.inf and math.isnan(quant.sqnr_db(0.0, 0.0))


def test_consistency_check_tells_a_quantization_from_another_tensor(rng):
    w = rng.standard_normal((8, 64)).astype(np.float32)
    assert quant.inconsistent(w, dequantize_q8_0(quantize_q8_0(w)), quantized=True) == 0
    tiny = w * 1e-40  # below f16's range: the scale underflows, Q8_0 gives zeros, and that is still a quantization
    with np.errstate(all="ignore"):  # gguf divides by the zero scales (and handles it)
        assert quant.inconsistent(tiny, dequantize_q8_0(quantize_q8_0(tiny)), quantized=True) == 0
    other = rng.standard_normal((8, 64)).astype(np.float32)
    assert quant.inconsistent(w, dequantize_q8_0(quantize_q8_0(other)), quantized=True) == 16
    assert quant.inconsistent(w, w, quantized=False) == 0
    assert quant.inconsistent(w, other, quantized=False) > 400


def test_logit_stats_against_numpy(rng):
    t, v = 6, 50
    a = rng.standard_normal((t, v)) * 3
    b = a + rng.standard_normal((t, v)) * 0.05
    b[2] = a[2]
    b[4, np.argmax(a[4])] -= 20.0  # the top token of position 4 drops out
    ids = rng.integers(0, v, t)
    s = quant.logit_stats(a.astype(np.float32), b.astype(np.float32), ids)
    p = np.exp(a - a.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    q = np.exp(b - b.max(1, keepdims=True)); q /= q.sum(1, keepdims=True)
    kl = (p * (np.log(p) - np.log(q))).sum(1)
    assert s.kl == pytest.approx(kl, rel=1e-4, abs=1e-9)
    assert s.kl[2] == 0.0
    assert s.kl_mean == pytest.approx(kl.mean(), rel=1e-4) and s.kl_max == pytest.approx(kl.max(), rel=1e-4)
    assert s.kl_median == pytest.approx(np.median(kl), rel=1e-4)
    assert s.same_top == int((p.argmax(1) == q.argmax(1)).sum()) and [f["position"] for f in s.top_flips] == [4]
    top = p.argmax(1)
    assert s.rms_dp_top == pytest.approx(np.sqrt(np.mean((q[np.arange(t), top] - p[np.arange(t), top]) ** 2)), rel=1e-4)
    nll_p = -np.log(p[np.arange(t - 1), ids[1:]])
    nll_q = -np.log(q[np.arange(t - 1), ids[1:]])
    assert s.ppl_ref == pytest.approx(np.exp(nll_p.mean()), rel=1e-5)
    assert s.ppl_ratio == pytest.approx(np.exp(nll_q.mean() - nll_p.mean()), rel=1e-5)
    same = quant.logit_stats(a, a, ids)
    assert same.kl_max == 0.0 and same.same_top_rate == 1.0 and same.ppl_ratio == 1.0 and same.rms_dp_top == 0.0


def test_expert_agreement_counts_sets_and_slots():
    # ids then weights; token 0 swaps slots (same set), token 1 shares one of two experts
    ref = np.array([[1, 2, .6, .4], [3, 4, .7, .3]], np.float32)
    q = np.array([[2, 1, .5, .5], [3, 5, .8, .2]], np.float32)
    e = quant.expert_agreement(ref, q, "model.layers.7.mlp.router", 7)
    assert (e.k, e.tokens) == (2, 2)
    assert e.set_agreement == pytest.approx(0.75) and e.exact_order == pytest.approx(0.25)
    assert e.tokens_all_same == pytest.approx(0.5)
    with pytest.raises(ValueError):
        quant.expert_agreement(ref, q[:, :2], "x")


# ---- weights of a real (tiny) pair ---------------------------------------------------------------------
def test_streamed_sqnr_equals_whole_tensor_sqnr(models, monkeypatch):
    src, gguf = models["qwen3"]
    monkeypatch.setattr(quant, "CHUNK_ELEMENTS", 100)  # a row per chunk: the streaming path, many chunks
    got = {t.name: t for t in quant.weight_sqnr(src, gguf)}
    c, g = Checkpoint(src), GGUFCheckpoint(gguf)
    assert set(got) == set(c.names)
    for name, t in got.items():
        whole = quant.tensor_sqnr_db(c.get_f32(name), g.get_f32(name))
        assert t.stored_dtype == g.dtype(name)
        if t.quantized:
            assert t.sqnr_db == pytest.approx(whole, rel=1e-9) and 40 < t.sqnr_db < 50, name
        else:
            assert t.sqnr_db == math.inf or math.isnan(t.sqnr_db), name  # norms are carried over exactly


# ---- end to end ---------------------------------------------------------------------------------------------
def _check_files(out):
    data = json.loads((out / "report.json").read_text())
    page = (out / "index.html").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    for png in pngs:
        assert (out / png).stat().st_size > 1000 and f"src='{png}'" in page
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.tmp-*"))
    assert "Both sides are <b>our</b> kernels" in page and "BF16 weights against" in page
    assert data["adapter"]["adapter"] and data["adapter"]["adapter"] in page  # which adapter ran it
    return data, page, pngs


def test_dense_report_end_to_end(dense_report):
    report, out = dense_report
    data, page, pngs = _check_files(out)
    assert pngs == ["drift.png", "kl_hist.png", "sqnr.png"]
    for key in ("sides", "adapter", "inputs", "weights", "activations", "logits", "moe", "notes", "timing"):
        assert key in data, key
    lg = data["logits"]
    for key in ("kl_mean", "kl_median", "kl_p99", "kl_max", "same_top_rate", "rms_dp_top", "ppl_ref", "ppl_q",
                "ppl_ratio", "kl_per_token"):
        assert lg[key] is not None, key
    assert len(lg["kl_per_token"]) == lg["tokens"] == len(data["inputs"]["input_ids"]) > 10
    assert 0 <= lg["kl_mean"] < 5e-3 and lg["kl_median"] <= lg["kl_p99"] <= lg["kl_max"]
    assert lg["same_top_rate"] >= 0.85
    assert all(f["ref_margin"] < 0.05 for f in lg["top_flips"]), lg["top_flips"]  # flips only at near ties
    assert abs(lg["ppl_ratio"] - 1) < 0.01
    w = data["weights"]["summary"]
    assert w["quantized"] == 15 and 44 < w["min_db"] <= w["median_db"] < 47
    assert w["unquantized_identical"] == w["unquantized"]
    assert data["moe"] is None
    names = [a["name"] for a in data["activations"]]
    assert names[0] == "model.embed_tokens" and names[-1] == "lm_head" and "model.layers.1.mlp" in names
    assert data["activations"][0]["nmse"] < data["activations"][-1]["nmse"]  # drift grows through the model
    assert "both on our kernels" in report.summary()


def test_moe_report_end_to_end(moe_report, models):
    from omni_lab.models.thinker import Qwen3OmniThinkerText

    report, out = moe_report
    data, page, pngs = _check_files(out)
    assert "experts.png" in pngs
    cfg = Qwen3OmniThinkerText.config_from(Checkpoint(models["omni"][0]).config)
    moe_layers = [i for i in range(cfg.num_hidden_layers) if cfg.is_moe(i)]
    assert moe_layers == [1]
    layers = data["moe"]["layers"]
    assert [m["layer"] for m in layers] == moe_layers and data["moe"]["k"] == cfg.num_experts_per_tok
    for m in layers:
        for key in ("set_agreement", "exact_order", "tokens_all_same"):
            assert 0.0 <= m[key] <= 1.0
        assert m["exact_order"] <= m["set_agreement"]
    assert data["logits"]["kl_mean"] < 5e-3
    # The Q8_0 side ran the experts as Q8_0 (int8 dot products), not widened to float.
    from omni_lab.formats.q8_0 import Q8Weight
    from omni_lab.workbench import load_ours

    q8_model = load_ours(models["omni"][1], max_len=16, progress=False)
    assert all(isinstance(getattr(q8_model.layers[i].mlp, w), Q8Weight) for i in moe_layers
               for w in ("gate_up_proj", "down_proj"))
    assert not any(a["name"].endswith(".mlp.router") for a in data["activations"])
    # A short prompt runs the experts per pair (int8 activations); the notes say so.
    assert len(data["inputs"]["input_ids"]) < tuning.current().moe_grouped_min_tokens_q8
    assert any("per-pair kernels, which take int8 activations" in n for n in data["notes"])


@pytest.mark.parametrize("name,grouped", [("qwen3", False), ("omni", False), ("omni", True)],
                         ids=["dense", "moe-pairs", "moe-grouped"])
def test_q8_0_prefill_on_either_path(rt, models, name, grouped):
    """A Q8_0 prefill on each q8_prefill_path: dot4 runs tiles_dot4 only, each matmul input quantized once (a
    norm's output by the norm's own dispatch, add_rmsnorm_q8, shared by the projections, the router and the
    experts); f32 runs tiles_q8 only and no norm quantizes. The logits differ by the activations' rounding."""
    from omni_lab.workbench import load_ours

    ids = np.arange(3, 40)  # 37 tokens
    logits, kernels = {}, {}
    for path in ("dot4", "f32"):
        with tuning.override(q8_prefill_path=path, moe_grouped_min_tokens_q8=2 if grouped else 10**6):
            model = load_ours(models[name][1], max_len=64, progress=False)
            with rt.profile() as prof:
                logits[path] = model.forward(ids, start=0)["logits"].astype(np.float64)
        kernels[path] = [t.kernel.split("[")[0] for t in prof.timings]
    dot4, f32 = kernels["dot4"], kernels["f32"]
    assert "tiles_dot4.main" in dot4 and "tiles_q8.main" not in dot4
    assert "tiles_q8.main" in f32 and "tiles_dot4.main" not in f32 and "norm.add_rmsnorm_q8" not in f32
    quantized = dot4.count("q8_0.quantize_act") + dot4.count("norm.add_rmsnorm_q8")
    assert dot4.count("norm.add_rmsnorm_q8") > 0 and quantized < dot4.count("tiles_dot4.main")
    a, b = logits["dot4"], logits["f32"]
    assert float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))) > 0.999


def test_cli(models, tmp_path, capsys):
    from omni_lab.cli import main

    src, gguf = models["qwen3"]
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    assert main(["quant-report", "--model", str(src), "--gguf", str(gguf), "--text-file", str(text),
                 "--max-tokens", "12", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"KL mean [0-9.e-]+", printed) and "same top token" in printed and "ratio" in printed
    assert "SQNR min" in printed and f"report: {tmp_path / 'r' / 'index.html'}" in printed
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["inputs"]["tokens"] == 12 and data["inputs"]["truncated_from"] > 12


# ---- refusing a pair that does not belong together ------------------------------------------------------
def test_mismatched_pair_is_refused(models, tmp_path, capsys):
    from omni_lab.cli import main
    from omni_lab.report.quant_report import quant_report

    src = models["qwen3"][0]
    for other in ("qwen3-seed1", "omni"):  # same shapes other weights; another architecture
        gguf = models[other][1]
        with pytest.raises(quant.QuantPairMismatch) as e:
            quant_report(src, gguf, ids=[1, 2, 3], out_dir=tmp_path / other)
        assert str(gguf) in str(e.value) and str(src) in str(e.value) and "not a quantization of" in str(e.value)
        assert not (tmp_path / other).exists()  # refused before anything ran or was written
    assert main(["quant-report", "--model", str(src), "--gguf", str(models["qwen3-seed1"][1]), "--prompt-ids",
                 "1,2,3", "--out", str(tmp_path / "cli"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and str(models["qwen3-seed1"][1]) in err and "differ from the checkpoint" in err


def test_audio_prompt_report_spans_encoder_and_thinker(models, tmp_path, capsys):
    """quant-report --audio: a recording through the audio encoder into the thinker, BF16 against Q8_0 on our
    kernels: the drift table holds the encoder's activations, then the thinker's; the notes say how many
    placeholders the audio took."""
    import soundfile as sf

    from omni_lab.cli import main

    src, gguf = models["omni"]
    wav = tmp_path / "q.wav"
    t = np.arange(16000) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32), 16000)
    out = tmp_path / "audio"
    assert main(["quant-report", "--model", str(src), "--gguf", str(gguf), "--audio", str(wav), "--prompt", "What?",
                 "--out", str(out), "--no-progress"]) == 0
    data, page, pngs = _check_files(out)
    names = [a["name"] for a in data["activations"]]
    tower = [i for i, n in enumerate(names) if n.startswith("thinker.model.audio_tower.")]
    text = [i for i, n in enumerate(names) if n.startswith("thinker.model.language_model.layers.")]
    assert tower and text and max(tower) < min(text) and names[-1] == "thinker.lm_head"
    assert any("audio placeholders" in n for n in data["notes"])
    assert data["activations"][-1]["nmse"] > 0  # the thinker's Q8_0 weights moved the logits
    assert main(["quant-report", "--model", str(src), "--gguf", str(gguf), "--out", str(out / "x")]) == 2
    assert "give one of" in capsys.readouterr().err
