"""Typed activations: what a named activation is, so capture, compare and report treat each one right.

A model (ours) and its HF capture both produce `name -> array`; an `Activation` says what the array is:

- layout: how its axes read. "TF" tokens x features (a decoder's hidden states), "CT" channels x time
  (a vocoder's convolutions, channels first as torch stores them), "N" one flat signal (a waveform).
  Per-token metrics and token heatmaps exist for "TF" (rows) and "CT" (columns, time steps).
- kind: how it is compared. "float" by MSE / cosine / NMSE / max abs; "ids" exactly (the count of equal
  entries; any difference is out of bounds); "routing" is a router's [T, 2k]: columns 0..k-1 expert ids,
  compared exactly, k..2k-1 their weights, compared as floats; "waveform" by the float metrics plus SNR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

LAYOUTS = ("TF", "CT", "N")
KINDS = ("float", "ids", "routing", "waveform")


@dataclass(frozen=True)
class Activation:
    name: str                 # the HF module path (plus a suffix for sub-steps HF has no module for)
    shape: tuple[int, ...]
    layout: str = "TF"
    kind: str = "float"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout {self.layout!r} is not one of {LAYOUTS}")
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "routing" and (len(self.shape) != 2 or self.shape[1] % 2):
            raise ValueError(f"{self.name}: a routing activation is [T, 2k], got {self.shape}")

    @property
    def time_axis(self) -> int | None:
        """The axis that runs over tokens / time steps (None for a flat signal)."""
        return {"TF": 0, "CT": 1}.get(self.layout)

    def to_json(self) -> dict:
        return {"shape": list(self.shape), "layout": self.layout, "kind": self.kind}

    @classmethod
    def from_json(cls, name: str, d: dict) -> "Activation":
        return cls(name, tuple(d["shape"]), d.get("layout", "TF"), d.get("kind", "float"))


def specs_by_name(specs) -> dict[str, Activation]:
    """{name: Activation} from a list of Activations (order kept: execution order)."""
    return {a.name: a for a in specs}


def as_specs(specs) -> dict[str, Activation]:
    """What a `specs` argument may be (None, {name: Activation} or a list of Activations) as {name: Activation}."""
    if specs is None:
        return {}
    return dict(specs) if isinstance(specs, Mapping) else specs_by_name(specs)


def routing_parts(a) -> tuple[np.ndarray, np.ndarray]:
    """(expert ids [T, k], weights [T, k]) of a router's [T, 2k] activation; the ids as stored, not rounded,
    so that an exact comparison sees a stray fraction."""
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] % 2:
        raise ValueError(f"a routing activation is [tokens, 2k] (ids then weights), got {a.shape}")
    k = a.shape[1] // 2
    return a[:, :k], a[:, k:]
