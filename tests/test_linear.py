"""matvec's threads-per-row rule, and argument errors. matvec, matmul and matvec_multi against numpy over
sweeps with ragged shapes and split bindings are registry cases (ops/linear.py cases)."""

import numpy as np
import pytest

from omni_lab.gpu import KernelError, tuning
from omni_lab.ops import linear


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


def test_shape_and_dtype_errors_name_the_kernel(rt):
    w = rt.upload(np.zeros((4, 8), np.float32))
    with pytest.raises(KernelError, match=r"matvec: x must be .*x=\(7,\) f32, w=\(4, 8\) f32"):
        linear.matvec(rt.upload(np.zeros(7, np.float32)), w)
    with pytest.raises(KernelError, match=r"matmul: x must be f32, got i32"):
        linear.matmul(rt.upload(np.zeros((2, 8), np.int32)), w)
    with pytest.raises(KernelError, match=r"matvec: out must be \(4,\) f32"):
        linear.matvec(rt.upload(np.zeros(8, np.float32)), w, out=rt.upload(np.zeros(5, np.float32)))


def test_matvec_multi_refuses_mixed_weights(rt):
    x = rt.upload(np.zeros(16, np.float32))
    a, b = rt.upload(np.zeros((4, 16), np.float32)), rt.upload(np.zeros((4, 16), np.float32), "bf16")
    assert not linear.multi_ok(x, (a, b))
    with pytest.raises(KernelError, match="matvec_multi: weights must share a dtype"):
        linear.matvec_multi(x, (a, b), (rt.empty((4,)), rt.empty((4,))))
