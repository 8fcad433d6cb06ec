"""Temperature / top-k / top-p sampling with a seed.

The top-k candidates are chosen on the GPU (ops.select.topk), so only 2k numbers come back per token;
temperature, the top-p cut and the draw happen on those k candidates on the host, in float64, with a
seeded numpy generator. HF applies the same filters in the same order (temperature, top-k, top-p).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Sampler:
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    seed: int = 0
    rng: np.random.Generator = field(init=False)
    values: object = field(init=False, default=None)
    indices: object = field(init=False, default=None)

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature}); use greedy decoding for 0")
        if not 1 <= self.top_k <= 64:
            raise ValueError(f"top_k must be in [1, 64] (got {self.top_k}): candidates are chosen on the GPU")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")
        self.rng = np.random.default_rng(self.seed)

    def bind(self, rt) -> None:
        """GPU buffers for the candidates, allocated once."""
        if self.values is None:
            self.values = rt.empty((1, self.top_k), "f32", label="topk.values")
            self.indices = rt.empty((1, self.top_k), "i32", label="topk.indices")


def sample_from_topk(logits: np.ndarray, ids: np.ndarray, s: Sampler) -> int:
    """Draw one id from the top-k candidates (logits sorted descending, with their ids)."""
    if not np.isfinite(logits[0]):  # NaN or +inf on top: no distribution to draw from; the decoder has warned
        return int(ids[0])  # the top one, as argmax takes
    z = np.asarray(logits, np.float64) / s.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if s.top_p < 1.0:
        # Keep the smallest prefix whose mass reaches top_p (always at least the first candidate).
        keep = int(np.searchsorted(np.cumsum(p), s.top_p) + 1)
        p = p[:keep] / p[:keep].sum()
        ids = ids[:keep]
    return int(ids[s.rng.choice(len(p), p=p)])
