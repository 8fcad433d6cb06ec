"""Image in: the thinker with image prompts (and audio with images) on our kernels against Transformers
(float32, the same weights, patches from the checkpoint's own image processor), on matplotlib's sample
photographs at sizes that are not multiples of 32; DeepStack injections that matter; and the input errors."""

import numpy as np
import pytest
import soundfile as sf
import torch
from matplotlib import cbook
from PIL import Image

from omni_lab.models import vision_encoder as ve
from omni_lab.models.audio_in import INPUTS_EMBEDS, load_audio_inputs
from omni_lab.models.image_in import (ImageFileError, ThinkerWithAudioImages, ThinkerWithImages, hf_activations,
                                      hf_deepstack_sensitivity, hf_generate, load_image_inputs, media_prompt_ids)
from model_checks import assert_greedy_matches
from test_vision_encoder import assert_matches


@pytest.fixture
def checkpoint(omni_media_checkpoint):
    return omni_media_checkpoint


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    hopper = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    out = {"hopper": root / "hopper_75x53.png", "crop": root / "crop_90x130.jpg"}
    hopper.resize((75, 53), Image.BICUBIC).save(out["hopper"])
    hopper.crop((200, 100, 290, 230)).save(out["crop"], quality=90)
    return out


def matches_with_routers(ours, ref, names):
    floats = [n for n in names if not n.endswith(".mlp.router")]
    for n in set(names) - set(floats):
        k = ours[n].shape[1] // 2
        assert (ours[n][:, :k] == ref[n][:, :k]).all(), f"{n}: expert choices differ"
    return assert_matches({n: ours[n] for n in floats}, {n: ref[n] for n in floats}, floats)


def test_thinker_with_two_images_matches_transformers(checkpoint, photos):
    """Every vision and thinker activation, the merged rows at the placeholders, and greedy tokens."""
    path, hf = checkpoint
    pv, grid = load_image_inputs(path, [photos["hopper"], photos["crop"]])
    ids = media_prompt_ids(path, "What is this?", image_grid_thw=grid)
    model = ThinkerWithImages.load(path, max_len=max(len(ids) + 8, pv.shape[0]))
    names = [a.name for a in model.activations(ids, pv, grid)]
    ours = model.forward(ids, pv, grid, taps=names)
    assert matches_with_routers(ours, hf_activations(hf, names, ids, pv, grid), names) > 40
    at = ids == model.cfg.image_token_id
    np.testing.assert_allclose(ours[INPUTS_EMBEDS][at], ours[ve.OUTPUT], rtol=0, atol=0)
    n_new = 6
    assert_greedy_matches(model.generate(ids, pv, grid, n_new, stop_at_eos=False),
                          hf_generate(hf, ids, None, pv, grid, n_new))


def test_every_deepstack_injection_moves_the_thinker(checkpoint, photos):
    """Zeroing one DeepStack feature at a time on the HF side changes the logits: each injection matters in
    the tiny model, so a missing or misplaced one on ours would fail the comparison above."""
    path, hf = checkpoint
    pv, grid = load_image_inputs(path, [photos["crop"]])
    ids = media_prompt_ids(path, "hi", image_grid_thw=grid)
    moved = hf_deepstack_sensitivity(hf, ids, None, pv, grid)
    assert len(moved) >= 2 and min(moved) > 1e-3, moved


def test_audio_and_images_in_one_prompt(omni_media_tiny, photos, tmp_path):
    path, hf = omni_media_tiny
    t = np.arange(8000) / 16000
    wav = tmp_path / "chirp.wav"
    sf.write(wav, (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t)).astype(np.float32), 16000)
    feats = load_audio_inputs(path, [wav], 512)
    pv, grid = load_image_inputs(path, [photos["crop"]])
    ids = media_prompt_ids(path, "and this?", audio_frames=[f.shape[1] for f in feats], image_grid_thw=grid)
    model = ThinkerWithAudioImages.load(path, max_len=max(len(ids) + 8, pv.shape[0]))
    names = [a.name for a in model.activations(ids, feats, pv, grid)]
    ours = model.forward(ids, feats, pv, grid, taps=names)
    ref = hf_activations(hf, names, ids, feats, pv, grid)
    assert matches_with_routers(ours, ref, names) > 40
    assert any("audio_tower" in n for n in names) and any("visual" in n for n in names)
    n_new = 4
    assert_greedy_matches(model.generate(ids, feats, pv, grid, n_new, stop_at_eos=False),
                          hf_generate(hf, ids, feats, pv, grid, n_new))


def test_positions_after_an_image_lag_the_cache_and_are_restored(checkpoint, photos):
    """After an image the text's MRoPE positions trail the cache position by HF's rope_deltas (decode steps
    add it; the greedy tokens above check them against HF); the thinker's positions and hooks are plain text
    again after a forward."""
    path, hf = checkpoint
    pv, grid = load_image_inputs(path, [photos["hopper"]])
    ids = media_prompt_ids(path, "x", image_grid_thw=grid)
    model = ThinkerWithImages.load(path, max_len=max(len(ids) + 8, pv.shape[0]))
    from omni_lab.models.image_in import rope_index

    positions, delta = rope_index(model.cfg.config, ids, grid)
    # the same function on the loaded model (ours calls it with the config alone)
    t = torch.as_tensor(ids)[None]
    want, want_delta = hf.thinker.model.get_rope_index(t, torch.as_tensor(grid), None, torch.ones_like(t))
    np.testing.assert_array_equal(positions, want[:, 0].numpy())
    assert delta == int(want_delta.reshape(-1)[0])
    assert delta < 0 and positions.max() + 1 == len(ids) + delta  # the image's grid is shorter than its tokens
    model.forward(ids, pv, grid)
    assert model.thinker.prompt_positions is None and not model.thinker.hooks


def test_bad_image_files_are_refused_by_name(checkpoint, tmp_path):
    path, _ = checkpoint
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n" * 20)
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (40, 40), (10, 200, 30)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    thin = tmp_path / "thin.png"
    Image.new("RGB", (1, 500)).save(thin)
    for f, what in ((empty, "empty"), (text, "not an image"), (truncated, "not an image"), (thin, "aspect ratio"),
                    (tmp_path / "missing.png", "no such")):
        with pytest.raises(ImageFileError, match=what) as e:
            load_image_inputs(path, [f])
        assert str(f) in str(e.value)


def test_one_pixel_image_is_resized_to_the_smallest_grid(checkpoint, tmp_path):
    """The processor's documented resize (smart_resize) scales a 1x1 image up to its min_pixels."""
    path, _ = checkpoint
    one = tmp_path / "one_pixel.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(one)
    _, grid = load_image_inputs(path, [one])
    assert grid.tolist() == [[1, 4, 4]]  # min_pixels 16x16 at patch 4


def test_cmyk_and_huge_images_are_converted_and_resized(checkpoint, tmp_path):
    """A CMYK jpeg becomes RGB; an image far past the pixel budget is shrunk by the processor to it."""
    path, _ = checkpoint
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (61, 47), (0, 128, 255, 20)).save(cmyk)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (3001, 2203), (90, 20, 200)).save(huge)
    pv, grid = load_image_inputs(path, [cmyk, huge])
    from omni_lab.models.image_in import image_processor

    budget = image_processor(path).size["longest_edge"] // (4 * 4)  # patches of 4x4 pixels
    assert grid[1, 1] * grid[1, 2] <= budget and grid[1, 2] > grid[1, 1]
    assert np.isfinite(pv).all()


def test_quant_report_with_an_image(omni_media_tiny, photos, tmp_path):
    """The Q8_0 drift through the vision encoder and DeepStack into the thinker: the report runs both sides
    over the image prompt and says so."""
    from omni_lab.formats.quantize import quantize_checkpoint
    from omni_lab.report.quant_report import quant_report

    path, _ = omni_media_tiny
    gguf = tmp_path / "q8.gguf"
    quantize_checkpoint(path, gguf, progress=False)
    report = quant_report(path, gguf, text="hi", images=load_image_inputs(path, [photos["crop"]]))
    assert any("image placeholders" in n for n in report.notes)
    assert any(r.name == ve.OUTPUT for r in report.drift.rows)
    assert report.logits.kl_mean < 1e-2


def test_command_line_generate_and_compare_with_images(omni_media_tiny, photos, tmp_path, capsys):
    """`generate --image --image --json` gives HF's greedy tokens; `compare --component vision` passes; a file
    that is not an image exits 2 naming it."""
    import json

    from omni_lab import cli

    path, hf = omni_media_tiny
    files = [str(photos["hopper"]), str(photos["crop"])]
    args = ["generate", "--model", str(path), "--image", files[0], "--image", files[1], "--prompt", "hi",
            "--greedy", "--max-new-tokens", "4", "--json"]
    assert cli.main(args) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pv, grid = load_image_inputs(path, files)
    ids = media_prompt_ids(path, "hi", image_grid_thw=grid)
    assert got["prompt_ids"] == ids.tolist()
    assert_greedy_matches(got["tokens"], hf_generate(hf, ids, None, pv, grid, 4))
    assert cli.main(["compare", "--model", str(path), "--image", files[1], "--component", "vision",
                     "--out", str(tmp_path / "vision"), "--references", str(tmp_path / "refs")]) == 0
    assert (tmp_path / "vision" / "index.html").is_file()
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    assert cli.main(["generate", "--model", str(path), "--image", str(bad), "--prompt", "hi"]) == 2
    assert str(bad) in capsys.readouterr().err
