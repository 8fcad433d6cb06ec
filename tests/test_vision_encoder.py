"""The vision encoder on our kernels against Transformers (float32, the same BF16 weights, the same patches
from the checkpoint's own image processor) on real photographs (matplotlib's sample images, cropped and
resized with Pillow to sizes that are not multiples of 32), two images of different sizes in one forward;
a planted bug in one vision layer is found where it is."""

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image

from omni_lab.compare import Bounds
from omni_lab.gpu import runtime
from omni_lab.models import vision_encoder as ve
from omni_lab.models.image_in import load_image_inputs
from omni_lab.models.vision_encoder import VisionEncoder
from omni_lab.workbench import compare_model

@pytest.fixture
def checkpoint(omni_media_checkpoint):
    return omni_media_checkpoint


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """name -> file: Grace Hopper resized to 75x53 (png), a 200x100 crop of her (jpeg), and the logo (a
    palette png with transparency, 96x41)."""
    root = tmp_path_factory.mktemp("photos")
    hopper = Image.open(cbook.get_sample_data("grace_hopper.jpg"))
    out = {"hopper": root / "hopper_75x53.png", "crop": root / "crop_200x100.jpg", "logo": root / "logo.png"}
    hopper.convert("RGB").resize((75, 53), Image.BICUBIC).save(out["hopper"])
    hopper.crop((100, 50, 300, 150)).save(out["crop"], quality=90)
    logo = Image.open(cbook.get_sample_data("logo2.png")).convert("RGBA").resize((96, 41))
    logo.convert("P", palette=Image.ADAPTIVE).save(out["logo"])
    return out


def assert_matches(ours: dict, ref: dict, names) -> int:
    """Every activation at cosine >= 0.99999 and MSE < 1e-5; returns the count."""
    assert list(ref) == list(names)
    for n in names:
        a, b = ours[n].astype(np.float64), ref[n].astype(np.float64)
        assert a.shape == b.shape, f"{n}: {a.shape} vs {b.shape}"
        cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert cos >= 0.99999 and float(((a - b) ** 2).mean()) < 1e-5, f"{n}: cosine {cos:.7f}"
    return len(names)


def test_every_vision_activation_matches_transformers(checkpoint, photos):
    """Two photographs of different sizes in one forward: their attention stays inside each image, the position
    grid is interpolated to each grid, and every DeepStack merger matches."""
    path, hf = checkpoint
    pv, grid = load_image_inputs(path, [photos["hopper"], photos["crop"]])
    assert len(grid) == 2 and len({tuple(g) for g in grid}) == 2 and (grid[:, 1] != grid[:, 2]).all()
    model = VisionEncoder.load(path, max_len=pv.shape[0])
    names = [a.name for a in model.activations(pv.shape[0])]
    deep = {ve.deepstack_name(j) for j in range(len(model.cfg.deepstack_visual_indexes))}
    assert deep <= set(names) and len(deep) >= 2
    ours = model.forward(pv, grid, taps=names)
    assert assert_matches(ours, ve.hf_activations(hf, names, pv, grid), names) == len(names)
    # the patches' positions matter: the first block's input is not the patch embedding alone
    assert np.abs(ours[ve.POSITIONS] - ours[f"{ve.PREFIX}.patch_embed"]).max() > 1e-2


def test_images_alone_equal_their_part_of_a_batch(checkpoint, photos):
    """Attention restricted to each image: the crop's rows of a two-image forward are its rows alone."""
    path, _ = checkpoint
    pv, grid = load_image_inputs(path, [photos["hopper"], photos["crop"]])
    pv1, grid1 = load_image_inputs(path, [photos["crop"]])
    model = VisionEncoder.load(path, max_len=pv.shape[0])
    both = model.forward(pv, grid)[ve.OUTPUT]
    alone = model.forward(pv1, grid1)[ve.OUTPUT]
    np.testing.assert_allclose(both[-len(alone):], alone, rtol=0, atol=1e-5)


def test_tiny_parameters_that_hf_starts_at_identity_are_drawn(checkpoint):
    _, hf = checkpoint
    visual = hf.thinker.model.visual
    for name, p in visual.named_parameters():
        p = p.detach()
        if name.endswith(("norm1.weight", "norm2.weight", "ln_q.weight")):
            assert float((p - 1).abs().max()) > 0.05, name
        elif name.endswith(".bias"):
            assert float(p.abs().max()) > 0.01, name


def test_planted_bug_in_one_vision_layer_is_the_first_divergence(omni_media_tiny, photos, tmp_path, rng):
    path, _ = omni_media_tiny
    pv, grid = load_image_inputs(path, [photos["crop"]])
    model = VisionEncoder.load(path, max_len=pv.shape[0])
    w = model.blocks[1].norm2.weight
    runtime().write(w, w.numpy() * (1 + 0.2 * rng.standard_normal(w.shape).astype(np.float32)))
    names = [a.name for a in model.activations(pv.shape[0])]
    ours = model.forward(pv, grid, taps=names)
    inputs = {"pixel_values": pv, "image_grid_thw": grid}
    comparison, _, _ = compare_model(path, inputs, tmp_path / "bug", root=tmp_path / "ref", bounds=Bounds(),
                                     ours=ours, component="vision")
    fd = comparison.first_divergence
    assert fd is not None and fd.name == f"{ve.PREFIX}.blocks.1.norm2", comparison.summary()
    assert all(r.within_bounds for r in comparison.rows[:fd.index])


def test_palette_image_is_converted_to_rgb(checkpoint, photos):
    path, _ = checkpoint
    assert Image.open(photos["logo"]).mode == "P"
    pv, grid = load_image_inputs(path, [photos["logo"]])
    assert pv.shape == (int(np.prod(grid, axis=1).sum()), 3 * 2 * 4 * 4) and np.isfinite(pv).all()
