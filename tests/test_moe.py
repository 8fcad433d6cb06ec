"""MoE ops: route against transformers' router and on ties, group_pairs' tiles against numpy's grouping,
expert ids naming no expert, the routed gate_up against route and quantize_act bit for bit, where the routed
entry applies, and argument errors. route, experts_gate_up, experts_gate_up_routed and experts_down (per
pair and grouped by expert) against numpy over sweeps with ragged shapes, Q8_0 weights and split bindings
are registry cases (ops/moe.py cases)."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError, tuning
from omni_lab.ops import moe, tiles
from omni_lab.ops.moe import expert_ids, grouping
from omni_lab.ops.q8_0 import quantize_activations, quantize_activations_ref
from kernel_harness import rand


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


@pytest.mark.parametrize("grouped", [False, True], ids=["pairs", "grouped"])
def test_experts_skip_ids_outside_the_experts(rt, rng, grouped):
    e, f, d = 4, 6, 16
    w = rand(rng, e, 2 * f, d)
    experts = np.array([[0, 9], [-1, 3]], np.int32)  # 9 and -1 name no expert: those pairs write and add nothing
    ex, groups = grouping(experts, e, grouped)
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


@pytest.mark.parametrize("subgroups", [True, False], ids=["subgroups", "workgroup-memory"])
@pytest.mark.parametrize("dtype", ["bf16", "q8_0"])
def test_routed_gate_up_writes_routes_bits(rt, rng, subgroups, dtype):
    """The route that experts_gate_up_routed writes is route's, bit for bit (route_top_k in both; the
    reductions' extra threads add zeros), ties included."""
    for e, k, ties in ((128, 8, False), (128, 8, True), (60, 6, False), (3, 3, False)):
        logits = rng.integers(0, 4, (1, e)).astype(np.float32) if ties else rand(rng, 1, e, scale=2.0)
        w, _ = moe.random_stack(rng, e, 64, 64, dtype)
        with tuning.override(subgroups=subgroups):
            want_w, want_e = moe.route(rt.upload(logits), k, True)
            _, got_w, got_e = moe.experts_gate_up_routed(rt.upload(rand(rng, 1, 64)), w, rt.upload(logits), k, True)
        np.testing.assert_array_equal(got_e.numpy(), want_e.numpy())
        np.testing.assert_array_equal(got_w.numpy().view(np.uint32), want_w.numpy().view(np.uint32))


@pytest.mark.parametrize("subgroups", [True, False], ids=["subgroups", "workgroup-memory"])
def test_routed_q8_act_is_quantize_act_of_the_f32_act(rt, rng, subgroups):
    """gate_up_q8_routed's int8 act equals quantize_act's of gate_up_q8's f32 act bit for bit, and numpy's
    rule on it, at the same threads a row (so the f32 act is the same sum): quant_block is the one code path."""
    e, k, f, d = 16, 8, 96, 256
    w, _ = moe.q8_stack(rng, e, 2 * f, d)
    x, logits = rt.upload(rand(rng, 1, d)), rt.upload(rand(rng, 1, e, scale=2.0))
    # 8 threads a row in both: the routed entry's at 256 threads, which launch_tpr keeps where it widens nothing
    with tuning.override(subgroups=subgroups, moe_min_tpr=8, launch_threads=1):
        (aq, as_), _, _ = moe.experts_gate_up_routed(x, w, logits, k, True)
        _, experts = moe.route(logits, k, True)
        act = moe.experts_gate_up(x, w, experts)
    want_q, want_d = quantize_activations(act.view((k, f)))
    np.testing.assert_array_equal(aq.numpy(), want_q.numpy())
    np.testing.assert_array_equal(as_.numpy().view(np.uint32), want_d.numpy().view(np.uint32))
    ref_q, ref_d = quantize_activations_ref(act.numpy().reshape(k, f))
    np.testing.assert_array_equal(aq.numpy().view(np.int8).reshape(k, f), ref_q)
    np.testing.assert_array_equal(as_.numpy(), ref_d)


def test_routed_only_where_it_applies(rt, rng):
    """One token, E within the experts' workgroup, and for Q8_0 gate_up a Q8_0 down (a 16-bit down reads f32
    act) with x not staged in the experts' workgroups; elsewhere route runs, and the op refuses past E."""
    from omni_lab.ops.q8_0 import staging

    bf16 = lambda e: moe.random_stack(rng, e, 64, 64, "bf16")[0]  # noqa: E731
    q8 = lambda e, n=64, d=64: moe.q8_stack(rng, e, n, d)[0]  # noqa: E731
    wg = tuning.current().moe_expert_wg
    assert moe.routed_ok(1, bf16(8), bf16(8)) and moe.routed_ok(1, bf16(wg), q8(wg, 64, 32))
    assert not moe.routed_ok(2, bf16(8), bf16(8))
    assert not moe.routed_ok(1, bf16(wg + 1), bf16(wg + 1))
    assert moe.routed_ok(1, q8(8), q8(8, 64, 32)) and not moe.routed_ok(1, q8(8), bf16(8))
    with staging(True):
        assert not moe.routed_ok(1, q8(8), q8(8, 64, 32))
    with tuning.override(moe_expert_wg=64):
        assert not moe.routed_ok(1, bf16(65), bf16(65))
    with tuning.override(moe_routed=False):  # the adapter's table keeps the route dispatch
        assert not moe.routed_ok(1, bf16(8), bf16(8)) and not moe.routed_ok(1, q8(8), q8(8, 64, 32))
    with pytest.raises(KernelError, match=r"moe.experts_gate_up_routed: E=257 experts are past what one expert"):
        moe.experts_gate_up_routed(rt.upload(rand(rng, 1, 64)), bf16(257), rt.upload(rand(rng, 1, 257)), 8, True)


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
