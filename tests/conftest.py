import zlib

import numpy as np
import pytest

from omni_lab.gpu import NoAdapterError, runtime


@pytest.fixture(scope="session")
def rt():
    try:
        return runtime()
    except NoAdapterError as e:  # the set-up script installs lavapipe, so this is a broken machine
        pytest.fail(str(e))


@pytest.fixture
def rng(request):
    # A seed per test, stable across runs (str hash is randomised per process), so a failure reproduces.
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


_MEDIA_CHECKPOINTS: dict = {}


def _media_checkpoint(preset: str, seed: int, tmp_path_factory):
    """(path, Transformers float32 model) of a tiny Qwen3-Omni preset, built once a session."""
    from omni_lab.models.tiny_omni import build_tiny_omni
    from omni_lab.reference import load_hf_model

    if preset not in _MEDIA_CHECKPOINTS:
        path = build_tiny_omni(tmp_path_factory.mktemp(preset) / "ckpt", seed=seed, preset=preset)
        _MEDIA_CHECKPOINTS[preset] = path, load_hf_model(path, "float32")
    return _MEDIA_CHECKPOINTS[preset]


@pytest.fixture(scope="session", params=[("tiny", 0), ("tiny-dense", 1)], ids=lambda p: p[0])
def omni_media_checkpoint(request, tmp_path_factory):
    """A tiny Qwen3-Omni of two vision and thinker shapes for the image tests (test_vision_encoder.py,
    test_image_in.py)."""
    return _media_checkpoint(*request.param, tmp_path_factory)


@pytest.fixture(scope="session")
def omni_media_tiny(tmp_path_factory):
    """The first of them alone, for the image tests one shape is enough for (the same build)."""
    return _media_checkpoint("tiny", 0, tmp_path_factory)
