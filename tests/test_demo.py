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
