"""Non-finite weights found on the GPU at load: `mark_nonfinite` sets a flag where a tensor holds a NaN or an
inf, and a WeightCheck (one per open checkpoint) gives every weight the loaders upload a flag, reads them all
once the component is built, and warns naming the tensors (errors.NonFiniteWarning).

A NaN weight does not always reach the logits: our attention kernel absorbs one on the scores' path (WGSL lets
an implementation assume no NaN), where Transformers' logits go NaN. So the weights themselves are checked,
by the GPU, in one pass over their bytes: a host check of a 30B model costs ~25 s of CPU.
"""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect
from .registry import padded_output, rand, require, sweep

WG = 256
KIND = {"f32": 0, "f16": 1, "bf16": 2}
FLAGS_PER_BUFFER = 4096


def mark_nonfinite(x: Tensor, flags: Tensor, index: int) -> None:
    """flags[index] = 1 if x (f32, f16 or bf16, any shape) holds a NaN or an inf; left as it is otherwise."""
    dtype_in("mark_nonfinite", "x", x, tuple(KIND))
    dtype_in("mark_nonfinite", "flags", flags, ("u32",))
    expect("mark_nonfinite", 0 <= index < flags.numel, f"index must be in [0, {flags.numel})", flags=flags)
    rt = runtime()
    halves = x.numel if x.dtype != "f32" else 0
    words = x.numel if x.dtype == "f32" else -(-x.numel // 2)
    if not words:
        return
    raw = x.view((words,), "u32")
    for row0, piece in raw.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment):
        n = piece.shape[0]
        # a piece after the first starts on a whole word, so its halves count from its own first word
        left = max(halves - 2 * row0, 0) if halves else 0
        rt.kernel("finite", "mark", WG=WG)(-(-n // WG), pack_params(n, KIND[x.dtype], left, index), piece, flags)


def mark_nonfinite_ref(x: np.ndarray) -> bool:
    return not bool(np.isfinite(np.asarray(x, np.float32)).all())


class WeightCheck:
    """The flags of one checkpoint's weights: mark(name, weight) as each is uploaded, report() once a component
    is built (one readback; warns naming the first tensors that hold NaN or inf)."""

    def __init__(self, source):
        self.source = source
        self.names: list[str] = []
        self.buffers: list[Tensor] = []

    def mark(self, name: str, weight) -> None:
        from ..formats.q8_0 import Q8Weight

        tensors = [weight.scales] if isinstance(weight, Q8Weight) else [weight]  # int8 quants are always finite
        rt = runtime()
        for t in tensors:
            if len(self.names) == FLAGS_PER_BUFFER * len(self.buffers):
                buf = rt.empty((FLAGS_PER_BUFFER,), "u32", label="weight_check.flags")
                rt.write(buf, np.zeros(FLAGS_PER_BUFFER, np.uint32))
                self.buffers.append(buf)
            i = len(self.names)
            self.names.append(name)
            mark_nonfinite(t, self.buffers[-1], i % FLAGS_PER_BUFFER)

    def report(self) -> list[str]:
        """The names of the weights marked since the last report that hold NaN or inf (warned once)."""
        from ..errors import warn_non_finite

        if not self.names:
            return []
        flags = np.concatenate([b.numpy() for b in self.buffers])[:len(self.names)]
        bad = sorted({n for n, f in zip(self.names, flags) if f})
        self.names, self.buffers = [], []
        if bad:
            more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
            warn_non_finite(self.source, f"the weights {', '.join(repr(n) for n in bad[:3])}{more}")
        return bad


def weight_check(ckpt) -> WeightCheck:
    """The WeightCheck of an open checkpoint (made on first use)."""
    check = getattr(ckpt, "_weight_check", None)
    if check is None:
        check = ckpt._weight_check = WeightCheck(getattr(ckpt, "path", None))
    return check


# -- registry cases (ops/registry.py) --------------------------------------------------------------

def _mark_case(rng, n, dtype, plant):
    """A tensor of n values with one NaN / +inf / -inf planted (or none), at a random place, the last value
    included; its flag (index 3 of 8) against numpy, the other flags left alone."""
    from .linear import stored

    rt = runtime()
    x = rand(rng, n)
    where = int(rng.integers(n)) if plant != "last" else n - 1
    if plant != "none":
        x[where] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "last": np.nan}[plant]
    host, seen = stored(x, dtype) if dtype != "f32" else (x, x)
    if dtype == "bf16" and plant != "none":
        bits = host.copy()
        bits[where] = {"nan": 0x7FC0, "inf": 0x7F80, "-inf": 0xFF80, "last": 0x7FC1}[plant]
        host, seen = bits, np.where(np.arange(n) == where, x, seen)
    flags = padded_output((8,), "u32")  # sentinel padding around it catches a write past the flags
    rt.write(flags, np.zeros(8, np.uint32))
    mark_nonfinite(rt.upload(host, dtype), flags, 3)
    got = flags.numpy()
    require((np.delete(got, 3) == 0).all(), "a flag other than the tensor's own was set")
    return np.array([got[3]], np.float32), np.array([float(mark_nonfinite_ref(seen))], np.float32)


def cases():
    return sweep("finite", "mark_nonfinite", 0.0, _mark_case,
                 [dict(n=n, dtype=dt, plant=pl) for dt in KIND for n in (1, 7, 1000, 4099)
                  for pl in ("none", "nan", "inf", "-inf", "last")],
                 quick=[dict(n=1000, dtype="bf16", plant="nan")])
