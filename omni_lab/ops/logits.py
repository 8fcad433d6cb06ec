"""Transformers' logits processors and sampling on the GPU, for one row of logits (shaders/logits.wgsl).

The talker's generation applies a repetition penalty over the codec tokens it has generated and suppresses
the special ids at the top of its vocabulary, greedy or sampled; the code predictor samples with top-k and
top-p. Done here, a frame of speech (one talker token and 15 code-predictor tokens) runs as one GPU
submission: no logits and no candidates go to the host between tokens.
"""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect
from .registry import padded_output, require, sweep

WG = 256


def process(logits: Tensor, seen: Tensor, penalty: float = 1.0, suppress: tuple[int, int] = (0, 0),
            keep: int = -1) -> Tensor:
    """In place on logits [V] (or [1, V]): the repetition penalty on entries with seen[i] != 0 (a negative
    logit times `penalty`, a positive one divided by it), then -inf on ids in [suppress[0], suppress[1])
    except `keep` (Transformers' RepetitionPenaltyLogitsProcessor, then SuppressTokensLogitsProcessor)."""
    dtype_in("logits.process", "logits", logits, ("f32",))
    dtype_in("logits.process", "seen", seen, ("u32",))
    v = logits.numel
    expect("logits.process", seen.numel == v and penalty > 0 and 0 <= suppress[0] <= suppress[1] <= v,
           f"seen must have V={v} entries, penalty > 0 and 0 <= lo <= hi <= V", logits=logits, seen=seen)
    runtime().kernel("logits", "process", WG=WG)(-(-v // WG), pack_params(v, suppress[0], suppress[1], keep,
                                                                         float(penalty)), logits, seen)
    return logits


def mark(seen: Tensor, token: Tensor) -> Tensor:
    """seen[token[0]] = 1, on the GPU (token: the [1] i32 an argmax or a draw wrote)."""
    dtype_in("logits.mark", "seen", seen, ("u32",))
    dtype_in("logits.mark", "token", token, ("i32",))
    runtime().kernel("logits", "mark", WG=32)(1, pack_params(seen.numel, 0, 0, 0, 0, 0, 0, 0), seen, token)
    return seen


def sample(values: Tensor, indices: Tensor, counter: Tensor, out: Tensor, temperature: float, top_p: float,
           seed: int, stream: int) -> Tensor:
    """One token drawn from select.topk's k candidates (sorted descending) into out [1] i32: temperature,
    top-p over the candidates, a multinomial draw with u = hash(seed, counter[0], stream)."""
    dtype_in("logits.sample", "values", values, ("f32",))
    dtype_in("logits.sample", "indices", indices, ("i32",))
    k = values.numel
    expect("logits.sample", indices.numel == k and k >= 1 and temperature > 0 and 0 < top_p <= 1
           and counter.dtype == "u32" and out.dtype == "i32" and out.numel == 1,
           "values and indices [k], temperature > 0, 0 < top_p <= 1, counter u32, out [1] i32",
           values=values, indices=indices, out=out)
    runtime().kernel("logits", "sample")(1, pack_params(k, stream, seed & 0xFFFFFFFF, 0, float(temperature),
                                                        float(top_p)), values, indices, counter, out)
    return out


# -- numpy references ------------------------------------------------------------------------------

def process_ref(logits: np.ndarray, seen: np.ndarray, penalty: float, suppress: tuple[int, int], keep: int) -> np.ndarray:
    """Transformers' two processors on a [V] row, as torch computes them (float32)."""
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor, SuppressTokensLogitsProcessor

    scores = torch.as_tensor(np.asarray(logits, np.float32)).reshape(1, -1).clone()
    generated = torch.as_tensor(np.flatnonzero(seen)).reshape(1, -1)
    if generated.numel():
        scores = RepetitionPenaltyLogitsProcessor(penalty)(generated, scores)
    banned = [i for i in range(*suppress) if i != keep]
    if banned:
        scores = SuppressTokensLogitsProcessor(banned)(generated, scores)
    return scores.reshape(np.shape(logits)).numpy()


def kept_ref(values: np.ndarray, temperature: float, top_p: float) -> int:
    """How many of the sorted candidates top-p keeps (Transformers' TopPLogitsWarper on them)."""
    import torch
    from transformers import TopPLogitsWarper

    scores = torch.as_tensor(np.asarray(values, np.float32) / np.float32(temperature)).reshape(1, -1)
    warped = TopPLogitsWarper(top_p)(torch.zeros(1, 0, dtype=torch.long), scores)
    return int(torch.isfinite(warped).sum())


# -- registry cases (ops/registry.py) --------------------------------------------------------------

def _process_case(rng, v, penalty, lo, hi, keep):
    """Logits of both signs (and exact zeros) with a random seen set; exact against Transformers' processors."""
    rt = runtime()
    x = rng.standard_normal(v).astype(np.float32) * 4
    x[rng.random(v) < 0.05] = 0.0
    seen = (rng.random(v) < 0.2).astype(np.uint32)
    out = padded_output((v,))
    rt.write(out, x)
    process(out, rt.upload(seen), penalty, (lo, hi), keep)
    got, want = out.numpy(), process_ref(x, seen, penalty, (lo, hi), keep)
    require(np.array_equal(np.isneginf(got), np.isneginf(want)), "suppressed ids differ")
    finite = np.isfinite(want)
    return got[finite], want[finite]


def _mark_case(rng, v):
    rt = runtime()
    seen0 = (rng.random(v) < 0.3).astype(np.uint32)
    token = int(rng.integers(0, v))
    out = padded_output((v,), "u32")
    rt.write(out, seen0)
    mark(out, rt.upload(np.array([token], np.int32)))
    want = seen0.copy()
    want[token] = 1
    return out.numpy(), want


def _sample_case(rng, k, temperature, top_p, draws=2000):
    """The draw's law, checked: every token drawn is among the candidates top-p keeps (the count from
    Transformers' warper), and over `draws` counters the frequencies follow the renormalised softmax
    (total variation below 0.08)."""
    rt = runtime()
    values = np.sort(rng.standard_normal(k).astype(np.float32) * 2)[::-1].copy()
    indices = rng.permutation(10 * k)[:k].astype(np.int32)
    kept = kept_ref(values, temperature, top_p)
    v, i = rt.upload(values), rt.upload(indices)
    counter, out = rt.empty((4,), "u32"), padded_output((1,), "i32")
    picks = []
    for c in range(draws):
        rt.write(counter, np.array([c, 0, 0, 0], np.uint32))
        sample(v, i, counter, out, temperature, top_p, seed=7, stream=3)
        picks.append(int(out.numpy()[0]))
    where = {int(x): j for j, x in enumerate(indices)}
    require(all(p in where and where[p] < kept for p in picks), f"a draw outside the {kept} candidates top-p keeps")
    z = values[:kept].astype(np.float64) / temperature
    want = np.exp(z - z.max())
    want /= want.sum()
    got = np.bincount([where[p] for p in picks], minlength=kept)[:kept] / draws
    require(0.5 * np.abs(got - want).sum() < 0.08, f"draw frequencies {got.round(2)} are not the softmax {want.round(2)}")
    return got, want


def cases():
    # process: the penalty and -inf are exact in f32 (one multiply or divide): bound 0. The talker's shape
    # (3072 ids, the top 1024 suppressed but the EOS), the tiny talker's, and ragged ones.
    return (sweep("logits", "process", 0.0, _process_case,
                  [dict(v=1072, penalty=1.05, lo=48, hi=1072, keep=42), dict(v=3072, penalty=1.05, lo=2048, hi=3072, keep=2150),
                   dict(v=7, penalty=1.3, lo=0, hi=0, keep=-1), dict(v=300, penalty=1.0, lo=10, hi=20, keep=-1),
                   dict(v=70_000, penalty=2.0, lo=65_000, hi=70_000, keep=69_999)],
                  quick=[dict(v=1072, penalty=1.05, lo=48, hi=1072, keep=42)])
            + sweep("logits", "mark", 0.0, _mark_case, [dict(v=1), dict(v=48), dict(v=3072)], quick=[dict(v=48)])
            # sample: a law, not a value; its case checks the support exactly and the frequencies loosely, and
            # returns them (the NMSE bound below is only a backstop).
            + sweep("logits", "sample", 0.05, _sample_case,
                    [dict(k=5, temperature=1.0, top_p=1.0), dict(k=50, temperature=0.9, top_p=1.0),
                     dict(k=50, temperature=1.0, top_p=0.8), dict(k=1, temperature=1.0, top_p=0.5)],
                    quick=[dict(k=5, temperature=1.0, top_p=1.0)]))
