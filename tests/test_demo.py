"""The README's main job: `run_demo` end to end on the tiny models (quick mode), writing only under tmp."""

from omni_lab.demo import run_demo


def test_demo_quick_passes_and_writes_a_report(tmp_path):
    summary = run_demo(tmp_path / "work", quick=True, reference_root=tmp_path / "refs", say=lambda *a, **k: None)
    assert summary["passed"]
    assert summary["selfcheck"] and all(r["ok"] for r in summary["selfcheck"])
    (model,) = summary["models"].values()
    assert model["passed"] and model["first_divergence"] is None and model["worst_cosine"] > 0.99999
    assert model["tokens_ours"] == model["tokens_hf"]
    assert (tmp_path / "work" / "tiny" / "index.html").is_file()
    assert any((tmp_path / "refs").iterdir())  # the reference went where it was told, not into the repo


def test_demo_vocodes_with_the_tiny_omni(tmp_path):
    """The demo's vocoder step: the tiny Omni's code2wav matches Transformers and writes a playable wav."""
    import soundfile as sf

    from omni_lab.demo import STEPS

    steps = [s for s in STEPS if s[1].__name__ == "vocoder_step"]
    summary = run_demo(tmp_path / "work", reference_root=tmp_path / "refs", steps=steps, say=lambda *a, **k: None)
    v = summary["vocoder"]
    assert summary["passed"] and v["passed"] and v["first_divergence"] is None and v["snr_db"] >= 60.0
    wave, rate = sf.read(v["wav"])
    assert rate == 24000 and len(wave) == v["samples"] and 0.01 < abs(wave).max() <= 1.0
    assert "<audio" in (tmp_path / "work" / "omni-tiny-code2wav" / "index.html").read_text()


def test_demo_speaks_with_the_tiny_omni(tmp_path):
    """The demo's speech step: the tiny Omni says "Привет мир" on our kernels as Transformers does, into a wav."""
    import soundfile as sf

    from omni_lab.demo import STEPS

    steps = [s for s in STEPS if s[1].__name__ == "speech_step"]
    summary = run_demo(tmp_path / "work", quick=True, reference_root=tmp_path / "refs", steps=steps,
                       say=lambda *a, **k: None)
    s = summary["speech"]
    assert summary["passed"] and s["passed"] and s["frames"] == s["hf_frames"] > 0
    assert s["codebook_agreement"] == [1.0] * 16 and s["snr_db"] >= 60
    wave, rate = sf.read(s["wav"])
    assert rate == 24000 and len(wave) == s["samples"] > 0
