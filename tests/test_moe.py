"""MoE ops (route, experts_gate_up, experts_down, per pair and grouped by expert) against numpy over a sweep
with ragged shapes, Q8_0 weights and split bindings; group_pairs' tiles against numpy's grouping."""

import numpy as np
import pytest
import torch

from omni_lab.formats.q8_0 import QK, Q8Weight, quantize_q8_0, split_q8_0, upload_q8_0
from omni_lab.gpu import KernelError, bf16_to_f32
from omni_lab.ops import moe, tiles
from omni_lab.ops import q8_0 as q8
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


def expert_ids(rng, t, k, e):
    return np.stack([rng.choice(e, size=k, replace=False) for _ in range(t)]).astype(np.int32)


def q8_stack(rng, e, n, d):
    """Random Q8_0 expert stack [E, N, D] quantized by gguf: (Q8Weight, the float values it holds)."""
    blocks = quantize_q8_0(rand(rng, e, n, d, scale=d ** -0.5))  # [E, N, D/32*34]
    wq, wd = split_q8_0(blocks, (e, n, d))
    return upload_q8_0(blocks, (e, n, d)), q8.dequantize_ref(wq.reshape(e * n, d), wd.reshape(e * n, -1)).reshape(e, n, d)


def q8_seen(x):
    """Activations as the Q8_0 kernels see them: quantized per block of 32 like llama.cpp, then exact."""
    q, d = q8.quantize_activations_ref(x)
    blocks = q.astype(np.float64).reshape(*x.shape[:-1], -1, QK) * d[..., None].astype(np.float64)
    return blocks.reshape(x.shape)


# (T, k, E, F, D): D and F ragged (not multiples of 8) in some, to take the element-wise path.
EXPERT_SHAPES = [(1, 2, 8, 32, 64), (3, 3, 8, 7, 24), (5, 2, 4, 33, 40), (9, 8, 16, 17, 31), (2, 1, 3, 5, 5),
                 (4, 6, 128, 12, 128), (1, 8, 128, 96, 256)]
EXPERT_CASES = [(*shape, dt) for dt in ("f32", "f16", "bf16") for shape in EXPERT_SHAPES]
Q8_SHAPES = [(1, 2, 8, 32, 64), (3, 3, 8, 96, 32), (6, 8, 16, 64, 160), (1, 8, 128, 96, 256)]


def grouping(rt, experts: np.ndarray, e: int, grouped: bool):
    """(experts on the GPU, group_pairs of them or None for the per-pair kernels)."""
    ex = rt.upload(experts)
    return ex, (moe.group_pairs(ex, e) if grouped else None)


@pytest.mark.parametrize("grouped", [False, True], ids=["pairs", "grouped"])
@pytest.mark.parametrize("t,k,e,f,d,dtype", EXPERT_CASES)
def test_experts_gate_up(rt, rng, t, k, e, f, d, dtype, grouped):
    host_w, w_seen = weights(rng, e * 2 * f, d, dtype)
    experts = expert_ids(rng, t, k, e)
    x = rand(rng, t, d)
    out = padded_output((t, k, f))
    ex, groups = grouping(rt, experts, e, grouped)
    moe.experts_gate_up(rt.upload(x), rt.upload(host_w.reshape(e, 2 * f, d), dtype), ex, out=out, groups=groups)
    assert nmse(out.numpy(), moe.experts_gate_up_ref(x, w_seen.reshape(e, 2 * f, d), experts)) < NMSE_MATMUL * 1e-3
    check_sentinels(out)


@pytest.mark.parametrize("grouped", [False, True], ids=["pairs", "grouped"])
@pytest.mark.parametrize("t,k,e,f,d,dtype", EXPERT_CASES)
def test_experts_down(rt, rng, t, k, e, f, d, dtype, grouped):
    host_w, w_seen = weights(rng, e * d, f, dtype)
    experts = expert_ids(rng, t, k, e)
    act, rw = rand(rng, t, k, f), rng.random((t, k)).astype(np.float32)
    out = padded_output((t, d))
    ex, groups = grouping(rt, experts, e, grouped)
    moe.experts_down(rt.upload(act), rt.upload(host_w.reshape(e, d, f), dtype), ex, rt.upload(rw), out=out, groups=groups)
    assert nmse(out.numpy(), moe.experts_down_ref(act, w_seen.reshape(e, d, f), experts, rw)) < NMSE_MATMUL * 1e-3
    check_sentinels(out)


# (T, k, E): P = T*k pairs over E experts; under and over the group kernel's 256 threads, E above 256
# (several experts per scanning thread), and one expert taking every pair (1 and 5 tiles).
GROUP_CASES = [(1, 1, 1), (5, 2, 8), (37, 8, 128), (300, 8, 128), (64, 4, 1000), (17, 3, 3), (100, 3, 3)]


@pytest.mark.parametrize("t,k,e", GROUP_CASES)
def test_group_pairs(rt, rng, t, k, e):
    """Each expert's tiles hold exactly the pairs that chose it, padded with NO_ROW; -1 past the used tiles."""
    experts = expert_ids(rng, t, k, e) if e != 3 else np.full((t, k), 2, np.int32)
    experts[0, 0] = -1 if t > 1 else experts[0, 0]  # an id naming no expert is in no tile
    g = moe.group_pairs(rt.upload(experts), e)
    order, tile_expert = g.order.numpy(), g.tile_expert.numpy()
    flat = experts.reshape(-1)
    counts = np.bincount(flat[flat >= 0], minlength=e)
    want_tiles = -(-counts // tiles.TILE_ROWS)
    used = int(want_tiles.sum())
    assert g.order.shape == (g.tiles * tiles.TILE_ROWS,) and g.tiles >= used
    np.testing.assert_array_equal(tile_expert[:used], np.repeat(np.arange(e), want_tiles))
    assert (tile_expert[used:] == -1).all()
    runs = order[:used * tiles.TILE_ROWS].reshape(used, tiles.TILE_ROWS)
    for ex in np.unique(flat[flat >= 0]):
        got = runs[tile_expert[:used] == ex].reshape(-1)
        pairs = got[got != tiles.NO_ROW]
        assert sorted(pairs.tolist()) == np.flatnonzero(flat == ex).tolist()
        assert (got[len(pairs):] == tiles.NO_ROW).all()  # padding only after the pairs
    g.release()


@pytest.mark.parametrize("t,k,e,f,d", Q8_SHAPES)
def test_experts_q8_0(rt, rng, t, k, e, f, d):
    """Q8_0 experts with int8 activations: block sums are exact, so only the f32 sums over blocks differ."""
    experts = expert_ids(rng, t, k, e)
    gu, gu_seen = q8_stack(rng, e, 2 * f, d)
    x = rand(rng, t, d)
    act = padded_output((t, k, f))
    moe.experts_gate_up(rt.upload(x), gu, rt.upload(experts), out=act)
    assert nmse(act.numpy(), moe.experts_gate_up_ref(q8_seen(x), gu_seen, experts)) < 1e-11
    check_sentinels(act)

    dn, dn_seen = q8_stack(rng, e, d, f)
    a, rw = rand(rng, t, k, f), rng.random((t, k)).astype(np.float32)
    out = padded_output((t, d))
    moe.experts_down(rt.upload(a), dn, rt.upload(experts), rt.upload(rw), out=out)
    assert nmse(out.numpy(), moe.experts_down_ref(q8_seen(a), dn_seen, experts, rw)) < 1e-11
    check_sentinels(out)


@pytest.mark.parametrize("t,k,e,f,d", Q8_SHAPES + [(40, 8, 16, 64, 96)])
def test_grouped_experts_q8_0(rt, rng, t, k, e, f, d):
    """Grouped Q8_0 experts dequantize the weights into the tile and multiply f32 activations (the dense
    prefill's rule): exact weights, f32 sums."""
    experts = expert_ids(rng, t, k, e)
    ex, groups = grouping(rt, experts, e, True)
    gu, gu_seen = q8_stack(rng, e, 2 * f, d)
    x = rand(rng, t, d)
    act = padded_output((t, k, f))
    moe.experts_gate_up(rt.upload(x), gu, ex, out=act, groups=groups)
    assert nmse(act.numpy(), moe.experts_gate_up_ref(x, gu_seen, experts)) < 1e-11
    check_sentinels(act)

    dn, dn_seen = q8_stack(rng, e, d, f)
    a, rw = rand(rng, t, k, f), rng.random((t, k)).astype(np.float32)
    out = padded_output((t, d))
    moe.experts_down(rt.upload(a), dn, ex, rt.upload(rw), out=out, groups=groups)
    assert nmse(out.numpy(), moe.experts_down_ref(a, dn_seen, experts, rw)) < 1e-11
    check_sentinels(out)


@pytest.mark.parametrize("grouped", [False, True], ids=["pairs", "grouped"])
def test_experts_skip_ids_outside_the_experts(rt, rng, grouped):
    e, f, d = 4, 6, 16
    w = rand(rng, e, 2 * f, d)
    experts = np.array([[0, 9], [-1, 3]], np.int32)  # 9 and -1 name no expert: those pairs write and add nothing
    ex, groups = grouping(rt, experts, e, grouped)
    x = rand(rng, 2, d)
    act = rt.upload(np.full((2, 2, f), 5.0, np.float32))
    got = moe.experts_gate_up(rt.upload(x), rt.upload(w), ex, out=act, groups=groups).numpy()
    np.testing.assert_array_equal(got[0, 1], 5.0)
    np.testing.assert_array_equal(got[1, 0], 5.0)
    ref = moe.experts_gate_up_ref(x, w, np.array([[0, 0], [3, 3]], np.int32))
    np.testing.assert_allclose(got[0, 0], ref[0, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1, 1], ref[1, 1], rtol=1e-5, atol=1e-6)

    wd = rand(rng, e, d, f)
    rw = np.ones((2, 2), np.float32)
    y = moe.experts_down(rt.upload(got), rt.upload(wd), ex, rt.upload(rw), groups=groups).numpy()
    np.testing.assert_allclose(y[0], wd[0] @ got[0, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[1], wd[3] @ got[1, 1], rtol=1e-5, atol=1e-5)


def test_experts_split_binding(rt, rng):
    """Expert stacks over 128 MiB are bound in expert pieces (lavapipe's limit): gate_up rows land in the
    piece that holds their expert, down's pieces add up (per pair) or each write their pairs' rows
    (grouped); bf16 and Q8_0."""
    e, f, d = 9, 1024, 4096  # gate_up [9, 2048, 4096] bf16 = 151 MB; down [9, 4096, 2048] likewise
    bits = rng.integers(0x3C00, 0x3D00, size=(e, 2 * f, d), dtype=np.uint16) ^ (rng.integers(0, 2, size=(e, 2 * f, d), dtype=np.uint16) << 15)
    wt = rt.upload(bits, "bf16")
    assert len(wt.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)) > 1
    experts = np.array([[0, 8], [4, 7], [8, 1]], np.int32)
    x = rand(rng, 3, d, scale=d ** -0.5)
    ex, groups = grouping(rt, experts, e, True)
    ref = moe.experts_gate_up_ref(x, bf16_to_f32(bits), experts)
    for g in (None, groups):
        got = moe.experts_gate_up(rt.upload(x), wt, ex, groups=g).numpy()
        assert nmse(got, ref) < 1e-9
    del bits, wt

    wd_bits = rng.integers(0x3C00, 0x3D00, size=(e, d, 2 * f), dtype=np.uint16)
    wd = rt.upload(wd_bits, "bf16")
    assert len(wd.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)) > 1
    act, rw = rand(rng, 3, 2, 2 * f), rng.random((3, 2)).astype(np.float32)
    ref = moe.experts_down_ref(act, bf16_to_f32(wd_bits), experts, rw)
    for g in (None, groups):
        y = moe.experts_down(rt.upload(act), wd, ex, rt.upload(rw), groups=g).numpy()
        assert nmse(y, ref) < 1e-9
    del wd_bits, wd

    wq = rng.integers(-127, 128, size=(e, 2 * f, 2 * d), dtype=np.int8)  # 151 MB of int8
    ws = (rng.uniform(0.5, 1.5, size=(e, 2 * f, 2 * d // QK)) * 1e-3).astype(np.float16)
    w8 = Q8Weight((e, 2 * f, 2 * d), rt.upload(wq.view(np.uint32), "u32"), rt.upload(ws, "f16"))
    assert len(w8.row_pieces(rt.gpu.max_binding, rt.gpu.offset_alignment)) > 1
    x8 = rand(rng, 3, 2 * d)
    got8 = moe.experts_gate_up(rt.upload(x8), w8, ex).numpy()
    used = np.unique(experts)
    seen = q8.dequantize_ref(wq[used].reshape(-1, 2 * d), ws[used].reshape(len(used) * 2 * f, -1)).reshape(len(used), 2 * f, 2 * d)
    local = np.searchsorted(used, experts).astype(np.int32)
    assert nmse(got8, moe.experts_gate_up_ref(q8_seen(x8), seen, local)) < 1e-11
    grouped8 = moe.experts_gate_up(rt.upload(x8), w8, ex, groups=groups).numpy()
    assert nmse(grouped8, moe.experts_gate_up_ref(x8, seen, local)) < 1e-11


def test_shape_and_dtype_errors_name_the_kernel(rt):
    w = rt.upload(np.zeros((4, 6, 8), np.float32))
    ex = rt.upload(np.zeros((2, 2), np.int32))
    with pytest.raises(KernelError, match=r"moe.experts_gate_up: w must be \[E, 2F, D\] with D = 7"):
        moe.experts_gate_up(rt.upload(np.zeros((2, 7), np.float32)), w, ex)
    with pytest.raises(KernelError, match=r"moe.experts_gate_up: experts must be i32, got f32"):
        moe.experts_gate_up(rt.upload(np.zeros((2, 8), np.float32)), w, rt.upload(np.zeros((2, 2), np.float32)))
    with pytest.raises(KernelError, match=r"moe.route: k=9 must be in \[1, E=8\]"):
        moe.route(rt.upload(np.zeros((3, 8), np.float32)), 9, True)
    with pytest.raises(KernelError, match=r"moe.experts_down: act must be \(2, 2, 8\) and weights \(2, 2\)"):
        moe.experts_down(rt.upload(np.zeros((2, 2, 8), np.float32)), w, ex, rt.upload(np.zeros((2, 3), np.float32)))
    with pytest.raises(KernelError, match=r"moe.experts_gate_up: groups were made for 6 pairs of 4 experts, not 4 of 4"):
        moe.experts_gate_up(rt.upload(np.zeros((2, 8), np.float32)), w, ex,
                            groups=moe.group_pairs(rt.upload(np.zeros((3, 2), np.int32)), 4))
    with pytest.raises(KernelError, match=r"moe.group_pairs: num_experts=0 must be in \[1, 4096\]"):
        moe.group_pairs(ex, 0)
