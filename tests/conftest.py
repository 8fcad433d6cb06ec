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
    # A seed per test, so a failure reproduces alone.
    return np.random.default_rng(abs(hash(request.node.nodeid)) % (2**32))
