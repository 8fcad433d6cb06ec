"""MoE ops: route against transformers' router and on ties, group_pairs' tiles against numpy's grouping,
expert ids naming no expert, and argument errors. route, experts_gate_up and experts_down (per pair and
grouped by expert) against numpy over sweeps with ragged shapes, Q8_0 weights and split bindings are
registry cases (ops/moe.py cases)."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError
from omni_lab.ops import moe, tiles
from omni_lab.ops.moe import expert_ids, grouping
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
