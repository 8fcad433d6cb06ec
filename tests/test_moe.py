"""MoE ops (route, moe_matvec, moe_combine) against numpy over a sweep with ragged shapes and split bindings."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError, bf16_to_f32
from omni_lab.ops import moe
from kernel_harness import NMSE_ELEMENTWISE, NMSE_MATMUL, check_sentinels, nmse, padded_output, rand
from test_linear import weights


ROUTE_CASES = [(1, 8, 2, True), (5, 8, 3, False), (37, 128, 8, True), (3, 60, 6, True), (2, 3, 3, True),
               (70, 129, 1, False), (4, 1000, 7, True)]


@pytest.mark.parametrize("t,e,k,norm", ROUTE_CASES)
def test_route(rt, rng, t, e, k, norm):
    logits = rand(rng, t, e, scale=2.0)
    ow, oe = padded_output((t, k)), padded_output((t, k), "i32")
    moe.route(rt.upload(logits), k, norm, out_weights=ow, out_experts=oe)
    ref_w, ref_e = moe.route_ref(logits, k, norm)
    np.testing.assert_array_equal(oe.numpy(), ref_e)
    assert nmse(ow.numpy(), ref_w) < NMSE_ELEMENTWISE * 1e-2
    check_sentinels(ow)
    check_sentinels(oe)


def test_route_is_transformers_router(rt, rng):
    """Same experts and weights as transformers' Qwen3-Omni TopKRouter on its own float32 logits."""
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerTextTopKRouter

    for norm in (True, False):
        cfg = type("C", (), dict(num_experts_per_tok=8, num_experts=128, norm_topk_prob=norm, hidden_size=32))
        router = Qwen3OmniMoeThinkerTextTopKRouter(cfg)
        torch.nn.init.normal_(router.weight, std=0.3)
        h = torch.randn(19, 32)
        with torch.no_grad():
            logits, scores, idx = router(h)
        w, e = moe.route(rt.upload(logits.numpy()), 8, norm)
        np.testing.assert_array_equal(e.numpy(), idx.numpy())
        np.testing.assert_allclose(w.numpy(), scores.numpy(), rtol=2e-6, atol=1e-7)


def test_route_ties_pick_lower_expert(rt):
    logits = np.array([[0.0, 1.0, 1.0, 0.5, 1.0]], np.float32)
    w, e = moe.route(rt.upload(logits), 3, True)
    assert e.numpy().tolist() == [[1, 2, 4]]
    np.testing.assert_allclose(w.numpy(), [[1 / 3] * 3], rtol=1e-6)


MATVEC_CASES = [(t, k, e, n, d, dt, per_pair)
                for dt in ("f32", "f16", "bf16")
                for t, k, e, n, d, per_pair in [(1, 2, 8, 32, 64, False), (3, 3, 8, 7, 24, False), (5, 2, 4, 33, 40, True),
                                                (9, 8, 16, 17, 31, False), (2, 1, 3, 5, 5, True), (4, 6, 128, 12, 128, True)]]


@pytest.mark.parametrize("t,k,e,n,d,dtype,per_pair", MATVEC_CASES)
def test_moe_matvec(rt, rng, t, k, e, n, d, dtype, per_pair):
    host_w, w_seen = weights(rng, e * n, d, dtype)
    experts = np.stack([rng.choice(e, size=k, replace=False) for _ in range(t)]).astype(np.int32)
    x = rand(rng, *((t, k, d) if per_pair else (t, d)))
    out = padded_output((t, k, n))
    moe.moe_matvec(rt.upload(x), rt.upload(host_w.reshape(e, n, d), dtype), rt.upload(experts), out=out)
    ref = moe.moe_matvec_ref(x, w_seen.reshape(e, n, d), experts)
    assert nmse(out.numpy(), ref) < NMSE_MATMUL * 1e-3
    check_sentinels(out)


def test_moe_matvec_skips_ids_outside_the_experts(rt, rng):
    e, n, d = 4, 6, 16
    w = rand(rng, e, n, d)
    experts = np.array([[0, 9], [-1, 3]], np.int32)  # 9 and -1 name no expert: those rows stay as they were
    x = rand(rng, 2, d)
    out = rt.upload(np.full((2, 2, n), 5.0, np.float32))
    got = moe.moe_matvec(rt.upload(x), rt.upload(w), rt.upload(experts), out=out).numpy()
    np.testing.assert_array_equal(got[0, 1], 5.0)
    np.testing.assert_array_equal(got[1, 0], 5.0)
    np.testing.assert_allclose(got[0, 0], w[0] @ x[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1, 1], w[3] @ x[1], rtol=1e-5, atol=1e-5)


def test_moe_matvec_split_binding(rt, rng):
    """A bf16 expert stack over 128 MiB is bound in expert pieces (lavapipe's limit); every pair lands."""
    e, n, d = 9, 2048, 4096  # 151 MB of bf16
    assert e * n * d * 2 > rt.gpu.max_binding
    bits = rng.integers(0x3C00, 0x3D00, size=(e, n, d), dtype=np.uint16) ^ (rng.integers(0, 2, size=(e, n, d), dtype=np.uint16) << 15)
    wt = rt.upload(bits, "bf16")
    assert len(wt.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)) > 1
    experts = np.array([[0, 8], [4, 7], [8, 1]], np.int32)
    x = rand(rng, 3, d)
    got = moe.moe_matvec(rt.upload(x), wt, rt.upload(experts)).numpy()
    ref = moe.moe_matvec_ref(x, bf16_to_f32(bits[np.unique(experts)]).reshape(-1, n, d),
                             np.searchsorted(np.unique(experts), experts).astype(np.int32))
    assert nmse(got, ref) < 1e-9


COMBINE_CASES = [(1, 2, 64), (3, 3, 7), (17, 8, 130), (5, 1, 33)]


@pytest.mark.parametrize("t,k,d", COMBINE_CASES)
def test_moe_combine(rt, rng, t, k, d):
    y, w = rand(rng, t, k, d), rng.random((t, k)).astype(np.float32)
    out = padded_output((t, d))
    moe.moe_combine(rt.upload(y), rt.upload(w), out=out)
    assert nmse(out.numpy(), moe.moe_combine_ref(y, w)) < NMSE_ELEMENTWISE
    check_sentinels(out)


def test_shape_and_dtype_errors_name_the_kernel(rt):
    w = rt.upload(np.zeros((4, 6, 8), np.float32))
    ex = rt.upload(np.zeros((2, 2), np.int32))
    with pytest.raises(KernelError, match=r"moe_matvec: x must be \[T, D\] = \(2, 8\)"):
        moe.moe_matvec(rt.upload(np.zeros((2, 7), np.float32)), w, ex)
    with pytest.raises(KernelError, match=r"moe_matvec: experts must be i32, got f32"):
        moe.moe_matvec(rt.upload(np.zeros((2, 8), np.float32)), w, rt.upload(np.zeros((2, 2), np.float32)))
    with pytest.raises(KernelError, match=r"moe.route: k=9 must be in \[1, E=8\]"):
        moe.route(rt.upload(np.zeros((3, 8), np.float32)), 9, True)
    with pytest.raises(KernelError, match=r"moe_combine: y must be \[T, k, D\] and weights \[T, k\]"):
        moe.moe_combine(rt.upload(np.zeros((2, 3, 4), np.float32)), rt.upload(np.zeros((2, 2), np.float32)))
