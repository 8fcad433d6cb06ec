"""Elementwise ops in their saturated tails, erf's error over the whole f32 range against torch, broadcasts
over leading dims, in place, and argument errors. The sweeps against numpy (ragged sizes, row broadcasts)
are registry cases (ops/elementwise.py cases)."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError
from omni_lab.ops import elementwise as ew
from omni_lab.ops.elementwise import BINARY_OPS as BINARY
from omni_lab.ops.elementwise import NMSE_BOUND as BOUND
from omni_lab.ops.elementwise import UNARY_OPS as UNARY
from kernel_harness import nmse, rand


@pytest.mark.parametrize("op", ["silu", "gelu", "gelu_tanh"])
def test_activations_far_out(rt, op):
    """Saturated tails: no overflow to NaN/inf, the right limits (x for large x, 0 for very negative), and
    relative precision in the negative tail where the result is tiny but not yet 0."""
    fn, ref = UNARY[op]
    x = np.array([-3e38, -1e30, -1e6, -200.0, -90.0, -30.0, -9.0, -1e-30, 0.0, 1e-30, 9.0, 30.0, 90.0, 200.0, 1e6, 1e30, 3e38],
                 dtype=np.float32)
    y = fn(rt.upload(x)).numpy()
    want = ref(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=1e-37)


def test_erf_error_over_all_f32(rt, rng):
    """Max abs error <= 2e-7: dense over [-6, 6] where erf bends, random bit patterns over all finite
    f32, and the special values."""
    dense = np.linspace(-6.0, 6.0, 1_000_001, dtype=np.float32)
    bits = rng.integers(0, 2**32, size=1_000_000, dtype=np.uint64).astype(np.uint32)
    anywhere = bits.view(np.float32)
    anywhere = anywhere[np.isfinite(anywhere)]
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, 0.85, np.nextafter(np.float32(0.85), np.float32(1)),
                        3.95, np.nextafter(np.float32(3.95), np.float32(0)), 3.4e38, -3.4e38, np.inf, -np.inf],
                       dtype=np.float32)
    x = np.concatenate([dense, anywhere, special])
    y = ew.erf(rt.upload(x)).numpy().astype(np.float64)
    want = torch.erf(torch.from_numpy(x.astype(np.float64))).numpy()
    err = np.abs(y - want)
    assert err.max() <= 2e-7, f"erf max abs error {err.max():.3g} at x={x[err.argmax()]!r}"
    assert np.array_equal(np.signbit(y[-len(special):][:2]), [False, True])  # erf(+-0) = +-0


def test_axis_broadcast_in_place(rt, rng):
    a, b = rand(rng, 24, 131), rand(rng, 24)
    ta = rt.upload(a)
    ew.mul(ta, rt.upload(b), out=ta, axis=0)
    assert nmse(ta.numpy(), ew.mul_ref(a, b[:, None])) < BOUND


def test_broadcast_over_leading_dims(rt, rng):
    a, b = rand(rng, 2, 3, 5), rand(rng, 5)
    assert nmse(ew.add(rt.upload(a), rt.upload(b)).numpy(), ew.add_ref(a, b)) < BOUND


@pytest.mark.parametrize("op", list(UNARY))
def test_unary_in_place(rt, rng, op):
    fn, ref = UNARY[op]
    x = rand(rng, 33, 31, scale=3.0)
    t = rt.upload(x)
    assert fn(t, out=t) is t
    assert nmse(t.numpy(), ref(x)) < BOUND


@pytest.mark.parametrize("op", list(BINARY))
def test_binary_in_place(rt, rng, op):
    fn, ref = BINARY[op]
    a, b = rand(rng, 257, 3), rand(rng, 257, 3)
    ta, tb = rt.upload(a), rt.upload(b)
    fn(ta, tb, out=ta)
    assert nmse(ta.numpy(), ref(a, b)) < BOUND
    ta = rt.upload(a)
    fn(ta, tb, out=tb)  # out = the second input
    assert nmse(tb.numpy(), ref(a, b)) < BOUND
    ta = rt.upload(a)
    fn(ta, ta, out=ta)  # every binding the same buffer
    assert nmse(ta.numpy(), ref(a, a)) < BOUND


def test_in_place_broadcast(rt, rng):
    a, b = rand(rng, 40, 9), rand(rng, 9)
    ta = rt.upload(a)
    ew.mul(ta, rt.upload(b), out=ta)
    assert nmse(ta.numpy(), ew.mul_ref(a, b)) < BOUND


def test_errors_name_the_kernel(rt):
    f = rt.upload(np.zeros((4, 8), np.float32))
    with pytest.raises(KernelError, match=r"silu: x must be f32, got i32 \(x=\(4,\) i32\)"):
        ew.silu(rt.upload(np.zeros(4, np.int32)))
    with pytest.raises(KernelError, match=r"add: b must have a's shape or be a row vector .*a=\(4, 8\) f32, b=\(4,\) f32"):
        ew.add(f, rt.upload(np.zeros(4, np.float32)))
    with pytest.raises(KernelError, match=r"swiglu: b must have a's shape \(a=\(4, 8\) f32, b=\(8,\) f32\)"):
        ew.swiglu(f, rt.upload(np.zeros(8, np.float32)))
    with pytest.raises(KernelError, match=r"mul: out must be \(4, 8\) f32"):
        ew.mul(f, f, out=rt.upload(np.zeros((8, 4), np.float32)))
    with pytest.raises(KernelError, match=r"gelu: out must be \(4, 8\) f32"):
        ew.gelu(f, out=rt.upload(np.zeros((4, 8), np.int32)))
    with pytest.raises(KernelError, match=r"mul: b must have a's shape or be a vector \[4\] of a's axis 0 \(a=\(4, 8\) f32, b=\(8,\) f32\)"):
        ew.mul(f, rt.upload(np.zeros(8, np.float32)), axis=0)
    with pytest.raises(KernelError, match=r"add: axis 2 is not an axis of a \(a=\(4, 8\) f32\)"):
        ew.add(f, rt.upload(np.zeros(8, np.float32)), axis=2)
    with pytest.raises(KernelError, match=r"clamp: lo must be <= hi, got 1.0, -1.0"):
        ew.clamp(f, 1.0, -1.0)
    with pytest.raises(KernelError, match=r"mul: b must be f32, got bf16"):
        ew.mul(f, rt.upload(np.zeros(8, np.float32), "bf16"))
