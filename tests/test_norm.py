"""RMSNorm and LayerNorm against HF's Qwen3RMSNorm and torch's LayerNorm: QK-norm's per-head view, in
place, a zero row, and argument errors. The sweeps against numpy are registry cases (ops/norm.py cases)."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError
from omni_lab.ops import norm
from omni_lab.ops.norm import NMSE_BOUND as BOUND
from kernel_harness import nmse, rand


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
