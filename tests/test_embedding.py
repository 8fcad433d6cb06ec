"""embedding: bit-exact rows for f32/f16/bf16 and Q8_0 tables over ragged shapes, zero rows for
out-of-range ids, tables over the 128 MiB binding limit (bound in row pieces), sentinels, and argument
errors."""

import numpy as np
import pytest

from omni_lab.formats.q8_0 import QK, Q8Weight, dequantize_q8_0, join_q8_0, upload_q8_0
from omni_lab.gpu import KernelError, bf16_to_f32
from omni_lab.ops.embedding import embedding, embedding_ref
from kernel_harness import check_sentinels, padded_output


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


CASES = [(v, d, t, dt) for dt in ("f32", "f16", "bf16")
         for v, d, t in [(1, 1, 1), (3, 7, 5), (100, 33, 7), (1000, 257, 33), (50, 1000, 100), (4099, 64, 257), (300, 1031, 3)]]


@pytest.mark.parametrize("v,d,t,dtype", CASES)
def test_embedding(rt, rng, v, d, t, dtype):
    host, seen = finite_table(rng, v, d, dtype)
    ids = rng.integers(0, v, size=t).astype(np.int32)
    ids[0] = v - 1  # last row: the end of the table
    out = padded_output((t, d))
    embedding(rt.upload(ids), rt.upload(host, dtype), out=out)
    assert same_bits(out.numpy(), embedding_ref(ids, seen))
    check_sentinels(out)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_out_of_range_ids_give_zero_rows(rt, rng, dtype):
    v, d = 50, 19
    host, seen = finite_table(rng, v, d, dtype)
    ids = np.array([0, -1, 49, 50, 2**31 - 1, -(2**31), 7], dtype=np.int32)
    out = padded_output((len(ids), d))
    out_host = embedding(rt.upload(ids), rt.upload(host, dtype), out=out).numpy()
    assert same_bits(out_host, embedding_ref(ids, seen))
    assert (out_host[[1, 3, 4, 5]] == 0).all()
    check_sentinels(out)


@pytest.mark.parametrize("dtype,d", [("bf16", 1024), ("f16", 1031)])
def test_table_over_binding_limit(rt, rng, dtype, d):
    """Qwen3's 311 MB bf16 table needs row pieces under lavapipe's 128 MiB binding limit. Ids on both sides
    of every piece boundary, the ends of the table, and out of range."""
    v = rt.gpu.max_binding // (2 * d) + 1500
    host, seen = finite_table(rng, v, d, dtype)
    table = rt.upload(host, dtype)
    pieces = table.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)
    assert len(pieces) >= 2
    edges = [r for r, _ in pieces[1:]]
    ids = np.array([0, v - 1, -3, v] + [e - 1 for e in edges] + edges + list(rng.integers(0, v, size=40)), dtype=np.int32)
    out = padded_output((len(ids), d))
    embedding(rt.upload(ids), table, out=out)
    assert same_bits(out.numpy(), embedding_ref(ids, seen))
    check_sentinels(out)


def test_errors_name_the_kernel(rt):
    table = rt.upload(np.zeros((10, 4), np.float32))
    ids = rt.upload(np.zeros(3, np.int32))
    with pytest.raises(KernelError, match=r"embedding: ids must be i32, got f32"):
        embedding(rt.upload(np.zeros(3, np.float32)), table)
    with pytest.raises(KernelError, match=r"embedding: table must be f32 or f16 or bf16, got i32"):
        embedding(ids, rt.upload(np.zeros((10, 4), np.int32)))
    with pytest.raises(KernelError, match=r"embedding: ids must be \[T\] and table \[V, D\] \(ids=\(3, 1\) i32, table=\(10, 4\) f32\)"):
        embedding(ids.view((3, 1)), table)
    with pytest.raises(KernelError, match=r"embedding: out must be \(3, 4\) f32 \(out=\(3, 5\) f32\)"):
        embedding(ids, table, out=rt.upload(np.zeros((3, 5), np.float32)))


def q8_blocks(rng, v, d):
    """Q8_0 blocks of a [V, D] table: every int8 (-128 included, which gguf never writes but any reader
    must take) and random finite f16 scales of both signs, subnormals and -0 included."""
    q = rng.integers(-128, 128, size=(v, d), dtype=np.int8)
    scale_bits = rng.integers(0, 2**16, size=(v, d // QK), dtype=np.uint16)
    scale_bits[(scale_bits & 0x7C00) == 0x7C00] &= 0xBFFF  # no inf/NaN: clear the top exponent bit
    return join_q8_0(q, scale_bits.view(np.float16))


Q8_CASES = [(1, 32, 1), (3, 96, 5), (100, 32, 7), (50, 2080, 9), (4099, 96, 257), (300, 2080, 3)]


@pytest.mark.parametrize("v,d,t", Q8_CASES)
def test_embedding_q8_0(rt, rng, v, d, t):
    """Rows of a Q8_0 table come out bit-equal to gguf's dequantize of the table, gathered. D = 96 and
    2080 hold an odd number of blocks, so every other row's scales start mid-word."""
    blocks = q8_blocks(rng, v, d)
    ids = rng.integers(0, v, size=t).astype(np.int32)
    ids[0] = v - 1  # last row: the end of the table
    if t > 1:
        ids[1] = 0
    out = padded_output((t, d))
    embedding(rt.upload(ids), upload_q8_0(blocks, (v, d)), out=out)
    assert same_bits(out.numpy(), embedding_ref(ids, dequantize_q8_0(blocks)))
    check_sentinels(out)


def test_q8_0_out_of_range_ids_give_zero_rows(rt, rng):
    v, d = 50, 96
    blocks = q8_blocks(rng, v, d)
    ids = np.array([0, -1, 49, 50, 2**31 - 1, -(2**31), 7], dtype=np.int32)
    out = padded_output((len(ids), d))
    out_host = embedding(rt.upload(ids), upload_q8_0(blocks, (v, d)), out=out).numpy()
    assert same_bits(out_host, embedding_ref(ids, dequantize_q8_0(blocks)))
    assert (out_host[[1, 3, 4, 5]] == 0).all()
    check_sentinels(out)


def test_q8_0_table_over_binding_limit(rt, rng):
    """int8 quants over lavapipe's 128 MiB binding limit, bound in row pieces (Q8Weight.row_pieces keeps
    the quants and the odd-length scale rows of D = 1056 at aligned offsets). Ids on both sides of every
    piece boundary, the ends of the table, and out of range. The reference dequantizes only the rows
    gathered (the whole table in f32 would be 0.5 GB)."""
    d = 1056
    v = rt.gpu.max_binding // d + 1500
    blocks = q8_blocks(rng, v, d)
    table = upload_q8_0(blocks, (v, d))
    pieces = table.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)
    assert len(pieces) >= 2
    edges = [r for r, _ in pieces[1:]]
    ids = np.array([0, v - 1, -3, v] + [e - 1 for e in edges] + edges + list(rng.integers(0, v, size=40)), dtype=np.int32)
    out = padded_output((len(ids), d))
    embedding(rt.upload(ids), table, out=out)
    ok = (ids >= 0) & (ids < v)
    expected = np.zeros((len(ids), d), np.float32)
    expected[ok] = dequantize_q8_0(blocks[ids[ok]])
    assert same_bits(out.numpy(), expected)
    check_sentinels(out)


def test_q8_0_errors_name_the_kernel(rt, rng):
    table = upload_q8_0(q8_blocks(rng, 10, 64), (10, 64))
    ids = rt.upload(np.zeros(3, np.int32))
    with pytest.raises(KernelError, match=r"embedding: ids must be \[T\] and table \[V, D\] \(ids=\(3, 1\) i32, "
                                          r"quants=\(10, 16\) u32, scales=\(10, 2\) f16\)"):
        embedding(ids.view((3, 1)), table)
    with pytest.raises(KernelError, match=r"embedding: a Q8_0 table \[V, D\] = \(10, 64\) needs D % 32 == 0, "
                                          r"quants \(V, D/4\) u32 and scales \(V, D/32\) f16"):
        embedding(ids, Q8Weight((10, 64), table.quants, table.quants))
    with pytest.raises(KernelError, match=r"embedding: out must be \(3, 64\) f32 \(out=\(3, 32\) f32\)"):
        embedding(ids, table, out=rt.upload(np.zeros((3, 32), np.float32)))
