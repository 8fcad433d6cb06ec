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


@pytest.fixture(scope="session", params=[("tiny", 0), ("tiny-dense", 1)], ids=lambda p: p[0])
def omni_media_checkpoint(request, tmp_path_factory):
    """(path, Transformers float32 model) of a tiny Qwen3-Omni of two vision and thinker shapes, built once for
    the image tests (test_vision_encoder.py, test_image_in.py)."""
    from omni_lab.models.tiny_omni import build_tiny_omni
    from omni_lab.reference import load_hf_model

    preset, seed = request.param
    path = build_tiny_omni(tmp_path_factory.mktemp(preset) / "ckpt", seed=seed, preset=preset)
    return path, load_hf_model(path, "float32")
