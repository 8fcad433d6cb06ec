"""softmax against float64 numpy and torch: ragged and vocabulary-sized rows, large logits, -inf masks,
in place, sentinels, and argument errors."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError
from omni_lab.ops.softmax import softmax, softmax_ref
from kernel_harness import NMSE_ELEMENTWISE, check_sentinels, nmse, padded_output, rand

# exp to ~1.3 ulp and a tree-reduced f32 sum: NMSE near 1e-14.
BOUND = NMSE_ELEMENTWISE * 1e-4

SHAPES = [(1, 1), (3, 7), (7, 33), (33, 100), (2, 257), (5, 1000), (300, 128), (3, 4099), (1, 152_064), (2, 200_003)]


@pytest.mark.parametrize("rows,cols", SHAPES)
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_softmax(rt, rng, rows, cols, scale):
    x = rand(rng, rows, cols, scale=scale) + 1000.0 * rng.standard_normal((rows, 1)).astype(np.float32)  # row offsets: stability
    out = padded_output((rows, cols))
    softmax(rt.upload(x), out=out)
    y = out.numpy()
    assert nmse(y, softmax_ref(x)) < BOUND
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)
    check_sentinels(out)


def test_softmax_matches_torch_with_causal_mask(rt, rng):
    """Attention-style rows: a causal -inf mask over scores; masked entries are exactly 0."""
    t = 37
    x = rand(rng, t, t, scale=4.0)
    x[np.triu_indices(t, k=1)] = -np.inf
    y = softmax(rt.upload(x)).numpy()
    want = torch.softmax(torch.from_numpy(x), dim=-1).numpy()
    assert nmse(y, want) < BOUND
    assert (y[np.triu_indices(t, k=1)] == 0).all()
    assert y[0, 0] == 1.0


def test_softmax_in_place_and_leading_dims(rt, rng):
    x = rand(rng, 2, 3, 333, scale=5.0)
    t = rt.upload(x)
    assert softmax(t, out=t) is t
    assert nmse(t.numpy(), softmax_ref(x)) < BOUND


def test_softmax_extremes(rt):
    """One dominant entry (others underflow to 0) and a constant row (uniform)."""
    x = np.zeros((2, 1000), np.float32)
    x[0, 123] = 200.0
    y = softmax(rt.upload(x)).numpy()
    assert y[0, 123] == 1.0 and np.count_nonzero(y[0]) == 1
    np.testing.assert_allclose(y[1], 1e-3, rtol=1e-6)


def test_errors_name_the_kernel(rt):
    x = rt.upload(np.zeros((4, 8), np.float32))
    with pytest.raises(KernelError, match=r"softmax: x must be f32, got i32 \(x=\(4, 8\) i32\)"):
        softmax(rt.upload(np.zeros((4, 8), np.int32)))
    with pytest.raises(KernelError, match=r"softmax: out must be \(4, 8\) f32 \(out=\(4, 9\) f32, x=\(4, 8\) f32\)"):
        softmax(x, out=rt.upload(np.zeros((4, 9), np.float32)))
    with pytest.raises(KernelError, match=r"softmax: x must be \[..., C\] with C > 0"):
        softmax(x.view((4, 0)))
