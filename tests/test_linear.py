"""matvec and matmul against numpy over a sweep that includes ragged shapes and split bindings."""

import numpy as np
import pytest

from omni_lab.gpu import KernelError, bf16_to_f32, tuning
from omni_lab.ops import linear
from kernel_harness import NMSE_MATMUL, check_sentinels, nmse, padded_output, rand


def weights(rng, n, k, dtype):
    """Random weights, and the float32 values the GPU sees after storage in `dtype`."""
    return linear.stored(rand(rng, n, k, scale=k ** -0.5), dtype)


MATVEC_CASES = [(n, k, dt) for dt in ("f32", "f16", "bf16") for n, k in [(1, 8), (7, 24), (33, 64), (257, 200), (130, 1031), (64, 4096), (3, 5)]]


@pytest.mark.parametrize("n,k,dtype", MATVEC_CASES)
def test_matvec(rt, rng, n, k, dtype):
    host_w, w_seen = weights(rng, n, k, dtype)
    x = rand(rng, k)
    out = padded_output((n,))
    linear.matvec(rt.upload(x), rt.upload(host_w, dtype), out=out)
    assert nmse(out.numpy(), linear.matvec_ref(x, w_seen)) < NMSE_MATMUL * 1e-3
    check_sentinels(out)


@pytest.mark.parametrize("tpr", [1, 8, 64, 256])
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_matvec_threads_per_row(rt, rng, tpr, dtype):
    n, k = 37, 1000  # rows not a multiple of rows per workgroup; K with a tail after the unrolled loop
    host_w, w_seen = weights(rng, n, k, dtype)
    x = rand(rng, k)
    out = padded_output((n,))
    linear.matvec(rt.upload(x), rt.upload(host_w, dtype), out=out, threads_per_row=tpr)
    assert nmse(out.numpy(), linear.matvec_ref(x, w_seen)) < 1e-9
    check_sentinels(out)


def test_matvec_tpr_rule():
    """More threads per row for few rows, up to the tuning table's launch_threads in all, but never past
    the workgroup (256), one 16-byte word per thread, or below the measured per-dtype default."""
    assert linear.matvec_tpr(128, 2048, "bf16") == 256  # MoE router: 8 workgroups at the default
    assert linear.matvec_tpr(2048, 4096, "bf16") == 64  # o_proj
    assert linear.matvec_tpr(5120, 2048, "bf16") == 32  # fused q, k, v
    assert linear.matvec_tpr(151936, 2048, "bf16") == linear.default_tpr("bf16")  # lm_head: plenty of rows
    assert linear.matvec_tpr(4, 64, "bf16") == linear.default_tpr("bf16")  # 8 words a row: the default stands
    assert linear.matvec_tpr(4, 256, "f32") == 64 and linear.matvec_tpr(4, 512, "f32") == 128
    for n in (1, 7, 128, 1000, 5120, 2**20):
        for k in (8, 200, 1024, 4096, 16384):
            for dtype in linear.WEIGHT_DTYPES:
                tpr = linear.matvec_tpr(n, k, dtype)
                words = k // (4 if dtype == "f32" else 8)
                assert tpr & (tpr - 1) == 0 and linear.default_tpr(dtype) <= tpr <= 256
                assert tpr == linear.default_tpr(dtype) or (tpr <= words and n * tpr // 2 < tuning.current().launch_threads)


MATMUL_CASES = [(m, n, k, dt) for dt in ("f32", "f16", "bf16") for m, n, k in [(2, 3, 5), (17, 33, 31), (64, 64, 64), (70, 130, 129), (5, 300, 1024)]]


@pytest.mark.parametrize("m,n,k,dtype", MATMUL_CASES)
def test_matmul(rt, rng, m, n, k, dtype):
    host_w, w_seen = weights(rng, n, k, dtype)
    x = rand(rng, m, k)
    out = padded_output((m, n))
    linear.matmul(rt.upload(x), rt.upload(host_w, dtype), out=out)
    assert nmse(out.numpy(), linear.matmul_ref(x, w_seen)) < NMSE_MATMUL * 1e-3
    check_sentinels(out)


def test_matvec_and_matmul_split_binding(rt, rng):
    """A bf16 weight over 128 MiB goes through both kernels bound in row pieces (lavapipe's limit)."""
    n, k = 8200, 8192  # 134 MB of bf16: more than one 128 MiB binding
    assert n * k * 2 > rt.gpu.max_binding
    w = rng.integers(0x3C00, 0x3D00, size=(n, k), dtype=np.uint16) ^ (rng.integers(0, 2, size=(n, k), dtype=np.uint16) << 15)
    w_seen = bf16_to_f32(w)
    wt = rt.upload(w, "bf16")
    assert len(wt.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)) > 1
    x = rand(rng, k)
    y = linear.matvec(rt.upload(x), wt).numpy()
    assert nmse(y, linear.matvec_ref(x, w_seen)) < 1e-9
    xm = rand(rng, 3, k)
    ym = linear.matmul(rt.upload(xm), wt).numpy()
    assert nmse(ym, linear.matmul_ref(xm, w_seen)) < 1e-9


def test_shape_and_dtype_errors_name_the_kernel(rt):
    w = rt.upload(np.zeros((4, 8), np.float32))
    with pytest.raises(KernelError, match=r"matvec: x must be .*x=\(7,\) f32, w=\(4, 8\) f32"):
        linear.matvec(rt.upload(np.zeros(7, np.float32)), w)
    with pytest.raises(KernelError, match=r"matmul: x must be f32, got i32"):
        linear.matmul(rt.upload(np.zeros((2, 8), np.int32)), w)
    with pytest.raises(KernelError, match=r"matvec: out must be \(4,\) f32"):
        linear.matvec(rt.upload(np.zeros(8, np.float32)), w, out=rt.upload(np.zeros(5, np.float32)))


@pytest.mark.parametrize("tpr", [None, 4, 256])
@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("rows", [(37, 5, 5), (64, 16), (1, 300, 7)])
def test_matvec_multi_equals_separate_matvecs(rt, rng, dtype, rows, tpr):
    k = 200
    hosts = [weights(rng, n, k, dtype) for n in rows]
    x = rand(rng, k)
    outs = tuple(padded_output((n,)) for n in rows)
    ws = tuple(rt.upload(h, dtype) for h, _ in hosts)
    assert linear.multi_ok(rt.upload(x), ws)
    linear.matvec_multi(rt.upload(x), ws, outs, threads_per_row=tpr)
    for (_, seen), out in zip(hosts, outs):
        assert nmse(out.numpy(), linear.matvec_ref(x, seen)) < 1e-9
        check_sentinels(out)


def test_matvec_multi_refuses_mixed_weights(rt):
    x = rt.upload(np.zeros(16, np.float32))
    a, b = rt.upload(np.zeros((4, 16), np.float32)), rt.upload(np.zeros((4, 16), np.float32), "bf16")
    assert not linear.multi_ok(x, (a, b))
    with pytest.raises(KernelError, match="matvec_multi: weights must share a dtype"):
        linear.matvec_multi(x, (a, b), (rt.empty((4,)), rt.empty((4,))))
