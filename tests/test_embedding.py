"""embedding: zero rows for out-of-range ids, and argument errors. Bit-exact rows for f32/f16/bf16 tables
over ragged shapes and over the 128 MiB binding limit are registry cases (ops/embedding.py cases)."""

import numpy as np
import pytest

from omni_lab.gpu import KernelError
from omni_lab.ops.embedding import embedding, embedding_ref, finite_table, same_bits
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
