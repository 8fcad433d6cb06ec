"""argmax and topk: argmax on ties exact against torch and our rule (lower index first), NaN, inf and -0,
the wide-row path's order, results used on the GPU without readback, and argument errors. The sweeps
(exact against numpy, without ties and with them, vocabulary-sized rows, MoE-shaped batches) are registry
cases (ops/select.py cases)."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError, tuning
from omni_lab.ops import embedding, select
from omni_lab.ops.select import distinct_rows as distinct
from omni_lab.ops.select import tied_rows as tied


@pytest.mark.parametrize("rows,cols", [(4, 3), (9, 33), (40, 257), (3, 4099), (1, 152_064)])
def test_argmax_ties_take_the_first(rt, rng, rows, cols):
    x = tied(rng, rows, cols)
    x[0, :] = 0.0
    x[0, cols // 2] = -0.0  # -0 == +0: still the first
    got = select.argmax(rt.upload(x)).numpy()
    assert np.array_equal(got, select.argmax_ref(x))
    assert np.array_equal(got, torch.argmax(torch.from_numpy(x), dim=-1).numpy())  # torch documents first-index


def test_argmax_nan_and_inf(rt):
    x = np.array([[1.0, np.nan, 3.0, np.nan], [-np.inf, -np.inf, -np.inf, -np.inf], [1.0, np.inf, 2.0, np.inf]], np.float32)
    for cols in (4, 20_000):  # one workgroup a row, and the split over many (rows wider than the tuning's split)
        wide = np.pad(x, ((0, 0), (0, cols - 4)), constant_values=-np.inf)
        top = rt.empty((3,), "f32")
        got = select.argmax(rt.upload(wide), top=top).numpy()
        assert np.array_equal(got, [1, 0, 1])
        assert np.array_equal(got, torch.argmax(torch.from_numpy(wide), dim=-1).numpy())
        # the top value says what the row held at its top: what a greedy decode reads to see non-finite logits
        assert np.array_equal(top.numpy(), [np.nan, -np.inf, np.inf], equal_nan=True)


def test_topk_nan_inf_and_signed_zero(rt):
    x = np.array([[0.0, -0.0, np.nan, -np.inf, np.inf, 1.0, -0.0, np.nan, -1.0]], np.float32)
    v, i = select.topk(rt.upload(x), 9)
    want_v, want_i = select.topk_ref(x, 9)
    assert np.array_equal(i.numpy(), want_i)
    assert np.array_equal(i.numpy()[0, :4], [2, 7, 4, 5])  # NaN above +inf, as torch.topk ranks it
    np.testing.assert_array_equal(v.numpy(), want_v)  # NaN positions compare equal here
    assert np.isnan(v.numpy()[0, :2]).all()


def test_results_stay_on_the_gpu(rt, rng):
    """Greedy decoding's shape: argmax and topk feed the embedding lookup inside one step, no readback."""
    vocab, d = 1000, 16
    table = rng.standard_normal((vocab, d)).astype(np.float32)
    logits = distinct(rng, 4, vocab)
    t_table, t_logits = rt.upload(table), rt.upload(logits)
    with rt.step() as step:
        ids = select.argmax(t_logits)
        _, top = select.topk(t_logits, 3)
        emb = embedding.embedding(ids, t_table)
        emb_top = embedding.embedding(top.view((12,)), t_table)
        got, got_top = step.read(emb), step.read(emb_top)
    assert np.array_equal(got.value, table[logits.argmax(-1)])
    assert np.array_equal(got_top.value, table[np.argsort(-logits, axis=-1)[:, :3].reshape(-1)])


def test_errors_name_the_kernel(rt):
    x = rt.upload(np.zeros((4, 8), np.float32))
    with pytest.raises(KernelError, match=r"topk: k=9 must be in \[1, min\(C, 1024\)\] \(x=\(4, 8\) f32\)"):
        select.topk(x, 9)
    with pytest.raises(KernelError, match=r"topk: k=0 must be"):
        select.topk(x, 0)
    with pytest.raises(KernelError, match=r"topk: out_indices must be \(4, 2\) i32 \(out_indices=\(4, 2\) f32\)"):
        select.topk(x, 2, out_indices=rt.upload(np.zeros((4, 2), np.float32)))
    with pytest.raises(KernelError, match=r"argmax: x must be f32, got bf16"):
        select.argmax(rt.upload(np.zeros((4, 8), np.float32), "bf16"))
    with pytest.raises(KernelError, match=r"argmax: out must be \(4,\) i32 \(out=\(4,\) f32, x=\(4, 8\) f32\)"):
        select.argmax(x, out=rt.upload(np.zeros(4, np.float32)))


def test_wide_argmax_nan_inf_and_ties_like_the_narrow_path(rt, rng):
    """Rows wider than the tuning table's argmax_split_columns go through top-1: the same order as the
    one-workgroup kernel."""
    c = tuning.current().argmax_split_columns + 1001
    x = rng.standard_normal((3, c)).astype(np.float32)
    x[0, [5000, 9000]] = np.nan  # NaN ranks first, the first of them wins
    x[1, [7, c - 1]] = np.inf
    x[2, :] = 0.0
    x[2, [0, 100]] = -0.0  # -0 == +0: still the first
    got = select.argmax(rt.upload(x)).numpy()
    assert np.array_equal(got, [5000, 7, 0])
    assert np.array_equal(got, select.argmax_ref(x))
