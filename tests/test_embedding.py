"""embedding: zero rows for out-of-range ids (16-bit and Q8_0 tables), and argument errors. Bit-exact rows
over ragged shapes and over the 128 MiB binding limit are registry cases (ops/embedding.py cases)."""

import numpy as np
import pytest

from omni_lab.formats.q8_0 import Q8Weight, dequantize_q8_0, upload_q8_0
from omni_lab.gpu import KernelError
from omni_lab.ops.embedding import embedding, embedding_ref, finite_table, q8_blocks, same_bits
from kernel_harness import check_sentinels, padded_output


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


def test_q8_0_out_of_range_ids_give_zero_rows(rt, rng):
    v, d = 50, 96
    blocks = q8_blocks(rng, v, d)
    ids = np.array([0, -1, 49, 50, 2**31 - 1, -(2**31), 7], dtype=np.int32)
    out = padded_output((len(ids), d))
    out_host = embedding(rt.upload(ids), upload_q8_0(blocks, (v, d)), out=out).numpy()
    assert same_bits(out_host, embedding_ref(ids, dequantize_q8_0(blocks)))
    assert (out_host[[1, 3, 4, 5]] == 0).all()
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
