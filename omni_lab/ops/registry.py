"""The op registry's Case record (temporary: only the dataclass; the lead reconciles this file with the
registry being built elsewhere)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    family: str
    op: str
    params: dict
    bound: float
    run: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]  # (ours, numpy reference)
    quick: bool = False
