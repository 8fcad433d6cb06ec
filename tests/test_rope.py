"""rope and mrope against transformers' own rotary classes and apply functions, inv_freq and cos/sin at large
positions, and argument errors. rope and qk_norm_rope against numpy are registry cases (ops/rope.py cases)."""

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError
from omni_lab.ops import rope as R
from omni_lab.ops.rope import MAX_POS, NMSE_ROPE, rotation_error_bound
from omni_lab.ops.rope import random_positions as positions
from kernel_harness import NMSE_ELEMENTWISE, check_sentinels, nmse, padded_output, rand

assert NMSE_ROPE <= NMSE_ELEMENTWISE


def check_close(out, ref, x):
    assert nmse(out, ref) < NMSE_ROPE
    assert (np.abs(out - ref) <= rotation_error_bound(x)).all(), f"max err {np.abs(out - ref).max()}"


@pytest.mark.parametrize("head_dim,theta", [(128, 1e6), (128, 1e4), (64, 1e6), (16, 1e4), (72, 5e5), (6, 100.0)])
def test_inv_freq_is_transformers(head_dim, theta):
    from transformers import Qwen3Config
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTextConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerTextRotaryEmbedding

    ours = R.rope_inv_freq(head_dim, theta)
    dense = Qwen3RotaryEmbedding(Qwen3Config(head_dim=head_dim, rope_parameters={"rope_type": "default", "rope_theta": theta}))
    omni = Qwen3OmniMoeThinkerTextRotaryEmbedding(Qwen3OmniMoeTextConfig(
        head_dim=head_dim, rope_parameters={"rope_type": "default", "rope_theta": theta, "mrope_section": [1, 1, 1]}))
    assert ours.dtype == np.float32 and ours.shape == (head_dim // 2,)
    assert np.array_equal(ours, dense.inv_freq.numpy())
    assert np.array_equal(ours, omni.inv_freq.numpy())


@pytest.mark.parametrize("theta", [1e6, 1e4])
def test_cos_sin_at_large_positions(rt, theta):
    """x = (1, .., 1, 0, .., 0) makes the output (cos, sin): check them alone against torch's float32
    cos/sin and a correctly rounded one, at positions up to 40000 (angles up to 4e4 rad)."""
    d = 128
    inv = R.rope_inv_freq(d, theta)
    pos = np.concatenate([np.arange(0, MAX_POS + 1, 13), np.arange(MAX_POS - 64, MAX_POS + 1)]).astype(np.int32)
    x = np.zeros((len(pos), 1, d), np.float32)
    x[..., : d // 2] = 1
    out = R.rope(rt.upload(x), rt.upload(pos), rt.upload(inv)).numpy()[:, 0]
    cos, sin = out[:, : d // 2], out[:, d // 2:]
    angle = torch.from_numpy(pos).float()[:, None] * torch.from_numpy(inv)[None]  # as HF forms freqs
    assert np.abs(cos - angle.cos().numpy()).max() <= 2.5e-7
    assert np.abs(sin - angle.sin().numpy()).max() <= 2.5e-7
    exact = angle.double().numpy()
    assert np.abs(cos - np.cos(exact)).max() <= 1.5e-7
    assert np.abs(sin - np.sin(exact)).max() <= 1.5e-7


@pytest.mark.parametrize("t,hq,hk,d,theta", [(11, 4, 2, 128, 1e6), (6, 3, 1, 64, 1e4), (1, 2, 2, 128, 1e6)])
def test_rope_matches_transformers_qwen3(rt, rng, t, hq, hk, d, theta):
    """Our rope on q and k against Qwen3RotaryEmbedding + apply_rotary_pos_emb on the same inputs."""
    from transformers import Qwen3Config
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding, apply_rotary_pos_emb

    cfg = Qwen3Config(head_dim=d, rope_parameters={"rope_type": "default", "rope_theta": theta})
    rot = Qwen3RotaryEmbedding(cfg)
    q, k = rand(rng, t, hq, d), rand(rng, t, hk, d)
    pos = positions(rng, t)
    cos, sin = rot(torch.from_numpy(q), torch.from_numpy(pos).long()[None])  # [1, T, D]
    # HF's layout is [B, H, T, D]; ours [T, H, D].
    q_hf, k_hf = apply_rotary_pos_emb(torch.from_numpy(q).transpose(0, 1)[None], torch.from_numpy(k).transpose(0, 1)[None], cos, sin)
    q_hf, k_hf = q_hf[0].transpose(0, 1).numpy(), k_hf[0].transpose(0, 1).numpy()
    inv = rt.upload(rot.inv_freq.numpy())
    pos_t = rt.upload(pos)
    check_close(R.rope(rt.upload(q), pos_t, inv).numpy(), q_hf, q)
    check_close(R.rope(rt.upload(k), pos_t, inv).numpy(), k_hf, k)


def hf_mrope(rot, apply, q, k, pos3):
    """transformers' rotary class + apply function; q, k in our [T, H, D] layout, pos3 [3, T]."""
    cos, sin = rot(torch.from_numpy(q), torch.from_numpy(pos3).long()[:, None, :])  # [1, T, D]
    q_hf, k_hf = apply(torch.from_numpy(q).transpose(0, 1)[None], torch.from_numpy(k).transpose(0, 1)[None], cos, sin)
    return q_hf[0].transpose(0, 1).numpy(), k_hf[0].transpose(0, 1).numpy()


def streams(rng, t, kind):
    if kind == "text":  # text tokens: all three streams equal
        return np.repeat(positions(rng, t)[None], 3, axis=0)
    p = np.stack([positions(rng, t) for _ in range(3)])
    p[1:, : min(t, 2)] = rng.integers(0, 100, size=(2, min(t, 2)))  # streams really distinct
    return p.astype(np.int32)


MROPE_CASES = [
    (13, 4, 2, 128, [24, 20, 20], "text"),
    (13, 4, 2, 128, [24, 20, 20], "distinct"),
    (5, 2, 1, 16, [4, 2, 2], "distinct"),
    (1, 3, 3, 128, [24, 20, 20], "distinct"),
    (7, 2, 2, 64, [12, 10, 10], "distinct"),
    (4, 1, 1, 32, [24, 20, 20], "distinct"),  # sections wider than D/2: HF's slices just stop at D/2
    (6, 2, 1, 128, [16, 24, 24], "distinct"),
]


@pytest.mark.parametrize("t,hq,hk,d,sections,kind", MROPE_CASES)
def test_mrope_matches_transformers_qwen3_omni(rt, rng, t, hq, hk, d, sections, kind):
    """Interleaved MRoPE against Qwen3OmniMoeThinkerTextRotaryEmbedding + the thinker's apply function."""
    from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import Qwen3OmniMoeTextConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import (
        Qwen3OmniMoeThinkerTextRotaryEmbedding, apply_rotary_pos_emb)

    cfg = Qwen3OmniMoeTextConfig(head_dim=d, rope_parameters={
        "rope_type": "default", "rope_theta": 1e6, "mrope_section": sections, "interleaved": True})
    rot = Qwen3OmniMoeThinkerTextRotaryEmbedding(cfg)
    q, k = rand(rng, t, hq, d), rand(rng, t, hk, d)
    pos3 = streams(rng, t, kind)
    q_hf, k_hf = hf_mrope(rot, apply_rotary_pos_emb, q, k, pos3)
    inv = rt.upload(rot.inv_freq.numpy())
    pos_t = rt.upload(pos3)
    out = padded_output((t, hq, d))
    R.mrope(rt.upload(q), pos_t, inv, sections, out=out)
    check_close(out.numpy(), q_hf, q)
    check_sentinels(out)
    check_close(R.mrope(rt.upload(k), pos_t, inv, sections).numpy(), k_hf, k)
    check_close(out.numpy(), R.mrope_ref(q, pos3, rot.inv_freq.numpy(), sections), q)


def test_mrope_contiguous_matches_transformers_qwen2_vl(rt, rng):
    """interleaved=False is Qwen2-VL's sectioning (Qwen2VLRotaryEmbedding.recomposition_frequencies)."""
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding, apply_rotary_pos_emb

    t, h, d, sections = 9, 3, 128, [16, 24, 24]
    cfg = Qwen2VLTextConfig(hidden_size=h * d, num_attention_heads=h, rope_parameters={
        "rope_type": "default", "rope_theta": 1e6, "mrope_section": sections})
    rot = Qwen2VLRotaryEmbedding(cfg)
    q = rand(rng, t, h, d)
    pos3 = streams(rng, t, "distinct")
    q_hf, _ = hf_mrope(rot, apply_rotary_pos_emb, q, q, pos3)
    out = R.mrope(rt.upload(q), rt.upload(pos3), rt.upload(rot.inv_freq.numpy()), sections, interleaved=False)
    check_close(out.numpy(), q_hf, q)


@pytest.mark.parametrize("interleaved", [True, False])
def test_mrope_of_text_positions_is_rope(rt, rng, interleaved):
    t, h, d = 10, 3, 128
    x = rand(rng, t, h, d)
    pos = positions(rng, t)
    inv = rt.upload(R.rope_inv_freq(d, 1e6))
    a = R.rope(rt.upload(x), rt.upload(pos), inv).numpy()
    b = R.mrope(rt.upload(x), rt.upload(np.stack([pos] * 3)), inv, [24, 20, 20], interleaved=interleaved).numpy()
    assert np.array_equal(a, b)


def test_mrope_streams_layout():
    s = R.mrope_streams(64, [24, 20, 20])
    assert list(s[:9]) == [0, 1, 2, 0, 1, 2, 0, 1, 2] and list(s[57:]) == [0, 1, 2, 0, 0, 0, 0]
    assert np.bincount(s).tolist() == [24, 20, 20]
    assert np.bincount(R.mrope_streams(64, [16, 24, 24], interleaved=False)).tolist() == [16, 24, 24]


def test_shape_and_dtype_errors_name_the_kernel(rt):
    x = rt.upload(np.zeros((3, 2, 8), np.float32))
    inv = rt.upload(np.zeros(4, np.float32))
    pos = rt.upload(np.zeros(3, np.int32))
    with pytest.raises(KernelError, match=r"rope: positions must be i32, got f32"):
        R.rope(x, rt.upload(np.zeros(3, np.float32)), inv)
    with pytest.raises(KernelError, match=r"rope: positions must be \[T\] = \[3\].*positions=\(4,\) i32"):
        R.rope(x, rt.upload(np.zeros(4, np.int32)), inv)
    with pytest.raises(KernelError, match=r"rope: inv_freq must be \[D/2\] = \[4\]"):
        R.rope(x, pos, rt.upload(np.zeros(8, np.float32)))
    with pytest.raises(KernelError, match=r"rope: x must be \[T, H, D\] with D even"):
        R.rope(rt.upload(np.zeros((3, 2, 7), np.float32)), pos, inv)
    with pytest.raises(KernelError, match=r"rope: out must be \(3, 2, 8\) f32"):
        R.rope(x, pos, inv, out=rt.upload(np.zeros((3, 2, 4), np.float32)))
    whole = rt.upload(np.zeros(2 * 3 * 2 * 8, np.float32))
    with pytest.raises(KernelError, match=r"rope: out must be x itself \(in place\) or not overlap it"):
        R.rope(whole.view((3, 2, 8)), pos, inv, out=whole.view((3, 2, 8), offset=32))
    with pytest.raises(KernelError, match=r"mrope: positions3 must be \[3, T\]"):
        R.mrope(x, pos, inv, [2, 1, 1])
    with pytest.raises(KernelError, match=r"mrope: contiguous sections must sum to D/2 = 4"):
        R.mrope(x, rt.upload(np.zeros((3, 3), np.int32)), inv, [2, 1, 2], interleaved=False)
    with pytest.raises(KernelError, match=r"mrope: sections must be 3 non-negative ints"):
        R.mrope(x, rt.upload(np.zeros((3, 3), np.int32)), inv, [2, 2])
