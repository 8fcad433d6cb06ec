"""Row normalisations in f32: RMSNorm (HF Qwen3RMSNorm, also per head for QK-norm) and LayerNorm
(torch.nn.LayerNorm). x is [..., D]; every leading dimension is a row. out may be x (in place)."""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime, tuning
from ._check import dtype_in, expect

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
