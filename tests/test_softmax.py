"""softmax against torch with -inf masks, in place, at its extremes, and argument errors. The sweep against
numpy (ragged and vocabulary-sized rows, large logits) is registry cases (ops/softmax.py cases)."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError
from omni_lab.ops.softmax import NMSE_BOUND as BOUND
from omni_lab.ops.softmax import softmax, softmax_ref
from kernel_harness import nmse, rand


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
