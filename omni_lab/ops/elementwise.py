"""Elementwise f32 ops: activations (silu, gelu, gelu_tanh, erf), clamp, swiglu, add, mul (with a vector
broadcast along one axis: a row vector by default, one value per channel of [C, T] with axis=0), scale.
Any shape; out=None allocates, and out may be an input (in place)."""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect
from .registry import NMSE_ELEMENTWISE, padded_output, rand, sweep

WG = 256
UNARY = {"silu": 0, "gelu": 1, "gelu_tanh": 2, "scale": 3, "erf": 4, "clamp": 5}
BINARY = {"add": 0, "mul": 1, "swiglu": 2, "gate": 3, "gate_add": 4}


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


def gate(a: Tensor, logits: Tensor, out: Tensor | None = None, axis: int = 0) -> Tensor:
    """a * sigmoid(logits): logits [T] one gate a row of a [T, C] (axis 0, the talker's shared expert), or
    a's shape."""
    return _binary("gate", a, logits, out, broadcast=True, axis=axis)


def gate_add(acc: Tensor, a: Tensor, logits: Tensor, axis: int = 0) -> Tensor:
    """acc += a * sigmoid(logits) in one dispatch (gate then add, rounded as those two round); shapes as
    gate's, acc of a's shape and not a or logits. Returns acc."""
    expect("gate_add", acc.shape == a.shape and acc.buffer is not a.buffer and acc.buffer is not logits.buffer,
           "acc must have a's shape and be neither a nor logits", acc=acc, a=a, logits=logits)
    return _binary("gate_add", a, logits, acc, broadcast=True, axis=axis)


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


def gate_add_ref(acc: np.ndarray, a: np.ndarray, logits: np.ndarray) -> np.ndarray:
    return (_f64(acc) + _f64(gate_ref(a, logits))).astype(np.float32)


def swiglu_ref(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    g = _f64(gate)
    with np.errstate(over="ignore"):
        return (g / (1.0 + np.exp(-g)) * _f64(up)).astype(np.float32)


def add_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_f64(a) + _f64(b)).astype(np.float32)


def mul_ref(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_f64(a) * _f64(b)).astype(np.float32)


def gate_ref(a: np.ndarray, logits: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (_f64(a) / (1.0 + np.exp(-_f64(logits)))).astype(np.float32)


# -- registry cases (ops/registry.py) --------------------------------------------------------------

SIZES = [1, 3, 7, 33, 100, 257, 1000, 4099, 200_003]
BROADCAST_SHAPES = [(1, 1), (3, 7), (33, 100), (7, 257), (1000, 33), (5, 4099)]
# b along one axis of a: a per-channel scale or bias of channels-first [C, T] activations (axis 0).
AXIS_SHAPES = [((1, 1), 0), ((3, 7), 0), ((96, 257), 0), ((33, 4099), 0), ((7, 1), 0), ((2, 5, 33), 1), ((3, 4, 5), 0),
               ((4, 6), 1), ((4, 6), -2)]
# f32 rounding is the only error left: whole sweeps sit near 1e-15. The far negative tails of gelu and
# gelu_tanh (values below 1e-7) keep about 1.5e-5 relative error (the argument's rounding amplified by
# exp), which a one-element case can meet: 2e-10.
NMSE_BOUND = NMSE_ELEMENTWISE * 1e-2

# Each op with its numpy reference, by name (scale with a fixed factor).
UNARY_OPS = {
    "silu": (silu, silu_ref),
    "gelu": (gelu, gelu_ref),
    "gelu_tanh": (gelu_tanh, gelu_tanh_ref),
    "erf": (erf, erf_ref),
    "scale": (lambda x, out=None: scale(x, -0.37, out=out), lambda x: scale_ref(x, -0.37)),
    "clamp": (lambda x, out=None: clamp(x, -1.0, 1.5, out=out), lambda x: clamp_ref(x, -1.0, 1.5)),
}
BINARY_OPS = {"add": (add, add_ref), "mul": (mul, mul_ref), "swiglu": (swiglu, swiglu_ref),
              "gate": (lambda a, b, out=None, axis=-1: gate(a, b, out=out, axis=axis), gate_ref)}


def _unary_case(rng, n, op):
    fn, ref = UNARY_OPS[op]
    x = rand(rng, n, scale=4.0)
    out = padded_output((n,))
    fn(runtime().upload(x), out=out)
    return out.numpy(), ref(x)


def _binary_case(rng, op, n=None, rows=None, cols=None, shape=None, axis=-1):
    """Same shapes (n), a row vector b [cols] broadcast over a [rows, cols], or b [shape[axis]] along `axis`."""
    fn, ref = BINARY_OPS[op]
    if shape is not None:
        a, b = rand(rng, *shape), rand(rng, shape[axis])
        bshape = [1] * len(shape)
        bshape[axis] = shape[axis]
        want = ref(a, b.reshape(bshape))
    elif n is None:
        a, b = rand(rng, rows, cols), rand(rng, cols)
        want = ref(a, b[None, :])
    else:
        a, b = rand(rng, n, scale=3.0), rand(rng, n, scale=3.0)
        want = ref(a, b)
    out = padded_output(a.shape)
    fn(runtime().upload(a), runtime().upload(b), out=out, **({"axis": axis} if shape is not None else {}))
    return out.numpy(), want


def _gate_add_case(rng, rows, cols):
    rt = runtime()
    acc, a, logits = rand(rng, rows, cols), rand(rng, rows, cols), rand(rng, rows, scale=4.0)
    out = padded_output((rows, cols))
    rt.write(out, acc)
    gate_add(out, rt.upload(a), rt.upload(logits))
    return out.numpy(), gate_add_ref(acc, a, logits[:, None])


def cases():
    quick = {"gelu": [dict(n=4099)], "swiglu": [dict(n=4099)], "mul": [dict(rows=33, cols=100)]}
    out = []
    for op in UNARY_OPS:
        out += sweep("elementwise", op, NMSE_BOUND, partial(_unary_case, op=op), [dict(n=n) for n in SIZES],
                     quick=quick.get(op, []))
    for op in BINARY_OPS:
        grid = [dict(n=n) for n in SIZES]
        if op != "swiglu":
            grid += [dict(rows=r, cols=c) for r, c in BROADCAST_SHAPES] + [dict(shape=s, axis=a) for s, a in AXIS_SHAPES]
        out += sweep("elementwise", op, NMSE_BOUND, partial(_binary_case, op=op), grid, quick=quick.get(op, []))
    return out + sweep("elementwise", "gate_add", NMSE_BOUND, _gate_add_case,
                       [dict(rows=r, cols=c) for r, c in [(1, 1024), (3, 7), (17, 300)]], quick=[dict(rows=3, cols=7)])
