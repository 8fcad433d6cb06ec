"""Row normalisations in f32: RMSNorm (HF Qwen3RMSNorm, also per head for QK-norm) and LayerNorm
(torch.nn.LayerNorm). x is [..., D]; every leading dimension is a row. out may be x (in place)."""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime, tuning
from ._check import dtype_in, expect
from .registry import NMSE_ELEMENTWISE, padded_output, rand, require, sweep

_dummy: Tensor | None = None


def workgroup_for(d: int) -> int:
    """Threads per row for the one-workgroup-per-row kernels (norms, softmax, argmax, embedding): a power of
    two giving each thread about 4 elements, within the tuning table's [row_wg_min, row_wg_max]."""
    table = tuning.current()
    return min(table.row_wg_max, max(table.row_wg_min, 1 << max(0, (-(-d // 4) - 1).bit_length())))


def _rows(kernel: str, x: Tensor, out: Tensor | None) -> tuple[int, int, Tensor]:
    dtype_in(kernel, "x", x, ("f32",))
    expect(kernel, len(x.shape) >= 1 and x.shape[-1] > 0, "x must be [..., D] with D > 0", x=x)
    d = x.shape[-1]
    if out is None:
        out = runtime().empty(x.shape, "f32", label=kernel)
    expect(kernel, out.shape == x.shape and out.dtype == "f32", f"out must be {x.shape} f32", out=out, x=x)
    return x.numel // d, d, out


def _vector(kernel: str, name: str, v: Tensor, d: int) -> None:
    dtype_in(kernel, name, v, ("f32",))
    expect(kernel, v.shape == (d,), f"{name} must be [{d}] (x's last dim)", **{name: v})


def rmsnorm(x: Tensor, weight: Tensor, eps: float, out: Tensor | None = None) -> Tensor:
    """x * rsqrt(mean(x^2, -1) + eps) * weight. x [..., D] f32, weight [D] f32."""
    rows, d, out = _rows("rmsnorm", x, out)
    _vector("rmsnorm", "weight", weight, d)
    if rows:
        kern = runtime().kernel("norm", "rmsnorm", WG=workgroup_for(d))
        kern(rows, pack_params(rows, d, float(eps), 0), x, weight, out)
    return out


def add_rmsnorm(h: Tensor, delta: Tensor, weight: Tensor, eps: float, out_h: Tensor | None = None,
                out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h' = h + delta (into out_h, which may be h), then rmsnorm(h') into out: the residual add of a
    decoder layer and the norm that follows, in one dispatch. Returns (h', normed)."""
    rows, d, out = _rows("add_rmsnorm", h, out)
    out_h = h if out_h is None else out_h
    for name, t in (("delta", delta), ("out_h", out_h)):
        expect("add_rmsnorm", t.shape == h.shape and t.dtype == "f32", f"{name} must be {h.shape} f32", h=h, **{name: t})
    _vector("add_rmsnorm", "weight", weight, d)
    if rows:
        kern = runtime().kernel("norm", "add_rmsnorm", WG=workgroup_for(d))
        kern(rows, pack_params(rows, d, float(eps), 0), h, weight, out, out_h, delta)
    return out_h, out


def add_rmsnorm_q8(h: Tensor, delta: Tensor, weight: Tensor, eps: float, out_h: Tensor, out: Tensor,
                   quantized: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """add_rmsnorm, and its output quantized for the Q8_0 matvecs that read it (ops/q8_0.py's
    quantize_activations values) into quantized = (xq [R, D/4] u32, xd [R, D/32] f32), in one dispatch.
    D % 32 == 0. Returns (h', normed)."""
    rows, d, out = _rows("add_rmsnorm_q8", h, out)
    expect("add_rmsnorm_q8", d % 32 == 0, f"D must be a multiple of 32, got {d}", h=h)
    for name, t in (("delta", delta), ("out_h", out_h)):
        expect("add_rmsnorm_q8", t.shape == h.shape and t.dtype == "f32", f"{name} must be {h.shape} f32", h=h, **{name: t})
    _vector("add_rmsnorm_q8", "weight", weight, d)
    xq, xd = quantized
    expect("add_rmsnorm_q8", xq.numel == rows * d // 4 and xq.dtype == "u32" and xd.numel == rows * d // 32
           and xd.dtype == "f32", f"quantized must be ([{rows}, {d // 4}] u32, [{rows}, {d // 32}] f32)", xq=xq, xd=xd)
    if rows:
        kern = runtime().kernel("norm", "add_rmsnorm_q8", WG=workgroup_for(d))
        kern(rows, pack_params(rows, d, float(eps), 0), h, weight, out, out_h, delta, xq, xd)
    return out_h, out


def layernorm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
              out: Tensor | None = None) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias, biased variance; weight and bias may be None."""
    global _dummy
    rows, d, out = _rows("layernorm", x, out)
    if weight is not None:
        _vector("layernorm", "weight", weight, d)
    if bias is not None:
        _vector("layernorm", "bias", bias, d)
    if rows:
        if _dummy is None:
            _dummy = runtime().empty((4,), "f32", label="layernorm.absent")
        flags = int(weight is not None) | int(bias is not None) << 1
        kern = runtime().kernel("norm", "layernorm", WG=workgroup_for(d))
        kern(rows, pack_params(rows, d, float(eps), flags), x,
             weight if weight is not None else _dummy, bias if bias is not None else _dummy, out)
    return out


def rmsnorm_ref(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    x64 = np.asarray(x, dtype=np.float64)
    r = 1.0 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps)
    return (x64 * r * np.asarray(weight, dtype=np.float64)).astype(np.float32)


def layernorm_ref(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float) -> np.ndarray:
    x64 = np.asarray(x, dtype=np.float64)
    c = x64 - x64.mean(axis=-1, keepdims=True)
    y = c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + eps)
    if weight is not None:
        y = y * np.asarray(weight, dtype=np.float64)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y.astype(np.float32)


# -- registry cases (ops/registry.py) --------------------------------------------------------------

# Row sums in f32 over up to 1e5 elements: NMSE stays near 1e-14.
NMSE_BOUND = NMSE_ELEMENTWISE * 1e-4
SHAPES = [(1, 1), (3, 7), (7, 33), (33, 100), (2, 257), (5, 1000), (4, 2048), (3, 4099), (1, 100_003), (300, 128)]
AFFINE = ("both", "weight", "bias", "none")


def _rmsnorm_case(rng, rows, d):
    rt = runtime()
    x = rand(rng, rows, d, scale=3.0)
    w = 1.0 + rand(rng, d, scale=0.2)
    out = padded_output((rows, d))
    rmsnorm(rt.upload(x), rt.upload(w), 1e-6, out=out)
    return out.numpy(), rmsnorm_ref(x, w, 1e-6)


def _layernorm_case(rng, rows, d, affine):
    rt = runtime()
    # An offset mean and a small spread: E[x^2] - mean^2 would lose most of its digits here.
    x = 50.0 + rand(rng, rows, d, scale=0.5)
    w = rand(rng, d) if affine in ("both", "weight") else None
    b = rand(rng, d) if affine in ("both", "bias") else None
    out = padded_output((rows, d))
    layernorm(rt.upload(x), w if w is None else rt.upload(w), b if b is None else rt.upload(b), 1e-5, out=out)
    return out.numpy(), layernorm_ref(x, w, b, 1e-5)


def _add_rmsnorm_case(rng, rows, d, in_place):
    rt = runtime()
    h, delta, w = rand(rng, rows, d), rand(rng, rows, d), rand(rng, d)
    ht = rt.upload(h)
    out_h = ht if in_place else padded_output((rows, d))
    out = padded_output((rows, d))
    add_rmsnorm(ht, rt.upload(delta), rt.upload(w), 1e-6, out_h=out_h, out=out)
    require(np.array_equal(out_h.numpy(), h + delta), "h' is not the f32 sum h + delta")
    return out.numpy(), rmsnorm_ref(h + delta, w, 1e-6)


def _add_rmsnorm_q8_case(rng, rows, d):
    """The normed rows against numpy, their int8 blocks against quantize_activations_ref of the GPU's own
    normed rows (so an ulp of the norm cannot move an int8 value): exact."""
    from .q8_0 import quantize_activations_ref

    rt = runtime()
    h, delta, w = rand(rng, rows, d) * 3, rand(rng, rows, d), rand(rng, d)
    h[0, :32] = 0.0  # an all-zero block of h + delta, d = 0
    delta[0, :32] = 0.0
    out_h, out = padded_output((rows, d)), padded_output((rows, d))
    xq, xd = padded_output((rows, d // 4), "u32"), padded_output((rows, d // 32))
    add_rmsnorm_q8(rt.upload(h), rt.upload(delta), rt.upload(w), 1e-6, out_h, out, (xq, xd))
    got = out.numpy()
    q, scale = quantize_activations_ref(got)
    require(np.array_equal(xq.numpy().view(np.int8).reshape(rows, d), q), "int8 values differ from quantize_act's rule")
    require(np.array_equal(xd.numpy(), scale), "block scales differ from quantize_act's rule")
    return got, rmsnorm_ref(h + delta, w, 1e-6)


def cases():
    return [
        *sweep("norm", "add_rmsnorm_q8", 1e-11, _add_rmsnorm_q8_case, [dict(rows=r, d=d) for r, d in [(1, 2048), (3, 96), (2, 1024), (2, 4160)]],
               quick=[dict(rows=3, d=96)]),
        *sweep("norm", "rmsnorm", NMSE_BOUND, _rmsnorm_case, [dict(rows=r, d=d) for r, d in SHAPES],
               quick=[dict(rows=5, d=1000)]),
        *sweep("norm", "layernorm", NMSE_BOUND, _layernorm_case,
               [dict(rows=r, d=d, affine=a) for r, d in SHAPES for a in AFFINE], quick=[dict(rows=33, d=100, affine="both")]),
        *sweep("norm", "add_rmsnorm", 1e-11, _add_rmsnorm_case,
               [dict(rows=r, d=d, in_place=i) for r, d, i in [(1, 1024, True), (3, 7, False), (5, 257, True), (2, 2048, False)]],
               quick=[dict(rows=3, d=7, in_place=False)]),
    ]
