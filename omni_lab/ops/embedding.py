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
from ..gpu import Tensor, bf16_to_f32, pack_params, runtime
from ._check import dtype_in, expect
from .norm import workgroup_for
from .linear import stored
from .registry import NMSE_ELEMENTWISE, padded_output, require, sweep

WTYPE = {"f32": 0, "f16": 1, "bf16": 2}


def _rows_out(kernel: str, out: Tensor | None, t: int, d: int) -> Tensor:
    if out is None:
        return runtime().empty((t, d), "f32", label=kernel)
    expect(kernel, out.shape == (t, d) and out.dtype == "f32", f"out must be {(t, d)} f32", out=out)
    return out


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
    out = _rows_out("embedding", out, t, d)
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


def embedding_mean(ids: Tensor, table: Tensor, out: Tensor | None = None) -> Tensor:
    """out[t] = mean over g of table[ids[t, g]]: ids [T, G] i32, table [V, D] f32/f16/bf16 -> [T, D] f32
    (code2wav's code embedding, one id per codebook). An id outside [0, V) adds nothing to its row's sum
    (callers validate ids on the host)."""
    dtype_in("embedding_mean", "ids", ids, ("i32",))
    dtype_in("embedding_mean", "table", table, tuple(WTYPE))
    expect("embedding_mean", len(ids.shape) == 2 and ids.shape[1] > 0 and len(table.shape) == 2 and table.shape[0] > 0,
           "ids must be [T, G] with G > 0 and table [V, D]", ids=ids, table=table)
    (t, g), (v, d) = ids.shape, table.shape
    rt = runtime()
    out = _rows_out("embedding_mean", out, t, d)
    if t == 0 or d == 0:
        return out
    kern = rt.kernel("embedding", "mean", WG=workgroup_for(d), WTYPE=WTYPE[table.dtype])
    for row0, piece in table.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment):
        kern(t, pack_params(t, d, row0, piece.shape[0], v, g), ids, piece, out)
    return out


def embedding_mean_ref(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """float64 mean of the rows of each [G] bag of ids (ids outside the table add zero rows)."""
    ids = np.asarray(ids, dtype=np.int64)
    table = np.asarray(table, dtype=np.float64)
    ok = (ids >= 0) & (ids < table.shape[0])
    rows = np.where(ok[..., None], table[np.where(ok, ids, 0)], 0.0)  # [T, G, D]
    return (rows.sum(axis=1) / ids.shape[1]).astype(np.float32)


def embedding_ref(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """table: the float32 values the GPU sees (bf16/f16 already widened)."""
    ids = np.asarray(ids, dtype=np.int64)
    table = np.asarray(table, dtype=np.float32)
    ok = (ids >= 0) & (ids < table.shape[0])
    out = np.zeros((ids.shape[0], table.shape[1]), dtype=np.float32)
    out[ok] = table[ids[ok]]
    return out


# -- registry cases (ops/registry.py) --------------------------------------------------------------

def finite_table(rng, v, d, dtype):
    """Random finite bit patterns (subnormals and -0 included): host array for upload, f32 the GPU should give."""
    if dtype == "f32":
        bits = rng.integers(0, 2**32, size=(v, d), dtype=np.uint64).astype(np.uint32)
        bits[(bits & 0x7F800000) == 0x7F800000] &= 0xBFFFFFFF  # no inf/NaN
        t = bits.view(np.float32)
        return t, t
    bits = rng.integers(0, 2**16, size=(v, d), dtype=np.uint16)
    exp_mask = 0x7F80 if dtype == "bf16" else 0x7C00
    bits[(bits & exp_mask) == exp_mask] &= ~np.uint16(exp_mask & ~(exp_mask >> 1))  # clear the top exponent bit
    if dtype == "bf16":
        return bits, bf16_to_f32(bits)
    h = bits.view(np.float16)
    return h, h.astype(np.float32)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(np.ascontiguousarray(a).view(np.uint32), np.ascontiguousarray(b).view(np.uint32))


def _embedding_case(rng, v, d, t, dtype):
    rt = runtime()
    host, seen = finite_table(rng, v, d, dtype)
    ids = rng.integers(0, v, size=t).astype(np.int32)
    ids[0] = v - 1  # last row: the end of the table
    out = padded_output((t, d))
    embedding(rt.upload(ids), rt.upload(host, dtype), out=out)
    got, want = out.numpy(), embedding_ref(ids, seen)
    require(same_bits(got, want), "rows are not the table's bits")  # an NMSE of 0 lets -0 pass for +0
    return got, want


def _embedding_split_case(rng, dtype, d):
    """Qwen3's 311 MB bf16 table needs row pieces under lavapipe's 128 MiB binding limit. Ids on both sides
    of every piece boundary, the ends of the table, and out of range."""
    rt = runtime()
    v = rt.gpu.max_binding // (2 * d) + 1500
    host, seen = finite_table(rng, v, d, dtype)
    ids, got = _gather_across_pieces(rng, rt.upload(host, dtype), v, d)
    want = embedding_ref(ids, seen)
    require(same_bits(got, want), "rows are not the table's bits")
    return got, want


def _gather_across_pieces(rng, table: Tensor | Q8Weight, v: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The split cases' gather from a table of V rows that must be bound in two or more row pieces: ids on
    both sides of every piece boundary, the ends of the table, out of range (-3 and V), and 40 at random.
    Returns the ids and the rows the GPU gave."""
    rt = runtime()
    pieces = table.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)
    require(len(pieces) >= 2, f"a table of {v} rows x {d} is bound in {len(pieces)} piece")
    edges = [r for r, _ in pieces[1:]]
    ids = np.array([0, v - 1, -3, v] + [e - 1 for e in edges] + edges + list(rng.integers(0, v, size=40)), dtype=np.int32)
    out = padded_output((len(ids), d))
    embedding(rt.upload(ids), table, out=out)
    return ids, out.numpy()


def q8_blocks(rng, v, d):
    """Q8_0 blocks of a [V, D] table: every int8 (-128 included, which gguf never writes but any reader
    must take) and random finite f16 scales of both signs, subnormals and -0 included."""
    from ..formats.q8_0 import join_q8_0

    q = rng.integers(-128, 128, size=(v, d), dtype=np.int8)
    scale_bits = rng.integers(0, 2**16, size=(v, d // QK), dtype=np.uint16)
    scale_bits[(scale_bits & 0x7C00) == 0x7C00] &= 0xBFFF  # no inf/NaN: clear the top exponent bit
    return join_q8_0(q, scale_bits.view(np.float16))


def _embedding_q8_case(rng, v, d, t, dtype):
    """Rows of a Q8_0 table come out bit-equal to gguf's dequantize of the table, gathered. D = 96 and
    2080 hold an odd number of blocks, so every other row's scales start mid-word."""
    from ..formats.q8_0 import dequantize_q8_0, upload_q8_0

    blocks = q8_blocks(rng, v, d)
    ids = rng.integers(0, v, size=t).astype(np.int32)
    ids[0] = v - 1  # last row: the end of the table
    if t > 1:
        ids[1] = 0
    out = padded_output((t, d))
    embedding(runtime().upload(ids), upload_q8_0(blocks, (v, d)), out=out)
    got, want = out.numpy(), embedding_ref(ids, dequantize_q8_0(blocks))
    require(same_bits(got, want), "rows are not the dequantized table's bits")
    return got, want


def _embedding_q8_split_case(rng, d, dtype):
    """int8 quants over lavapipe's 128 MiB binding limit, bound in row pieces (Q8Weight.row_pieces keeps
    the quants and the odd-length scale rows of D = 1056 at aligned offsets). Ids on both sides of every
    piece boundary, the ends of the table, and out of range. The reference dequantizes only the rows
    gathered (the whole table in f32 would be 0.5 GB)."""
    from ..formats.q8_0 import dequantize_q8_0, upload_q8_0

    v = runtime().gpu.max_binding // d + 1500
    blocks = q8_blocks(rng, v, d)
    ids, got = _gather_across_pieces(rng, upload_q8_0(blocks, (v, d)), v, d)
    ok = (ids >= 0) & (ids < v)
    want = np.zeros((len(ids), d), np.float32)
    want[ok] = dequantize_q8_0(blocks[ids[ok]])
    require(same_bits(got, want), "rows are not the dequantized table's bits")
    return got, want


# A sum of at most 16 rows in f32, then one division: NMSE near 1e-14.
NMSE_MEAN = NMSE_ELEMENTWISE * 1e-4


def _embedding_mean_case(rng, v, d, t, g, dtype):
    rt = runtime()
    host, seen = stored(rng.standard_normal((v, d)).astype(np.float32), dtype)
    ids = rng.integers(0, v, size=(t, g)).astype(np.int32)
    ids[0, 0] = v - 1  # last row: the end of the table
    out = padded_output((t, d))
    embedding_mean(rt.upload(ids), rt.upload(host, dtype), out=out)
    return out.numpy(), embedding_mean_ref(ids, seen)


def _embedding_mean_split_case(rng, d, g, dtype):
    """A bag table past the binding limit: each row's sum gathers from several pieces."""
    rt = runtime()
    v = rt.gpu.max_binding // (2 * d) + 1500
    host, seen = stored(rng.standard_normal((v, d)).astype(np.float32), dtype)
    table = rt.upload(host, dtype)
    require(len(table.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)) >= 2, "the table fits one binding")
    ids = rng.integers(0, v, size=(37, g)).astype(np.int32)
    ids[:, 0], ids[:, 1] = 0, v - 1  # every row reads both ends
    out = padded_output((37, d))
    embedding_mean(rt.upload(ids), table, out=out)
    return out.numpy(), embedding_mean_ref(ids, seen)


def cases():
    grid = [dict(v=v, d=d, t=t, dtype=dt) for dt in ("f32", "f16", "bf16")
            for v, d, t in [(1, 1, 1), (3, 7, 5), (100, 33, 7), (1000, 257, 33), (50, 1000, 100), (4099, 64, 257), (300, 1031, 3)]]
    return [
        # Exact: the NMSE bound is 0, and the bits must match.
        *sweep("embedding", "embedding", 0.0, _embedding_case, grid, quick=[dict(v=100, d=33, t=7, dtype="bf16")]),
        *sweep("embedding", "embedding", 0.0, _embedding_split_case,
               [dict(dtype="bf16", d=1024), dict(dtype="f16", d=1031)], large=True),
        *sweep("embedding", "embedding", 0.0, _embedding_q8_case,
               [dict(v=v, d=d, t=t, dtype="q8_0") for v, d, t in [(1, 32, 1), (3, 96, 5), (100, 32, 7), (50, 2080, 9),
                                                                  (4099, 96, 257), (300, 2080, 3)]],
               quick=[dict(v=50, d=2080, t=9, dtype="q8_0")]),
        *sweep("embedding", "embedding", 0.0, _embedding_q8_split_case, [dict(d=1056, dtype="q8_0")], large=True),
        *sweep("embedding", "embedding_mean", NMSE_MEAN, _embedding_mean_case,
               [dict(v=v, d=d, t=t, g=g, dtype=dt) for dt in ("f32", "bf16") for v, d, t, g in
                [(1, 1, 1, 1), (7, 33, 5, 16), (100, 257, 13, 3), (4096, 1024, 9, 16), (50, 64, 300, 16)]],
               quick=[dict(v=100, d=257, t=13, g=3, dtype="bf16")]),
        *sweep("embedding", "embedding_mean", NMSE_MEAN, _embedding_mean_split_case,
               [dict(d=1024, g=16, dtype="bf16")], large=True),
    ]
