"""Token embedding lookup: ids [T] i32, table [V, D] f32/f16/bf16 or Q8_0 -> [T, D] f32.

A Q8_0 table (formats.q8_0.Q8Weight, D a multiple of 32) is gathered from its blocks: each row comes out
as f32(scale) * f32(q), exactly its dequantized values, so a model whose LM head shares the Q8_0 table
keeps one copy of it at 34 bytes per 32 weights instead of a second, f32 copy for the gather.

A table larger than the storage-binding limit (Qwen3's 151936 x 1024 bf16 is 311 MB; lavapipe binds
128 MiB) is bound in row pieces and dispatched once per piece; each dispatch writes only the tokens
whose id falls in its piece. Ids outside [0, V) give zero rows: callers validate ids on the host, the
shader only guarantees it never reads or writes out of bounds.
"""

from __future__ import annotations

import numpy as np

from ..formats.q8_0 import QK, Q8Weight
from ..gpu import Tensor, pack_params, runtime
from ._check import dtype_in, expect
from .norm import workgroup_for

WTYPE = {"f32": 0, "f16": 1, "bf16": 2}


def embedding(ids: Tensor, table: Tensor | Q8Weight, out: Tensor | None = None) -> Tensor:
    """out[t] = table[ids[t]] as f32 (zeros for an id outside [0, V)). table: [V, D] f32/f16/bf16 Tensor,
    or a Q8Weight [V, D] with D % 32 == 0 (rows dequantized: scale * q in f32)."""
    dtype_in("embedding", "ids", ids, ("i32",))
    q8 = isinstance(table, Q8Weight)
    stored = {"quants": table.quants, "scales": table.scales} if q8 else {"table": table}
    if not q8:
        dtype_in("embedding", "table", table, tuple(WTYPE))
    expect("embedding", len(ids.shape) == 1 and len(table.shape) == 2 and table.shape[0] > 0,
           "ids must be [T] and table [V, D]", ids=ids, **stored)
    (t,), (v, d) = ids.shape, table.shape
    if q8:
        expect("embedding", d % QK == 0 and table.quants.shape == (v, d // 4) and table.quants.dtype == "u32"
               and table.scales.shape == (v, d // QK) and table.scales.dtype == "f16",
               f"a Q8_0 table [V, D] = {table.shape} needs D % {QK} == 0, quants (V, D/4) u32 and scales (V, D/{QK}) f16",
               **stored)
    rt = runtime()
    if out is None:
        out = rt.empty((t, d), "f32", label="embedding")
    expect("embedding", out.shape == (t, d) and out.dtype == "f32", f"out must be {(t, d)} f32", out=out)
    if t == 0 or d == 0:
        return out
    pieces = table.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)
    if q8:
        kern = rt.kernel("embedding", "main_q8", WG=workgroup_for(d))
        for row0, piece in pieces:
            kern(t, pack_params(t, d, row0, piece.shape[0], v), ids, piece.quants, piece.scales, out)
        return out
    kern = rt.kernel("embedding", WG=workgroup_for(d), WTYPE=WTYPE[table.dtype])
    for row0, piece in pieces:
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
