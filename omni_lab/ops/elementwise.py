"""Elementwise f32 ops: activations (silu, gelu, gelu_tanh, erf), clamp, swiglu, add, mul (with a vector
broadcast along one axis: a row vector by default, one value per channel of [C, T] with axis=0), scale.
Any shape; out=None allocates, and out may be an input (in place)."""

from __future__ import annotations

import math

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect

WG = 256
UNARY = {"silu": 0, "gelu": 1, "gelu_tanh": 2, "scale": 3, "erf": 4, "clamp": 5}
BINARY = {"add": 0, "mul": 1, "swiglu": 2}


def _out(name: str, out: Tensor | None, like: Tensor) -> Tensor:
    if out is None:
        return runtime().empty(like.shape, "f32", label=name)
    expect(name, out.shape == like.shape and out.dtype == "f32", f"out must be {like.shape} f32", out=out)
    return out


def _unary(name: str, x: Tensor, out: Tensor | None, s: float = 0.0, hi: float = 0.0) -> Tensor:
    dtype_in(name, "x", x, ("f32",))
    y = _out(name, out, x)
    n = x.numel
    if n:
        kern = runtime().kernel("elementwise", "unary", WG=WG, OP=UNARY[name])
        kern(-(-n // WG), pack_params(n, 0, float(s), 1, float(hi)), x, y)
    return y


def _binary(name: str, a: Tensor, b: Tensor, out: Tensor | None, broadcast: bool, axis: int = -1) -> Tensor:
    dtype_in(name, "a", a, ("f32",))
    dtype_in(name, "b", b, ("f32",))
    nd = len(a.shape)
    expect(name, nd == 0 or -nd <= axis < nd, f"axis {axis} is not an axis of a", a=a)
    axis = axis % nd if nd else 0
    vec = broadcast and nd >= 1 and b.shape == (a.shape[axis],) and b.shape != a.shape
    what = ""
    if broadcast and nd >= 1:
        what = (" or be a row vector [C] of a's last dim" if axis == nd - 1
                else f" or be a vector [{a.shape[axis]}] of a's axis {axis}")
    expect(name, b.shape == a.shape or vec, "b must have a's shape" + what, a=a, b=b)
    y = _out(name, out, a)
    n = a.numel
    if n:
        inner = math.prod(a.shape[axis + 1:]) if vec else 1
        kern = runtime().kernel("elementwise", "binary", WG=WG, OP=BINARY[name])
        kern(-(-n // WG), pack_params(n, b.numel if vec else 0, 0.0, max(inner, 1), 0.0), a, b, y)
    return y


def silu(x: Tensor, out: Tensor | None = None) -> Tensor:
    """x * sigmoid(x)."""
    return _unary("silu", x, out)


def gelu(x: Tensor, out: Tensor | None = None) -> Tensor:
    """Exact GELU, 0.5 x (1 + erf(x / sqrt(2))): torch's default."""
    return _unary("gelu", x, out)


def gelu_tanh(x: Tensor, out: Tensor | None = None) -> Tensor:
    """GELU with torch's approximate='tanh'."""
    return _unary("gelu_tanh", x, out)


def erf(x: Tensor, out: Tensor | None = None) -> Tensor:
    """The error function (max abs error about 1.2e-7 over all f32)."""
    return _unary("erf", x, out)


def scale(x: Tensor, s: float, out: Tensor | None = None) -> Tensor:
    """x * s."""
    return _unary("scale", x, out, s)


def clamp(x: Tensor, lo: float, hi: float, out: Tensor | None = None) -> Tensor:
    """min(max(x, lo), hi): torch.clamp (code2wav clamps its waveform to [-1, 1])."""
    expect("clamp", lo <= hi, f"lo must be <= hi, got {lo}, {hi}")
    return _unary("clamp", x, out, lo, hi)


def swiglu(gate: Tensor, up: Tensor, out: Tensor | None = None) -> Tensor:
    """silu(gate) * up, same shapes."""
    return _binary("swiglu", gate, up, out, broadcast=False)


def add(a: Tensor, b: Tensor, out: Tensor | None = None, axis: int = -1) -> Tensor:
    """a + b; b has a's shape or is a vector [a.shape[axis]] broadcast along a's other axes: with the
    default axis -1 a row vector [C] added to every row of a [..., C]; axis=0 on a [C, T] adds one value
    per channel (a bias of channels-first activations)."""
    return _binary("add", a, b, out, broadcast=True, axis=axis)


def mul(a: Tensor, b: Tensor, out: Tensor | None = None, axis: int = -1) -> Tensor:
    """a * b; b has a's shape or is a vector [a.shape[axis]] broadcast along a's other axes: with the
    default axis -1 a row vector [C] scaling every row of a [..., C] (LayerScale on [T, C]); axis=0 on a
    [C, T] scales each channel (LayerScale on channels-first activations)."""
    return _binary("mul", a, b, out, broadcast=True, axis=axis)


# -- numpy references (float64 inside, float32 out) ----------------------------------------------

_erf64 = np.vectorize(math.erf, otypes=[np.float64])
_erfc64 = np.vectorize(math.erfc, otypes=[np.float64])


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def erf_ref(x: np.ndarray) -> np.ndarray:
    return _erf64(_f64(x)).astype(np.float32)


def silu_ref(x: np.ndarray) -> np.ndarray:
    x = _f64(x)
    with np.errstate(over="ignore"):
        return (x / (1.0 + np.exp(-x))).astype(np.float32)


def gelu_ref(x: np.ndarray) -> np.ndarray:
    x = _f64(x)
    # erfc(-z) = 1 + erf(z) without the cancellation that float64 too suffers in the negative tail.
    return (0.5 * x * _erfc64(-x / math.sqrt(2.0))).astype(np.float32)


def gelu_tanh_ref(x: np.ndarray) -> np.ndarray:
    x = _f64(x)
    u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
    # 0.5 x (1 + tanh(u)) written as x * sigmoid(2u), exact in the negative tail.
    with np.errstate(over="ignore"):
        return (x / (1.0 + np.exp(-2.0 * u))).astype(np.float32)


def scale_ref(x: np.ndarray, s: float) -> np.ndarray:
    return (_f64(x) * np.float32(s)).astype(np.float32)


def clamp_ref(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip(np.asarray(x, np.float32), np.float32(lo), np.float32(hi))


def swiglu_ref(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    g = _f64(gate)
    with np.errstate(over="ignore"):
        return (g / (1.0 + np.exp(-g)) * _f64(up)).astype(np.float32)


def add_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_f64(a) + _f64(b)).astype(np.float32)


def mul_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_f64(a) * _f64(b)).astype(np.float32)
