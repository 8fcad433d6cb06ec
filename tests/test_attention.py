"""kv_append writing only its rows, grouped-query attention against torch's SDPA and transformers'
eager_attention_forward with HF's own masks, prefill-then-decode against one prefill, a long-context decode,
and argument errors. The sweeps against numpy (single pass and split-K) are registry cases
(ops/attention.py cases)."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError, Tensor, tuning
from omni_lab.ops import attention as A
from omni_lab.ops.attention import NMSE_ATTN, filled_cache, sentinel_cache, start_step
from kernel_harness import NMSE_MATMUL, SENTINEL, check_sentinels, nmse, rand

assert NMSE_ATTN < NMSE_MATMUL


def test_kv_append_writes_only_its_rows(rt, rng):
    max_len, n_kv, d = 40, 2, 12
    ck, cv = sentinel_cache(max_len, n_kv, d)
    hk = np.full((max_len, n_kv, d), SENTINEL, np.float32)
    hv = hk.copy()
    step = start_step(0)
    for start, t in ((0, 7), (7, 1), (8, 1), (20, 3), (37, 3), (38, 5), (40, 2), (45, 1)):  # the last ones overflow
        rt.write(step, np.array([start, 0, 0, 0], np.uint32))
        k, v = rand(rng, t, n_kv, d), rand(rng, t, n_kv, d)
        A.kv_append(rt.upload(k), rt.upload(v), ck, cv, step)
        A.kv_append_ref(k, v, hk, hv, start)
        assert np.array_equal(ck.numpy(), hk) and np.array_equal(cv.numpy(), hv)
    assert (hk[9:20] == SENTINEL).all() and (hk[23:37] == SENTINEL).all()  # rows never written stay put
    check_sentinels(ck)
    check_sentinels(cv)


@pytest.mark.parametrize("window,max_len,single_max", [(0, 32, None), (6, 32, None), (0, 600, 1024), (7, 600, 0),
                                                       (0, 600, 0)])
def test_prefill_then_decode_equals_one_prefill(rt, rng, window, max_len, single_max):
    """Prefill 15 tokens, then decode 9 one at a time with the same step tensor: each decode output is the
    matching row of one prefill over all 24 tokens, and decode steps reuse one params buffer and one bind
    group per kernel. Decode takes the single pass (`decode`) up to attention_single_max_len rows and the
    split path above (single_max 0 forces it here: 19 slices of 32 keys); both prefills take `main`
    (flash=False; the flash kernel's own prefills are the op registry's)."""
    n, p, n_kv, group, d = 24, 15, 2, 4, 64
    changes = {} if single_max is None else {"attention_single_max_len": single_max}
    hq = n_kv * group
    q, k, v = rand(rng, n, hq, d), rand(rng, n, n_kv, d), rand(rng, n, n_kv, d)
    scale = d ** -0.5

    ck, cv = sentinel_cache(max_len, n_kv, d)
    step = start_step(0)
    A.kv_append(rt.upload(k), rt.upload(v), ck, cv, step)
    full = A.attention(rt.upload(q), ck, cv, step, scale, window, flash=False).numpy()
    hk = np.zeros((max_len, n_kv, d), np.float32)
    hv = hk.copy()
    A.kv_append_ref(k, v, hk, hv, 0)
    assert nmse(full, A.attention_ref(q, hk, hv, 0, scale, window)) < NMSE_ATTN

    ck, cv = sentinel_cache(max_len, n_kv, d)
    A.kv_append(rt.upload(k[:p]), rt.upload(v[:p]), ck, cv, step)
    pre = A.attention(rt.upload(q[:p]), ck, cv, step, scale, window, flash=False).numpy()
    assert np.array_equal(pre, full[:p])
    q1, k1, v1 = rt.empty((1, hq, d)), rt.empty((1, n_kv, d)), rt.empty((1, n_kv, d))
    out = rt.empty((1, hq, d))
    with tuning.override(**changes):
        split = A.decode_split(max_len)
        for i in range(p, n):
            rt.write(step, np.array([i, 0, 0, 0], np.uint32))
            rt.write(q1, q[i:i + 1])
            rt.write(k1, k[i:i + 1])
            rt.write(v1, v[i:i + 1])
            with rt.recording() as names, rt.step():
                A.kv_append(k1, v1, ck, cv, step)
                A.attention(q1, ck, cv, step, scale, window, out=out)
            assert nmse(out.numpy(), full[i:i + 1]) < NMSE_ATTN, f"decode step {i}"
            if i == p:
                entries = {name.split(".")[1] for name in names}
                assert entries == ({"kv_append", "split_partial", "split_combine"} if split else {"kv_append", "decode"})
                kernels = [kern for kern in rt._kernels.values() if kern.name in names]
                cached = [len(kern._bind_groups) for kern in kernels]
    assert split == (single_max == 0)
    assert [len(kern._bind_groups) for kern in kernels] == cached


def test_long_context_decode(rt, rng):
    """Decode at position 4999 of a 5000-row cache: 20 key chunks of online softmax in one pass (`decode`),
    or 40 slices merged, with scores spread widely (q scaled up) so the running max moves between chunks."""
    max_len, n_kv, group, d = 5000, 2, 4, 128
    k = rand(rng, max_len, n_kv, d)
    v = rand(rng, max_len, n_kv, d)
    ck, cv = A.kv_cache(max_len, n_kv, d)
    step = start_step(0)
    A.kv_append(rt.upload(k), rt.upload(v), ck, cv, step)
    q = rand(rng, 1, n_kv * group, d, scale=3.0)
    rt.write(step, np.array([max_len - 1, 0, 0, 0], np.uint32))
    for window in (0, 4096, 100):
        ref = A.attention_ref(q, k, v, max_len - 1, d ** -0.5, window)
        for split in (None, False):  # None: decode picks the split path (40 slices)
            out = A.attention(rt.upload(q), ck, cv, step, d ** -0.5, window, split=split).numpy()
            assert nmse(out, ref) < NMSE_ATTN


@pytest.mark.parametrize("subgroups", [True, False])
@pytest.mark.parametrize("split", [False, True])
def test_a_query_with_no_key_writes_zeros(rt, rng, split, subgroups):
    """A step past the end of the cache with a window shorter than the overflow: the query's keys all lie
    past max_len, so it has none (split: every slice empty, split_combine reads none) and writes 0."""
    max_len, n_kv, group, d = 40, 2, 4, 128
    ck, cv, _, _ = filled_cache(rng, max_len, n_kv, d, 0, max_len)
    out = rt.upload(np.full((1, n_kv * group, d), np.nan, np.float32))
    with tuning.override(subgroups=subgroups):
        A.attention(rt.upload(rand(rng, 1, n_kv * group, d)), ck, cv, start_step(50), d ** -0.5, window=4,
                    out=out, split=split)
    assert (out.numpy() == 0).all()


def hf_reference(q, k, v, start, scale, window, group):
    """transformers' eager_attention_forward (Qwen3) with the mask transformers' masking_utils builds, and
    torch's SDPA with the same mask. q [T, Hq, D] at positions start.., k, v [S, n_kv, D] -> [T, Hq, D]."""
    from types import SimpleNamespace

    from transformers.masking_utils import causal_mask_function, eager_mask, sdpa_mask, sliding_window_causal_mask_function
    from transformers.models.qwen3.modeling_qwen3 import eager_attention_forward

    t, s = q.shape[0], k.shape[0]
    fn = sliding_window_causal_mask_function(window) if window else causal_mask_function
    kw = dict(batch_size=1, q_length=t, kv_length=s, q_offset=start, mask_function=fn, allow_is_causal_skip=False)
    qt, kt, vt = (torch.from_numpy(a).transpose(0, 1)[None] for a in (q, k, v))  # [1, H, T or S, D]
    module = SimpleNamespace(num_key_value_groups=group, training=False)
    eager, _ = eager_attention_forward(module, qt, kt, vt, eager_mask(**kw), scaling=scale)  # [1, T, Hq, D]
    sdpa = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, attn_mask=sdpa_mask(**kw), scale=scale, enable_gqa=True)
    causal = None
    if not window and start == 0:
        causal = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale, enable_gqa=True)
        causal = causal[0].transpose(0, 1).numpy()
    return eager[0].numpy(), sdpa[0].transpose(0, 1).numpy(), causal


@pytest.mark.parametrize("t,n_kv,group,d,start,window", [
    (19, 2, 4, 128, 0, 0), (12, 4, 2, 64, 0, 5), (6, 1, 8, 128, 33, 0), (1, 2, 2, 64, 80, 0), (9, 2, 1, 16, 30, 12),
])
def test_attention_matches_transformers_and_sdpa(rt, rng, t, n_kv, group, d, start, window):
    s = start + t
    ck, cv, hk, hv = filled_cache(rng, s + 3, n_kv, d, start, t)
    q = rand(rng, t, n_kv * group, d)
    ours = A.attention(rt.upload(q), ck, cv, start_step(start), d ** -0.5, window).numpy()
    eager, sdpa, causal = hf_reference(q, hk[:s], hv[:s], start, d ** -0.5, window, group)
    assert nmse(ours, eager) < NMSE_ATTN
    assert nmse(ours, sdpa) < NMSE_ATTN
    if causal is not None:
        assert nmse(ours, causal) < NMSE_ATTN


def test_window_rule_is_transformers():
    """Our mask is masking_utils' causal + sliding_window_overlay mask, element for element."""
    from transformers.masking_utils import sdpa_mask, sliding_window_causal_mask_function

    for t, start, s, w in ((5, 0, 5, 1), (5, 0, 5, 3), (4, 9, 13, 4), (1, 30, 31, 8), (7, 2, 9, 20)):
        hf = sdpa_mask(batch_size=1, q_length=t, kv_length=s, q_offset=start,
                       mask_function=sliding_window_causal_mask_function(w), allow_is_causal_skip=False)
        assert np.array_equal(A.attention_mask(t, start, s, w), hf[0, 0].numpy())
    assert A.attention_mask(1, 10, 11, 3)[0].nonzero()[0].tolist() == [8, 9, 10]  # W keys, the query's own last


def test_shape_and_dtype_errors_name_the_kernel(rt):
    ck, cv = A.kv_cache(16, 2, 8)
    step = start_step(0)
    q = rt.upload(np.zeros((3, 4, 8), np.float32))
    with pytest.raises(KernelError, match=r"attention: Hq must be a multiple of n_kv = 2 \(q=\(3, 3, 8\) f32"):
        A.attention(rt.upload(np.zeros((3, 3, 8), np.float32)), ck, cv, step, 0.3)
    with pytest.raises(KernelError, match=r"attention: q must be \[T, Hq, 8\]"):
        A.attention(rt.upload(np.zeros((3, 4, 12), np.float32)), ck, cv, step, 0.3)
    with pytest.raises(KernelError, match=r"attention: q must be f32, got i32"):
        A.attention(rt.upload(np.zeros((3, 4, 8), np.int32)), ck, cv, step, 0.3)
    with pytest.raises(KernelError, match=r"attention: step must be u32, got i32"):
        A.attention(q, ck, cv, rt.upload(np.zeros(4, np.int32)), 0.3)
    with pytest.raises(KernelError, match=r"attention: step must be \[4\] u32"):
        A.attention(q, ck, cv, rt.upload(np.zeros(2, np.uint32)), 0.3)
    with pytest.raises(KernelError, match=r"attention: cache_k and cache_v must both be"):
        A.attention(q, ck, A.kv_cache(16, 1, 8)[1], step, 0.3)
    with pytest.raises(KernelError, match=r"attention: head dim D must be a multiple of 4"):
        A.attention(rt.upload(np.zeros((3, 4, 6), np.float32)), *A.kv_cache(16, 2, 6), step, 0.3)
    with pytest.raises(KernelError, match=r"attention: out must be \(3, 4, 8\) f32"):
        A.attention(q, ck, cv, step, 0.3, out=rt.upload(np.zeros((3, 4, 8), np.int32)))
    with pytest.raises(KernelError, match=r"attention: window must be >= 0"):
        A.attention(q, ck, cv, step, 0.3, window=-1)
    with pytest.raises(KernelError, match=r"kv_append: k_new and v_new must both be \[T, 2, 8\]"):
        A.kv_append(rt.upload(np.zeros((3, 2, 8), np.float32)), rt.upload(np.zeros((2, 2, 8), np.float32)), ck, cv, step)
    with pytest.raises(KernelError, match=r"kv_append: T must be in 1 .. max_len = 16"):
        A.kv_append(rt.upload(np.zeros((17, 2, 8), np.float32)), rt.upload(np.zeros((17, 2, 8), np.float32)), ck, cv, step)
    big = Tensor(ck.buffer, (rt.gpu.max_binding // 32 + 1, 2, 4), "f32")  # a shape past the binding limit
    with pytest.raises(KernelError, match=r"attention: a cache of .* exceeds the adapter's"):
        A.attention(rt.upload(np.zeros((1, 2, 4), np.float32)), big, big, step, 0.3)


def test_norm_rope_errors_name_the_kernel(rt):
    """attention_norm_rope runs one decode token over a single-pass cache; its Q8_0 output needs whole blocks."""
    with tuning.override(attention_norm_rope=True):  # off in the H200's table (and so on lavapipe)
        ck, cv = A.kv_cache(16, 2, 16)
        step = start_step(3)
        z = lambda *shape, dtype=np.float32: rt.upload(np.zeros(shape, dtype))  # noqa: E731
        w, pos, inv = z(16), z(1, dtype=np.int32), z(8)
        with pytest.raises(KernelError, match=r"attention_norm_rope: runs only at decode \(T = 1\)"):
            A.attention_norm_rope(z(2, 4, 16), z(2, 2, 16), z(2, 2, 16), w, w, 1e-6, z(2, dtype=np.int32), inv, None, ck, cv,
                                  step, 0.25)
        for off in (dict(attention_single_max_len=0, attention_split_steps=((16, 8),)),  # the split path's cache
                    dict(attention_decode_wg=32), dict(attention_norm_rope=False)):
            with tuning.override(**off), pytest.raises(KernelError, match=r"attention_norm_rope: runs only at decode"):
                A.attention_norm_rope(z(1, 4, 16), z(1, 2, 16), z(1, 2, 16), w, w, 1e-6, pos, inv, None, ck, cv, step, 0.25)
        with pytest.raises(KernelError, match=r"attention_norm_rope: positions must be \[T\] i32"):
            A.attention_norm_rope(z(1, 4, 16), z(1, 2, 16), z(1, 2, 16), w, w, 1e-6, pos, inv, (2, 2, 2), ck, cv, step, 0.25)
        with pytest.raises(KernelError, match=r"attention_norm_rope: k_new and v_new must both be \[T, 2, 16\]"):
            A.attention_norm_rope(z(1, 4, 16), z(1, 2, 16), z(1, 1, 16), w, w, 1e-6, pos, inv, None, ck, cv, step, 0.25)
        with pytest.raises(KernelError, match=r"attention_norm_rope: Q8_0 output needs D a multiple of 32"):
            A.attention_norm_rope(z(1, 4, 16), z(1, 2, 16), z(1, 2, 16), w, w, 1e-6, pos, inv, None, ck, cv, step, 0.25,
                                  quantized=(z(16, dtype=np.uint32), z(2)))
        ck, cv = A.kv_cache(16, 2, 32)
        w, inv = z(32), z(16)
        with pytest.raises(KernelError, match=r"attention_norm_rope: xq and xd must hold 32 u32 and 4 f32"):
            A.attention_norm_rope(z(1, 4, 32), z(1, 2, 32), z(1, 2, 32), w, w, 1e-6, pos, inv, None, ck, cv, step, 0.25,
                                  quantized=(z(16, dtype=np.uint32), z(4)))
