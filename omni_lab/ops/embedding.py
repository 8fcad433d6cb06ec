"""Token embedding lookup: ids [T] i32, table [V, D] f32/f16/bf16 -> [T, D] f32.

A table larger than the storage-binding limit (Qwen3's 151936 x 1024 bf16 is 311 MB; lavapipe binds
128 MiB) is bound in row pieces and dispatched once per piece; each dispatch writes only the tokens
whose id falls in its piece. Ids outside [0, V) give zero rows: callers validate ids on the host, the
shader only guarantees it never reads or writes out of bounds.
"""

from __future__ import annotations

import numpy as np

from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect
from .norm import workgroup_for

WTYPE = {"f32": 0, "f16": 1, "bf16": 2}


def embedding(ids: Tensor, table: Tensor, out: Tensor | None = None) -> Tensor:
    """out[t] = table[ids[t]] as f32 (zeros for an id outside [0, V))."""
    dtype_in("embedding", "ids", ids, ("i32",))
    dtype_in("embedding", "table", table, tuple(WTYPE))
    expect("embedding", len(ids.shape) == 1 and len(table.shape) == 2 and table.shape[0] > 0,
           "ids must be [T] and table [V, D]", ids=ids, table=table)
    (t,), (v, d) = ids.shape, table.shape
    rt = runtime()
    if out is None:
        out = rt.empty((t, d), "f32", label="embedding")
    expect("embedding", out.shape == (t, d) and out.dtype == "f32", f"out must be {(t, d)} f32", out=out)
    if t == 0 or d == 0:
        return out
    kern = rt.kernel("embedding", WG=workgroup_for(d), WTYPE=WTYPE[table.dtype])
    for row0, piece in table.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment):
        kern(t, pack_params(t, d, row0, piece.shape[0], v), ids, piece, out)
    return out


def embedding_ref(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table: the float32 values the GPU sees (bf16/f16 already widened)."""
    ids = np.asarray(ids, dtype=np.int64)
    table = np.asarray(table, dtype=np.float32)
    ok = (ids >= 0) & (ids < table.shape[0])
    out = np.zeros((ids.shape[0], table.shape[1]), dtype=np.float32)
    out[ok] = table[ids[ok]]
    return out
