"""RMSNorm and LayerNorm against float64 numpy, HF's Qwen3RMSNorm and torch's LayerNorm: ragged row
lengths, QK-norm's per-head view, in place, sentinels, and argument errors."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError
from omni_lab.ops import norm
from kernel_harness import NMSE_ELEMENTWISE, check_sentinels, nmse, padded_output, rand

# Row sums in f32 over up to 1e5 elements: NMSE stays near 1e-14.
BOUND = NMSE_ELEMENTWISE * 1e-4

SHAPES = [(1, 1), (3, 7), (7, 33), (33, 100), (2, 257), (5, 1000), (4, 2048), (3, 4099), (1, 100_003), (300, 128)]


@pytest.mark.parametrize("rows,d", SHAPES)
def test_rmsnorm(rt, rng, rows, d):
    x = rand(rng, rows, d, scale=3.0)
    w = 1.0 + rand(rng, d, scale=0.2)
    out = padded_output((rows, d))
    norm.rmsnorm(rt.upload(x), rt.upload(w), 1e-6, out=out)
    assert nmse(out.numpy(), norm.rmsnorm_ref(x, w, 1e-6)) < BOUND
    check_sentinels(out)


def test_rmsnorm_matches_hf_qwen3(rt, rng):
    """Qwen3's QK-norm: q [T, H, head_dim] normalised per head with Qwen3RMSNorm (float32), in place."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    t, h, hd, eps = 9, 16, 128, 1e-6
    q = rand(rng, t, h, hd, scale=2.0)
    module = Qwen3RMSNorm(hd, eps=eps)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(1.0 + rand(rng, hd, scale=0.3)))
        want = module(torch.from_numpy(q)).numpy()
    tq = rt.upload(q)
    norm.rmsnorm(tq.view((t * h, hd)), rt.upload(module.weight.detach().numpy()), eps, out=tq.view((t * h, hd)))  # [T*H, hd]
    got = tq.numpy()
    assert nmse(got, want) < BOUND
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_rmsnorm_in_place_and_leading_dims(rt, rng):
    x = rand(rng, 2, 5, 33)
    w = rand(rng, 33)
    t = rt.upload(x)
    assert norm.rmsnorm(t, rt.upload(w), 1e-5, out=t) is t
    assert nmse(t.numpy(), norm.rmsnorm_ref(x, w, 1e-5)) < BOUND


def test_rmsnorm_zero_row_and_eps(rt):
    """A zero row gives zeros (rsqrt(eps) is finite); a large eps is honoured."""
    x = np.zeros((2, 64), np.float32)
    x[1] = 1e-3
    w = np.ones(64, np.float32)
    y = norm.rmsnorm(rt.upload(x), rt.upload(w), 1e-2).numpy()
    assert nmse(y, norm.rmsnorm_ref(x, w, 1e-2)) < BOUND
    assert (y[0] == 0).all()


@pytest.mark.parametrize("rows,d", SHAPES)
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_layernorm(rt, rng, rows, d, affine):
    # An offset mean and a small spread: E[x^2] - mean^2 would lose most of its digits here.
    x = 50.0 + rand(rng, rows, d, scale=0.5)
    w = rand(rng, d) if affine in ("both", "weight") else None
    b = rand(rng, d) if affine in ("both", "bias") else None
    out = padded_output((rows, d))
    norm.layernorm(rt.upload(x), w if w is None else rt.upload(w), b if b is None else rt.upload(b), 1e-5, out=out)
    assert nmse(out.numpy(), norm.layernorm_ref(x, w, b, 1e-5)) < BOUND
    check_sentinels(out)


def test_layernorm_matches_torch(rt, rng):
    x = rand(rng, 17, 1280, scale=2.0)
    ln = torch.nn.LayerNorm(1280, eps=1e-5)
    with torch.no_grad():
        ln.weight.copy_(torch.from_numpy(rand(rng, 1280)))
        ln.bias.copy_(torch.from_numpy(rand(rng, 1280)))
        want = ln(torch.from_numpy(x)).numpy()
    t = rt.upload(x)
    norm.layernorm(t, rt.upload(ln.weight.detach().numpy()), rt.upload(ln.bias.detach().numpy()), 1e-5, out=t)
    got = t.numpy()
    assert nmse(got, want) < BOUND
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_errors_name_the_kernel(rt):
    x = rt.upload(np.zeros((4, 8), np.float32))
    w = rt.upload(np.ones(8, np.float32))
    with pytest.raises(KernelError, match=r"rmsnorm: weight must be \[8\] \(x's last dim\) \(weight=\(7,\) f32\)"):
        norm.rmsnorm(x, rt.upload(np.ones(7, np.float32)), 1e-6)
    with pytest.raises(KernelError, match=r"rmsnorm: x must be f32, got bf16"):
        norm.rmsnorm(rt.upload(np.zeros((4, 8), np.float32), "bf16"), w, 1e-6)
    with pytest.raises(KernelError, match=r"rmsnorm: out must be \(4, 8\) f32 \(out=\(8, 4\) f32, x=\(4, 8\) f32\)"):
        norm.rmsnorm(x, w, 1e-6, out=rt.upload(np.zeros((8, 4), np.float32)))
    with pytest.raises(KernelError, match=r"layernorm: bias must be f32, got i32"):
        norm.layernorm(x, w, rt.upload(np.zeros(8, np.int32)), 1e-5)
    with pytest.raises(KernelError, match=r"layernorm: x must be \[..., D\] with D > 0"):
        norm.layernorm(x.view((4, 0)), None, None, 1e-5)


@pytest.mark.parametrize("rows,d,in_place", [(1, 1024, True), (3, 7, False), (5, 257, True), (2, 2048, False)])
def test_add_rmsnorm_equals_add_then_rmsnorm(rt, rng, rows, d, in_place):
    h, delta, w = rand(rng, rows, d), rand(rng, rows, d), rand(rng, d)
    ht = rt.upload(h)
    out_h = ht if in_place else padded_output((rows, d))
    out = padded_output((rows, d))
    norm.add_rmsnorm(ht, rt.upload(delta), rt.upload(w), 1e-6, out_h=out_h, out=out)
    np.testing.assert_array_equal(out_h.numpy(), h + delta)  # the same f32 add
    assert nmse(out.numpy(), norm.rmsnorm_ref(h + delta, w, 1e-6)) < 1e-11
    check_sentinels(out)
    if not in_place:
        check_sentinels(out_h)
