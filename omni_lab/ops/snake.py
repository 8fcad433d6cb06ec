"""SnakeBeta, the activation of code2wav's decoder, on channels-first f32 [C, T], as Transformers'
Qwen3OmniMoeSnakeBeta computes it: x + 1 / (exp(beta) + 1e-9) * sin(x * exp(alpha))^2 with alpha, beta
[C] log-scale parameters. out may be x (in place). `start` skips x's first columns (out is then
[C, T - start]): code2wav crops a decode's left context there, for free, where no later sample reads it.
A tensor past the storage-binding limit is processed in pieces of whole elements (ops/pieces.py)."""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect
from .pieces import binding_limit, elements_per_window, spans, window
from .registry import Case, padded_output, sweep

WG = 256
NO_DIV_BY_ZERO = 1e-9  # Qwen3OmniMoeSnakeBeta.no_div_by_zero


def snake_beta(x: Tensor, alpha: Tensor, beta: Tensor, out: Tensor | None = None, start: int = 0) -> Tensor:
    """x [C, T] f32, alpha and beta [C] f32 (log-scale, as the checkpoint stores them) -> [C, T - start] f32,
    the activation of x[:, start:]."""
    kn = "snake_beta"
    dtype_in(kn, "x", x, ("f32",))
    expect(kn, len(x.shape) == 2, "x must be [C, T]", x=x)
    c, t_in = x.shape
    expect(kn, 0 <= start < max(t_in, 1), f"start must be in [0, {t_in}) (x's columns), got {start}", x=x)
    t = t_in - start
    for name, v in (("alpha", alpha), ("beta", beta)):
        dtype_in(kn, name, v, ("f32",))
        expect(kn, v.shape == (c,), f"{name} must be [{c}] (x's channels)", x=x, **{name: v})
    if out is None:
        out = runtime().empty((c, t), "f32", label=kn)
    expect(kn, out.shape == (c, t) and out.dtype == "f32", f"out must be {(c, t)} f32", out=out, x=x)
    expect(kn, start == 0 or out.buffer is not x.buffer, "out may be x only without a start", out=out, x=x)
    n = out.numel
    expect(kn, x.numel < 2**32, "x must have fewer than 2^32 elements", x=x)
    if n == 0:
        return out
    # A piece of n outputs reads x from x_at(e0) to x_at(e0 + n - 1): at most n + (n / t + 1) start elements.
    per = elements_per_window("f32")
    per = per if start == 0 else (per - start) * t // t_in
    expect(kn, per >= 1, f"a start of {start} columns leaves no room in a {binding_limit()} B binding", x=x)
    x_at = lambda e: e // t * t_in + start + e % t  # noqa: E731  (x's element under out's element e)
    kern = runtime().kernel("snake", WG=WG)
    for e0, e1 in spans(0, n, per):
        x0 = x_at(e0)
        xw, x_off = window(x, x0, x_at(e1 - 1) + 1 - x0)
        yw, y_off = window(out, e0, e1 - e0)
        kern(-(-(e1 - e0) // WG), pack_params(e1 - e0, t, e0, x_off, y_off, t_in, start, x0), xw, alpha, beta, yw)
    return out


def snake_beta_ref(x: np.ndarray, alpha: np.ndarray, beta: np.ndarray, start: int = 0) -> np.ndarray:
    x64 = np.asarray(x, np.float64)[:, start:]
    a = np.exp(np.asarray(alpha, np.float64))[:, None]
    b = np.exp(np.asarray(beta, np.float64))[:, None]
    return (x64 + 1.0 / (b + NO_DIV_BY_ZERO) * np.sin(x64 * a) ** 2).astype(np.float32)


# f32 rounding of x * exp(alpha) (about |x a| 6e-8, which sin^2 passes on at slope <= 1) is what is left:
# whole sweeps sit near 1e-15.
BOUND = 1e-7 * 1e-2


def _case(rng, c: int, t: int, x_scale: float, log_scale: float, start: int = 0):
    rt = runtime()
    x = (rng.standard_normal((c, t)) * x_scale).astype(np.float32)
    # alpha, beta away from 0 (the checkpoint's init), both signs, so both exps matter
    alpha = (rng.uniform(0.3, 1.0, c) * rng.choice([-1.0, 1.0], c) * log_scale).astype(np.float32)
    beta = (rng.uniform(0.3, 1.0, c) * rng.choice([-1.0, 1.0], c) * log_scale).astype(np.float32)
    out = padded_output((c, t - start))
    snake_beta(rt.upload(x), rt.upload(alpha), rt.upload(beta), out=out, start=start)
    return out.numpy(), snake_beta_ref(x, alpha, beta, start)


SWEEP = [(1, 1, 1.0, 1.0), (3, 7, 2.0, 1.0), (7, 33, 1.0, 2.0), (33, 100, 3.0, 1.5), (96, 257, 1.0, 1.0),
         (5, 4099, 10.0, 3.0), (2, 200_003, 1.0, 1.0)]


# Crops (code2wav's left context): one column, most of a row, and a ragged one over many channels.
CROPS = [(3, 7, 1.0, 1.0, 1), (7, 33, 1.0, 2.0, 30), (96, 257, 1.0, 1.0, 101), (5, 4099, 10.0, 3.0, 2048)]


def cases() -> list[Case]:
    grid = [dict(c=c, t=t, x_scale=xs, log_scale=ls) for c, t, xs, ls in SWEEP]
    grid += [dict(c=c, t=t, x_scale=xs, log_scale=ls, start=st) for c, t, xs, ls, st in CROPS]
    return sweep("snake", "snake_beta", BOUND, _case, grid, quick=[grid[2], grid[-2]])
