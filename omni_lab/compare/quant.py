"""Quantization statistics: how far a Q8_0 GGUF is from the BF16 checkpoint it was made from.

Everything here is numpy on host arrays; running the two models is omni_lab.report.quant_report's job.

- Weights: per-tensor SQNR in dB, 10 log10(sum w^2 / sum (w - deq(q(w)))^2), with w the BF16 weight widened
  to float64 and deq(q(w)) the GGUF's Q8_0 blocks dequantized by gguf. Both files are streamed one tensor at
  a time, in row chunks, so host memory holds a few chunks, never a tensor of a large model whole.
  For Gaussian weights, Q8_0 (absmax scale per 32 values, 8 bits) gives 10 log10(32 * 12 * 127^2 /
  (31 * E[max^2])) = 45.4 dB, E[max^2] = 5.71 for the largest |x| of 32 standard normals: the other 31 values
  carry a uniform rounding error of variance d^2/12 (d = max/127), the largest none. `gaussian_q8_0_sqnr_db`
  computes this; real weights with outliers sit a few dB lower.
- Logits: per-token KL(p_ref || p_q) in float64 from log-softmax; same-top-token rate; RMS change of the
  reference's top-token probability (and, as llama.cpp's `RMS dp` does, of the actual next token's);
  perplexity of both over the ids (next-token NLL) and their ratio.
- MoE: agreement of the selected experts per layer, from `...mlp.router` activations ([T, 2k], ids first).
- The pair check: a GGUF that is not a quantization of the checkpoint (another model, another size) is
  refused before any model runs, with both files named.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..activations import routing_parts
from ..formats.safetensors_io import CheckpointError

# A Q8_0 value is off its source by at most half a step d/2 (d = block max / 127), plus the f16 rounding of
# d; a block off by more than a whole step (or, where d underflows f16, by more than Q8_0_FLOOR) did not come
# from this tensor. Unquantized tensors may be converted (bf16 -> f16/f32) but not changed beyond rounding.
Q8_0_STEPS = 1.0
Q8_0_FLOOR = 127 * 2.0 ** -24  # the largest error the f16 rounding of an underflowing scale can cause
KEPT_REL = 2.0 ** -7
CHUNK_ELEMENTS = 4 << 20  # values per row chunk: 32 MiB as float64

_FLOAT_SOURCES = ("bf16", "f16", "f32")  # integer tensors have no SQNR


class QuantPairMismatch(CheckpointError):
    """The GGUF is not a quantization of the checkpoint; the message names both files."""


# ---- weights ----------------------------------------------------------------------------------------------
def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """10 log10(signal / noise): inf for an exact copy, nan for an all-zero tensor copied exactly."""
    if noise_energy == 0:
        return math.inf if signal_energy > 0 else math.nan
    if signal_energy == 0:
        return -math.inf
    return 10.0 * math.log10(signal_energy / noise_energy)


def tensor_sqnr_db(w, w_hat) -> float:
    """SQNR (dB) of w_hat as an approximation of w, in float64."""
    w = np.asarray(w, dtype=np.float64)
    d = w - np.asarray(w_hat, dtype=np.float64)
    return sqnr_db(float((w * w).sum()), float((d * d).sum()))


@lru_cache(maxsize=None)  # a constant of (block, levels), asked for by every summary
def gaussian_q8_0_sqnr_db(block: int = 32, levels: int = 127) -> float:
    """The expected SQNR of Q8_0 on i.i.d. Gaussian weights (see the module docstring), by quadrature of the
    density of the largest |x| in a block: block * F(m)^(block-1) * f(m), F(m) = erf(m / sqrt 2)."""
    m = np.linspace(0.0, 12.0, 120001)
    erf = np.vectorize(math.erf)
    density = block * erf(m / math.sqrt(2.0)) ** (block - 1) * math.sqrt(2.0 / math.pi) * np.exp(-m * m / 2)
    e_max2 = float(np.trapezoid(m * m * density, m))
    return 10.0 * math.log10(block * 12.0 * levels ** 2 / ((block - 1) * e_max2))


@dataclass
class TensorSqnr:
    name: str
    shape: tuple[int, ...]
    source_dtype: str   # in the checkpoint
    stored_dtype: str   # in the GGUF
    sqnr_db: float      # inf: bit-identical values
    max_abs: float = math.nan  # largest |w| in the checkpoint

    @property
    def quantized(self) -> bool:
        return self.stored_dtype == "q8_0"

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["sqnr_db"] = self.sqnr_db if math.isfinite(self.sqnr_db) else None
        d["identical"] = self.sqnr_db == math.inf
        d["max_abs"] = self.max_abs if math.isfinite(self.max_abs) else None
        return d


def _source_rows(plan, f, rows_per_chunk: int):
    """float32 row chunks [rows, K] of one checkpoint tensor, read as the quantizer reads it."""
    from ..formats.quantize import raw_rows
    from ..gpu.buffers import bf16_to_f32

    for raw in raw_rows(plan, f, rows_per_chunk):
        yield bf16_to_f32(raw) if plan.source == "bf16" else raw.astype(np.float32)


def _gguf_rows(gguf, name: str, rows_per_chunk: int):
    """float32 row chunks [rows, K] of one GGUF tensor (Q8_0 dequantized by gguf), copied from the map."""
    from ..formats.q8_0 import dequantize_q8_0
    from ..gpu.buffers import bf16_to_f32

    array, dtype = gguf.get(name)
    shape = gguf.shape(name)
    array = array.reshape(math.prod(shape[:-1]) if len(shape) > 1 else 1, -1)  # [rows, stored row]
    for r in range(0, array.shape[0], rows_per_chunk):
        chunk = np.array(array[r:r + rows_per_chunk])
        if dtype == "q8_0":
            yield dequantize_q8_0(chunk)
        elif dtype == "bf16":
            yield bf16_to_f32(chunk)
        else:
            yield chunk.astype(np.float32)


def inconsistent(w: np.ndarray, w_hat: np.ndarray, quantized: bool) -> int:
    """How many Q8_0 blocks (or, unquantized, values) of w_hat cannot be a rounding of w (see Q8_0_STEPS)."""
    w = np.asarray(w, dtype=np.float64)
    err = np.abs(w - np.asarray(w_hat, dtype=np.float64))
    if quantized:
        w, err = w.reshape(-1, 32), err.reshape(-1, 32)  # [blocks, 32]
        limit = Q8_0_STEPS * np.abs(w).max(axis=1) / 127 + Q8_0_FLOOR
        return int((~(err.max(axis=1) <= limit)).sum())
    return int((~(err <= KEPT_REL * np.abs(w) + 1e-30)).sum())


def check_pair(src, gguf) -> list[str]:
    """Refuse a GGUF whose architecture is not the checkpoint's: model_type, tensor names and shapes.
    `src` a Checkpoint, `gguf` a GGUFCheckpoint. Returns GGUF tensors the checkpoint lacks (extras that
    llama.cpp adds, such as rope_freqs), which are not an error. Weight values are checked by weight_sqnr."""
    where = f"{gguf.path} is not a quantization of {src.path}"
    a, b = src.config.get("model_type"), gguf.config.get("model_type")
    if a != b:
        raise QuantPairMismatch(f"{where}: model_type '{b}' in the GGUF, '{a}' in the checkpoint")
    missing = [n for n in src.names if n not in gguf]
    if missing:
        raise QuantPairMismatch(f"{where}: {len(missing)} of the checkpoint's {len(src.names)} tensors are not in "
                                f"the GGUF, the first '{missing[0]}'")
    for n in src.names:
        if src.shape(n) != gguf.shape(n):
            raise QuantPairMismatch(f"{where}: tensor '{n}' is {list(gguf.shape(n))} in the GGUF and "
                                    f"{list(src.shape(n))} in the checkpoint")
    return [n for n in gguf.names if n not in src]


def weight_sqnr(src_dir: str | Path, gguf_path: str | Path, *, progress: bool = False) -> list[TensorSqnr]:
    """SQNR of every tensor of the checkpoint against the GGUF, streamed one tensor (and row chunk) at a time,
    in checkpoint order. Raises QuantPairMismatch when the files are not a checkpoint and its quantization:
    the architecture differs (check_pair), or a tensor's values are not a rounding of the checkpoint's
    (`inconsistent`). SQNR itself decides nothing: a tensor whose values underflow Q8_0's f16 scale is a
    genuine quantization with an SQNR near 0 dB."""
    from tqdm.auto import tqdm

    from ..formats.gguf_io import GGUFCheckpoint
    from ..formats.quantize import plan
    from ..formats.safetensors_io import Checkpoint

    src, gguf = Checkpoint(src_dir), GGUFCheckpoint(gguf_path)
    check_pair(src, gguf)
    tensors = [p for p in plan(src) if p.source in _FLOAT_SOURCES]
    out: list[TensorSqnr] = []
    handles = {}
    bar = tqdm(total=sum(p.nbytes_in for p in tensors), unit="B", unit_scale=True, desc="weight SQNR",
               disable=not progress)
    try:
        for p in tensors:
            if p.path not in handles:
                handles[p.path] = open(p.path, "rb", buffering=0)
            rows = max(1, CHUNK_ELEMENTS // max(p.shape[-1] if p.shape else 1, 1))
            if not p.shape:  # a scalar: one row of one
                p = type(p)(p.name, (1,), p.source, p.target, p.path, p.offset)
            stored = gguf.dtype(p.name)
            signal = noise = peak = 0.0
            bad = units = 0
            for w, w_hat in zip(_source_rows(p, handles[p.path], rows), _gguf_rows(gguf, p.name, rows), strict=True):
                w64 = w.astype(np.float64)
                d = w64 - w_hat.astype(np.float64)
                signal += float((w64 * w64).sum())
                noise += float((d * d).sum())
                peak = max(peak, float(np.abs(w64).max(initial=0.0)))
                bad += inconsistent(w64, w_hat, stored == "q8_0")
                units += w.size // 32 if stored == "q8_0" else w.size
            t = TensorSqnr(p.name, p.shape, p.source, stored, sqnr_db(signal, noise), peak)
            if bad:
                what = "Q8_0 blocks" if stored == "q8_0" else "values"
                raise QuantPairMismatch(
                    f"{gguf.path} is not a quantization of {src.path}: in tensor '{p.name}' ({stored} in the GGUF), "
                    f"{bad} of {units} {what} differ from the checkpoint's by more than rounding "
                    f"(SQNR {t.sqnr_db:.1f} dB; a Q8_0 quantization gives about 45 dB, unrelated tensors about -3 dB)")
            out.append(t)
            bar.update(p.nbytes_in)
    finally:
        bar.close()
        for h in handles.values():
            h.close()
    return out


def sqnr_summary(tensors: list[TensorSqnr]) -> dict:
    """min / median / mean / max SQNR over the quantized tensors, the worst one's name, and how many of the
    unquantized tensors were carried over bit for bit."""
    q = [t for t in tensors if t.quantized]
    kept = [t for t in tensors if not t.quantized]
    vals = np.array([t.sqnr_db for t in q if math.isfinite(t.sqnr_db)])
    finite = [t for t in q if math.isfinite(t.sqnr_db)]
    worst = min(finite, key=lambda t: t.sqnr_db) if finite else None
    return {
        "quantized": len(q), "unquantized": len(kept),
        "unquantized_identical": sum(t.sqnr_db == math.inf or math.isnan(t.sqnr_db) for t in kept),
        "min_db": float(vals.min()) if vals.size else None, "median_db": float(np.median(vals)) if vals.size else None,
        "mean_db": float(vals.mean()) if vals.size else None, "max_db": float(vals.max()) if vals.size else None,
        "min_name": worst.name if worst else None,
        "gaussian_theory_db": gaussian_q8_0_sqnr_db(),
    }


# ---- logits -----------------------------------------------------------------------------------------------
def log_softmax64(logits) -> np.ndarray:
    """Row-wise log-softmax of [T, V] logits in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kl_per_token(logits_ref, logits_q) -> np.ndarray:
    """KL(p_ref || p_q) of each row, float64, clipped at 0 (rounding can give -1e-17)."""
    lp, lq = log_softmax64(logits_ref), log_softmax64(logits_q)
    return np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)


def next_token_nll(logits, ids) -> np.ndarray:
    """-log p(ids[t+1] | ids[..t]) for t = 0..T-2 (empty for one token)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    lp = log_softmax64(np.asarray(logits)[: len(ids) - 1])
    return -lp[np.arange(len(ids) - 1), ids[1:]]


@dataclass
class LogitStats:
    kl: np.ndarray = field(repr=False)   # [T] per-token KL(p_ref || p_q)
    kl_mean: float
    kl_median: float
    kl_p99: float
    kl_max: float
    same_top: int                         # tokens whose argmax agrees
    tokens: int
    rms_dp_top: float                     # RMS of p_q - p_ref at the reference's top token
    rms_dp_next: float | None             # the same at the actual next token (llama.cpp's RMS dp)
    ppl_ref: float | None
    ppl_q: float | None
    # tokens whose top token changed: position, both top ids, and how far apart the reference's two best
    # probabilities were (a flip at a near tie is noise; at a wide margin it is damage)
    top_flips: list[dict] = field(default_factory=list)

    @property
    def same_top_rate(self) -> float:
        return self.same_top / self.tokens

    @property
    def ppl_ratio(self) -> float | None:
        return self.ppl_q / self.ppl_ref if self.ppl_ref else None

    def to_json(self) -> dict:
        r = self.ppl_ratio
        return {
            "tokens": self.tokens, "kl_mean": self.kl_mean, "kl_median": self.kl_median, "kl_p99": self.kl_p99,
            "kl_max": self.kl_max, "kl_per_token": self.kl.tolist(), "same_top": self.same_top,
            "same_top_rate": self.same_top_rate, "rms_dp_top": self.rms_dp_top, "rms_dp_next": self.rms_dp_next,
            "ppl_ref": self.ppl_ref, "ppl_q": self.ppl_q, "ppl_ratio": r,
            "ln_ppl_ratio": math.log(r) if r else None, "top_flips": self.top_flips,
        }


def logit_stats(logits_ref, logits_q, ids) -> LogitStats:
    """The logit statistics of the quantized side against the reference over the same ids ([T, V] each)."""
    a, b = np.asarray(logits_ref), np.asarray(logits_q)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"logit_stats: need equal [tokens, vocab] logits, got {a.shape} and {b.shape}")
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(ids) != a.shape[0]:
        raise ValueError(f"logit_stats: {len(ids)} ids for {a.shape[0]} rows of logits")
    lp, lq = log_softmax64(a), log_softmax64(b)
    kl = np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)
    top, top_q = lp.argmax(axis=-1), lq.argmax(axis=-1)
    rows = np.arange(len(ids))
    two = np.sort(lp, axis=-1)[:, -2:]  # [T, 2] log-probs of the reference's two best
    flips = [{"position": int(t), "top_ref": int(top[t]), "top_q": int(top_q[t]),
              "ref_margin": float(np.exp(two[t, 1]) - np.exp(two[t, 0]))} for t in np.flatnonzero(top != top_q)]
    dp_top = np.exp(lq[rows, top]) - np.exp(lp[rows, top])
    nxt = rows[:-1]
    if len(ids) > 1:
        dp_next = np.exp(lq[nxt, ids[1:]]) - np.exp(lp[nxt, ids[1:]])
        ppl_ref = float(np.exp(-lp[nxt, ids[1:]].mean()))
        ppl_q = float(np.exp(-lq[nxt, ids[1:]].mean()))
        rms_next = float(np.sqrt(np.mean(dp_next ** 2)))
    else:
        ppl_ref = ppl_q = rms_next = None
    return LogitStats(kl=kl, kl_mean=float(kl.mean()), kl_median=float(np.median(kl)),
                      kl_p99=float(np.percentile(kl, 99)), kl_max=float(kl.max()),
                      same_top=int((top == top_q).sum()), tokens=len(ids),
                      rms_dp_top=float(np.sqrt(np.mean(dp_top ** 2))), rms_dp_next=rms_next,
                      ppl_ref=ppl_ref, ppl_q=ppl_q, top_flips=flips)


# ---- MoE --------------------------------------------------------------------------------------------------
@dataclass
class ExpertAgreement:
    name: str            # the `...mlp.router` activation
    layer: int | None
    k: int
    tokens: int
    set_agreement: float  # mean over tokens of |experts_ref & experts_q| / k: (token, slot) ids equal as sets
    exact_order: float    # fraction of (token, slot) with the same expert in the same slot
    tokens_all_same: float  # fraction of tokens whose k experts agree as a set

    def to_json(self) -> dict:
        return asdict(self)


def expert_ids(router) -> np.ndarray:
    """Expert ids [T, k] of a router activation [T, 2k] (ids first, then weights)."""
    ids, _ = routing_parts(router)
    return np.rint(ids).astype(np.int64)


def expert_agreement(router_ref, router_q, name: str = "", layer: int | None = None) -> ExpertAgreement:
    a, b = expert_ids(router_ref), expert_ids(router_q)
    if a.shape != b.shape:
        raise ValueError(f"expert_agreement {name}: router shapes differ, {a.shape} and {b.shape}")
    t, k = a.shape
    shared = np.array([len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)], dtype=np.float64)  # [T]
    return ExpertAgreement(name=name, layer=layer, k=k, tokens=t, set_agreement=float(shared.mean() / k),
                           exact_order=float((a == b).mean()), tokens_all_same=float((shared == k).mean()))


def moe_agreement(ref: Mapping[str, np.ndarray], q: Mapping[str, np.ndarray],
                  layer_of: Callable[[str], int | None] | None = None) -> list[ExpertAgreement]:
    """Expert agreement for every `...mlp.router` activation both sides have, in the reference's order."""
    import re

    def default_layer(n: str) -> int | None:
        m = re.search(r"\.layers\.(\d+)\.", n)
        return int(m.group(1)) if m else None

    layer_of = layer_of or default_layer
    return [expert_agreement(ref[n], q[n], n, layer_of(n)) for n in ref if n.endswith(".mlp.router") and n in q]
