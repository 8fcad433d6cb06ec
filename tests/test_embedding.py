"""embedding: bit-exact rows for f32/f16/bf16 tables over ragged shapes, zero rows for out-of-range ids,
a table over the 128 MiB binding limit (bound in row pieces), sentinels, and argument errors."""

import numpy as np
import pytest

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
