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
