"""code2wav's op families: causal Conv1d and ConvTranspose1d (ops/conv.py), SnakeBeta (ops/snake.py) and
the [T, C] <-> [C, T] transpose (ops/transpose.py). Every registry case of those modules against its
float64 numpy reference with sentinels around the output; Transformers' own Qwen3OmniMoeCausalConvNet,
CausalTransConvNet, SnakeBeta, ConvNeXt block and decoder block against our ops; the existing ops as
code2wav uses them (LayerNorm with bias, exact GELU, sliding-window attention); the split paths for
tensors past the binding limit; argument errors."""

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from omni_lab.gpu import KernelError, tuning
from omni_lab.ops import attention as A
from omni_lab.ops import conv, elementwise as ew, linear, norm, pieces, registry, snake
from omni_lab.ops import transpose as tr
from omni_lab.ops.linear import stored
from kernel_harness import nmse, rand

from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as hf

def check(family, op, bound, fn, **params):
    """One point of a registry sweep, run as the registry runs it (sentinels checked)."""
    result = registry.check(registry.Case(family, op, params, bound, fn), np.random.default_rng(0))
    assert result.error is None, result.error
    assert result.nmse <= bound, f"NMSE {result.nmse:.3g} over {bound:.3g}"


# -- padding and lengths: Transformers' arithmetic, and torch's own output lengths -----------------

def test_causal_padding_is_transformers(rt):
    """T_out = ceil(T / stride) wherever Transformers computes one; where its negative left padding (stride
    past the dilated kernel) would crop more than T, torch's F.pad fails and so does conv1d."""
    failing = 0
    for t in (1, 2, 5, 31, 64, 100):
        for k in (1, 3, 5, 7):
            for s in (1, 2, 3, 4, 5, 8):
                for d in (1, 3, 9):
                    m = hf.Qwen3OmniMoeCausalConvNet(1, 1, k, dilation=d, stride=s)
                    x = torch.zeros(1, 1, t)
                    left, right, t_out = conv.causal_padding(t, k, s, d)
                    assert (left, right) == (m.padding, m._get_extra_padding_for_conv1d(x))
                    if t + left < 0:
                        failing += 1
                        with pytest.raises(RuntimeError), torch.no_grad():
                            m(x)
                        with pytest.raises(KernelError, match="conv1d: T = .* is shorter than the .* samples HF's negative left padding crops"):
                            conv.conv1d(rt.upload(np.zeros((1, t), np.float32)), rt.upload(np.zeros((1, 1, k), np.float32)),
                                        stride=s, dilation=d)
                        continue
                    with torch.no_grad():
                        assert m(x).shape[-1] == t_out == -(-t // s)
    assert failing


def test_transposed_length_is_transformers():
    for t in (1, 2, 7, 40):
        for s in (1, 2, 3, 5, 8):
            for k in (s, s + 1, 2 * s, 3 * s):
                m = hf.Qwen3OmniMoeCausalTransConvNet(1, 1, k, s)
                with torch.no_grad():
                    assert m(torch.zeros(1, 1, t)).shape[-1] == max(0, conv.transposed_length(t, k, s))


# -- against Transformers' modules -------------------------------------------------------------------

def randomize(module: torch.nn.Module, rng, scale: float = 1.0) -> None:
    """Every parameter drawn at random (HF's inits leave SnakeBeta's alpha and beta at 0 and LayerScale's
    gamma at 1e-6, where those ops would not matter): weights scaled by 1/sqrt(fan-in), log-scale snake
    parameters away from 0 with both signs."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("alpha", "beta"):
                v = rng.uniform(0.3, 1.0, p.shape) * rng.choice([-1.0, 1.0], p.shape)
            elif p.dim() >= 2:
                v = rng.standard_normal(p.shape) / math.sqrt(np.prod(p.shape[1:])) * scale
            else:
                v = rng.standard_normal(p.shape) * 0.5
            p.copy_(torch.from_numpy(v.astype(np.float32)))


def up(rt, p, dtype="f32"):
    a = p.detach().numpy()
    return rt.upload(stored(a, dtype)[0], dtype) if dtype != "f32" else rt.upload(a)


def hf_run(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)[None])[0].numpy()


BOUND_TORCH = 1e-10  # f32 sums in a different order from torch's


@pytest.mark.parametrize("c_in,c_out,t,k,dilation,stride,groups", [
    (7, 5, 50, 7, 1, 1, 1), (6, 6, 91, 7, 3, 1, 1), (5, 5, 101, 7, 9, 1, 1), (16, 16, 37, 7, 1, 1, 16),
    (9, 4, 64, 3, 1, 2, 1), (8, 12, 77, 5, 1, 4, 4), (4, 3, 29, 1, 1, 5, 1), (3, 1, 33, 7, 1, 8, 1),
])
def test_causal_conv_matches_transformers(rt, rng, c_in, c_out, t, k, dilation, stride, groups):
    m = hf.Qwen3OmniMoeCausalConvNet(c_in, c_out, k, dilation=dilation, stride=stride, groups=groups)
    randomize(m, rng)
    x = rand(rng, c_in, t)
    want = hf_run(m, x)
    for tiled in (False, True) if groups == 1 else (False,):
        got = conv.conv1d(rt.upload(x), up(rt, m.conv.weight), up(rt, m.conv.bias), stride=stride, dilation=dilation,
                          groups=groups, tiled=tiled).numpy()
        assert got.shape == want.shape
        assert nmse(got, want) < BOUND_TORCH


def test_bf16_conv_matches_transformers_on_the_same_rounded_weights(rt, rng):
    """bf16 weights as the checkpoint stores them: torch in f32 on the bf16-rounded weights."""
    m = hf.Qwen3OmniMoeCausalConvNet(24, 20, 7, dilation=3)
    randomize(m, rng)
    with torch.no_grad():
        m.conv.weight.copy_(m.conv.weight.to(torch.bfloat16).float())
    x = rand(rng, 24, 150)
    got = conv.conv1d(rt.upload(x), up(rt, m.conv.weight, "bf16"), up(rt, m.conv.bias), dilation=3).numpy()
    assert nmse(got, hf_run(m, x)) < BOUND_TORCH


@pytest.mark.parametrize("c_in,c_out,t,k,stride", [(8, 8, 20, 2, 2), (12, 6, 17, 16, 8), (6, 3, 31, 10, 5),
                                                   (5, 4, 40, 8, 4), (4, 2, 33, 6, 3), (3, 5, 9, 7, 3)])
def test_causal_transconv_matches_transformers(rt, rng, c_in, c_out, t, k, stride):
    m = hf.Qwen3OmniMoeCausalTransConvNet(c_in, c_out, k, stride)
    randomize(m, rng)
    x = rand(rng, c_in, t)
    want = hf_run(m, x)
    for tiled in (False, True):
        got = conv.conv_transpose1d(rt.upload(x), up(rt, m.conv.weight), up(rt, m.conv.bias), stride=stride,
                                    tiled=tiled).numpy()
        assert got.shape == want.shape
        assert nmse(got, want) < BOUND_TORCH


@pytest.mark.parametrize("tile", conv.TILES)
@pytest.mark.parametrize("k,stride", [(16, 8), (10, 5), (8, 4), (6, 3), (2, 2), (7, 3)])
def test_transpose_tiled_every_phase(rt, rng, k, stride, tile):
    """conv_transpose1d_tiled (and its wide entry) computes each output phase r = (t + K - S) % S as its
    own GEMM over the taps k = r + m S < K: every phase of code2wav's transposes checked on its own (a wrong
    phase would be one S-th of the output's error), and K = 7, S = 3, whose phase 0 has three taps and the
    others two. Several q tiles of 64, a partial channel tile, C_in ceil(K / S) not a multiple of a step's
    kk."""
    c_in, c_out, t = 37, 70, 150
    x, w, b = rand(rng, c_in, t), rand(rng, c_in, c_out, k, scale=0.1), rand(rng, c_out)
    got = conv.conv_transpose1d(rt.upload(x), rt.upload(w), rt.upload(b), stride=stride, tiled=True, tile=tile).numpy()
    want = conv.conv_transpose1d_ref(x, w, b, stride=stride)
    assert got.shape == want.shape
    pad = k - stride
    for r in range(stride):
        first = (r - pad) % stride  # the first output of phase r
        assert nmse(got[:, first::stride], want[:, first::stride]) <= conv.BOUND, f"phase {r}"


def test_tile_rule(rt):
    """tile_for: wide tiles for more than 64 output channels where they number conv_wide_min_tiles, else
    64-tiles; and the tiled conv dispatches the entry it names."""
    with tuning.override(conv_wide_min_tiles=12):
        assert conv.tile_for(96, 1500) == conv.WIDE                   # 12 wide tiles
        assert conv.tile_for(96, 1400) == conv.TILE                   # 11
        assert conv.tile_for(200, 3 * 128, phases=2) == conv.WIDE     # 2 x 2 x 3
        assert conv.tile_for(64, 10**6) == conv.TILE                  # a wide tile would be half padding
    with tuning.override(conv_wide_min_tiles=0):
        assert conv.tile_for(65, 1) == conv.WIDE
        x = rt.upload(np.zeros((4, 30), np.float32))
        for c_out, entry in ((65, "conv.conv1d_tiled_wide"), (64, "conv.conv1d_tiled")):
            with rt.profile() as prof:
                conv.conv1d(x, rt.upload(np.zeros((c_out, 4, 3), np.float32)))
            assert [t.kernel.split("[")[0] for t in prof.timings] == [entry]
    with pytest.raises(KernelError, match=r"conv1d: tile must be one of \(64, 128\) or None, got 32"):
        conv.conv1d(rt.upload(np.zeros((4, 30), np.float32)), rt.upload(np.zeros((20, 4, 3), np.float32)), tile=32)


def test_wide_k_step_follows_the_limit(rt, monkeypatch):
    """32 kk a step where the adapter's workgroup storage holds the wide entries' two 16 KiB tiles, else 16."""
    with tuning.override(conv_wide_k_step=32):
        assert conv.wide_k_step() == (32 if rt.gpu.limits["max-compute-workgroup-storage-size"] >= 32768 else 16)
        monkeypatch.setitem(rt.gpu.limits, "max-compute-workgroup-storage-size", 16384)
        assert conv.wide_k_step() == 16
    with tuning.override(conv_wide_k_step=16):
        monkeypatch.setitem(rt.gpu.limits, "max-compute-workgroup-storage-size", 65536)
        assert conv.wide_k_step() == 16


@pytest.mark.parametrize("c,t,x_scale", [(5, 33, 1.0), (96, 200, 3.0), (16, 1001, 10.0)])
def test_snake_beta_matches_transformers(rt, rng, c, t, x_scale):
    m = hf.Qwen3OmniMoeSnakeBeta(c)
    randomize(m, rng)
    x = rand(rng, c, t, scale=x_scale)
    want = hf_run(m, x)
    got = snake.snake_beta(rt.upload(x), up(rt, m.alpha), up(rt, m.beta)).numpy()
    assert nmse(got, want) < 1e-12
    # both round x * exp(alpha) in f32, so they agree closely even where that product is large
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5 * float(np.abs(want).max()))


def test_snake_sin_squared_over_a_wide_range(rt):
    """alpha = beta = 0: y = x + sin(x)^2 in f32 (exp(0) = 1 exactly, 1 + 1e-9 rounds to 1), so what is
    left is sin^2's own error and the rounding of the sum: within ~1 ulp of y to |x| = 2000 (a GPU's
    own sin may be off by 2^-11 even on [-pi, pi])."""
    x = np.concatenate([np.linspace(-4.0, 4.0, 400_001), np.linspace(-2000.0, 2000.0, 400_001)]).astype(np.float32)
    zero = rt.upload(np.zeros(1, np.float32))
    got = snake.snake_beta(rt.upload(x[None]), zero, zero).numpy()[0].astype(np.float64)
    x64 = x.astype(np.float64)
    want = x64 + np.sin(x64) ** 2
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert (np.abs(got - want) <= 1.5 * ulp + 2e-7).all()


def test_snake_in_place(rt, rng):
    x, a, b = rand(rng, 9, 70), rand(rng, 9), rand(rng, 9)
    t = rt.upload(x)
    assert snake.snake_beta(t, rt.upload(a), rt.upload(b), out=t) is t
    assert nmse(t.numpy(), snake.snake_beta_ref(x, a, b)) <= snake.BOUND


def test_conv_residual_in_place(rt, rng):
    """out = residual: y += conv(x), the residual unit's last 1x1 conv writing into its input's copy."""
    x, w, b, r = rand(rng, 6, 40), rand(rng, 6, 6, 1), rand(rng, 6), rand(rng, 6, 40)
    tr_ = rt.upload(r)
    assert conv.conv1d(rt.upload(x), rt.upload(w), rt.upload(b), residual=tr_, out=tr_) is tr_
    assert nmse(tr_.numpy(), conv.conv1d_ref(x, w, b, residual=r)) <= conv.BOUND


def test_decoder_block_matches_transformers(rt, rng):
    """Qwen3OmniMoeCode2WavDecoderBlock (SnakeBeta, CausalTransConvNet, three residual units with dilations
    1, 3, 9) from our conv1d, conv_transpose1d and snake_beta, bf16 weights as the checkpoint stores them."""
    cfg = hf.Qwen3OmniMoeCode2WavConfig(decoder_dim=24, upsample_rates=(3,))
    block = hf.Qwen3OmniMoeCode2WavDecoderBlock(cfg, 0).eval()
    randomize(block, rng)
    with torch.no_grad():
        for p in block.parameters():
            if p.dim() == 3:
                p.copy_(p.to(torch.bfloat16).float())
    x = rand(rng, 24, 41)
    want = hf_run(block, x)

    mods = block.block
    h = snake.snake_beta(rt.upload(x), up(rt, mods[0].alpha), up(rt, mods[0].beta))
    tc = mods[1]
    h = conv.conv_transpose1d(h, up(rt, tc.conv.weight, "bf16"), up(rt, tc.conv.bias), stride=tc.conv.stride[0])
    for unit in mods[2:]:
        u = snake.snake_beta(h, up(rt, unit.act1.alpha), up(rt, unit.act1.beta))
        u = conv.conv1d(u, up(rt, unit.conv1.conv.weight, "bf16"), up(rt, unit.conv1.conv.bias), dilation=unit.conv1.dilation)
        snake.snake_beta(u, up(rt, unit.act2.alpha), up(rt, unit.act2.beta), out=u)
        h = conv.conv1d(u, up(rt, unit.conv2.conv.weight, "bf16"), up(rt, unit.conv2.conv.bias), residual=h)
    got = h.numpy()
    assert got.shape == want.shape == (12, 40 * 3)
    assert nmse(got, want) < BOUND_TORCH


def test_convnext_block_matches_transformers(rt, rng):
    """Qwen3OmniMoeConvNeXtBlock from existing ops plus ours: depthwise causal conv (conv1d, groups = C),
    transpose to [T, C], LayerNorm(eps 1e-6) with weight and bias (norm.layernorm), pwconv1 (matmul + row
    bias via add), exact GELU (elementwise.gelu, nn.GELU()'s erf form), pwconv2, gamma (mul by a row
    vector), transpose back and the residual add."""
    c, t = 48, 37
    m = hf.Qwen3OmniMoeConvNeXtBlock(c).eval()
    randomize(m, rng)
    assert isinstance(m.act, torch.nn.GELU) and m.act.approximate == "none"
    x = rand(rng, c, t)
    want = hf_run(m, x)

    assert nmse(our_convnext(rt, m, rt.upload(x)).numpy(), want) < BOUND_TORCH


def our_convnext(rt, m, xt):
    """Qwen3OmniMoeConvNeXtBlock on x [C, T] from our ops (see test_convnext_block_matches_transformers)."""
    c = xt.shape[0]
    h = conv.conv1d(xt, up(rt, m.dwconv.conv.weight), up(rt, m.dwconv.conv.bias), groups=c)  # [C, T]
    h = tr.transpose(h)                                                                        # [T, C]
    norm.layernorm(h, up(rt, m.norm.weight), up(rt, m.norm.bias), m.norm.eps, out=h)
    a = linear.matmul(h, up(rt, m.pwconv1.weight))                                             # [T, 4C]
    ew.add(a, up(rt, m.pwconv1.bias), out=a)
    ew.gelu(a, out=a)
    o = linear.matmul(a, up(rt, m.pwconv2.weight))                                             # [T, C]
    ew.add(o, up(rt, m.pwconv2.bias), out=o)
    ew.mul(o, up(rt, m.gamma), out=o)
    y = tr.transpose(o)                                                                        # [C, T]
    return ew.add(y, xt, out=y)


def test_code2wav_after_its_transformer_matches_transformers(rt, rng):
    """Everything of Qwen3OmniMoeCode2Wav.forward after pre_transformer, from our ops on a tiny config:
    permute to [C, T], the upsampling (CausalTransConvNet + ConvNeXt) stages, the decoder's first conv,
    its blocks (SnakeBeta, CausalTransConvNet, residual units), the last SnakeBeta, the conv to one
    channel and the clamp to [-1, 1].

    Random weights through this many layers amplify rounding (torch's own f32 run lands 1e-10 to 1e-7
    from its float64 run, by seed), so the truth here is HF's modules in float64, and we must be as close
    to it as torch's f32 is, within a factor."""
    cfg = hf.Qwen3OmniMoeCode2WavConfig(hidden_size=32, decoder_dim=40, upsample_rates=(5, 3), upsampling_ratios=(2, 2),
                                        num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=1,
                                        intermediate_size=48, codebook_size=16, num_quantizers=2)
    model = hf.Qwen3OmniMoeCode2Wav(cfg).eval()
    randomize(model, rng)
    hidden = rand(rng, 9, 32)  # [T, C] as pre_transformer leaves it

    def hf_wav(m, dtype):
        with torch.no_grad():
            wav = torch.from_numpy(hidden).to(dtype).T[None]
            for blocks in m.upsample:
                for block in blocks:
                    wav = block(wav)
            for block in m.decoder:
                wav = block(wav)
        return wav.clamp(min=-1, max=1)[0].numpy()

    want = hf_wav(copy.deepcopy(model).double(), torch.float64)
    torch_f32 = nmse(hf_wav(model, torch.float32), want)

    h = tr.transpose(rt.upload(hidden))  # [C, T]
    for tconv, convnext in model.upsample:
        h = conv.conv_transpose1d(h, up(rt, tconv.conv.weight), up(rt, tconv.conv.bias), stride=tconv.conv.stride[0])
        h = our_convnext(rt, convnext, h)

    def causal(m, x, **kw):
        return conv.conv1d(x, up(rt, m.conv.weight), up(rt, m.conv.bias), dilation=m.dilation, **kw)

    def act(m, x, **kw):
        return snake.snake_beta(x, up(rt, m.alpha), up(rt, m.beta), **kw)

    first, *blocks, last_act, last_conv = model.decoder
    h = causal(first, h)
    for block in blocks:
        h = act(block.block[0], h)
        tc = block.block[1]
        h = conv.conv_transpose1d(h, up(rt, tc.conv.weight), up(rt, tc.conv.bias), stride=tc.conv.stride[0])
        for unit in block.block[2:]:
            u = causal(unit.conv1, act(unit.act1, h))
            h = causal(unit.conv2, act(unit.act2, u, out=u), residual=h)
    wav = causal(last_conv, act(last_act, h))
    got = ew.clamp(wav, -1.0, 1.0, out=wav).numpy()
    assert got.shape == want.shape == (1, (9 * 4 - 1) * 5 * 3 - 3)
    assert 0.1 < np.mean(np.abs(want) == 1) < 0.9  # the clamp matters
    assert nmse(got, want) <= max(10 * torch_f32, BOUND_TORCH)


def test_layer_scale_both_layouts(rt, rng):
    """Qwen3OmniMoeCode2WavLayerScale (scale * x over the last dim) on [T, C], and the same per-channel scale
    on channels-first [C, T] with mul(axis=0)."""
    cfg = hf.Qwen3OmniMoeCode2WavConfig(hidden_size=40)
    m = hf.Qwen3OmniMoeCode2WavLayerScale(cfg)
    randomize(m, rng)
    x = rand(rng, 23, 40)
    want = hf_run(m, x)
    s = up(rt, m.scale)
    assert nmse(ew.mul(rt.upload(x), s).numpy(), want) < 1e-14
    assert nmse(ew.mul(rt.upload(np.ascontiguousarray(x.T)), s, axis=0).numpy(), want.T) < 1e-14


def test_sliding_window_attention_as_code2wav_masks_it(rt, rng):
    """Code2Wav's transformer masks every layer with create_sliding_window_causal_mask(config) at
    sliding_window = 72: attention(window=72) over a prefill of 150 positions, 16 heads of 64 as released
    (fewer here: 4), against HF's mask and eager attention."""
    from transformers.masking_utils import create_sliding_window_causal_mask

    cfg = hf.Qwen3OmniMoeCode2WavConfig(hidden_size=256, num_attention_heads=4, num_key_value_heads=4)
    cfg._attn_implementation = "eager"
    assert cfg.sliding_window == 72 and set(cfg.layer_types) == {"sliding_attention"}
    t, h, d = 150, 4, 64
    q, k, v = rand(rng, t, h, d), rand(rng, t, h, d), rand(rng, t, h, d)
    mask = create_sliding_window_causal_mask(config=cfg, inputs_embeds=torch.zeros(1, t, 256), attention_mask=None,
                                             cache=None, position_ids=torch.arange(t)[None])
    qt, kt, vt = (torch.from_numpy(a).transpose(0, 1)[None] for a in (q, k, v))
    module = SimpleNamespace(num_key_value_groups=1, training=False)
    want, _ = hf.eager_attention_forward(module, qt, kt, vt, mask, scaling=d ** -0.5)
    ck, cv = A.kv_cache(t, h, d)
    step = rt.upload(np.zeros(4, np.uint32))
    A.kv_append(rt.upload(k), rt.upload(v), ck, cv, step)
    got = A.attention(rt.upload(q), ck, cv, step, d ** -0.5, window=cfg.sliding_window).numpy()
    assert nmse(got, want[0].numpy()) < 1e-10


# -- tensors past the binding limit ------------------------------------------------------------------

@pytest.fixture
def small_binding(monkeypatch):
    """A 4 KiB binding limit: small tensors take the split paths (windows of a few channel rows, at
    unaligned row offsets, several input pieces accumulated into each output piece)."""
    monkeypatch.setattr(pieces, "binding_limit", lambda: 4096)


@pytest.mark.parametrize("c_in,c_out,t,k,stride,dilation,groups,dtype,tile", [
    (13, 11, 101, 7, 1, 3, 1, "bf16", None),    # 3 input and 4 output pieces of odd-length rows
    (20, 20, 77, 7, 1, 1, 20, "f32", None),     # depthwise
    (12, 9, 95, 3, 2, 1, 3, "f16", None),       # grouped, strided: output rows are half the input's
    (6, 40, 33, 5, 1, 9, 1, "f32", 64),
    (30, 21, 101, 7, 1, 3, 1, "bf16", 64),      # 4 input pieces into each of 5 output pieces
    (25, 19, 130, 1, 1, 1, 1, "f16", 64),       # 1x1: pieces of a few channels, kk = ci - ci0
    (14, 23, 90, 3, 2, 1, 1, "f32", 64),        # strided: pieces whose kk range starts mid-weight-row
    (30, 70, 101, 7, 1, 3, 1, "bf16", 128),     # wide tiles: a piece of a few rows of a tile
    (25, 66, 130, 1, 1, 1, 1, "f16", 128),
])
def test_conv1d_split(rt, small_binding, c_in, c_out, t, k, stride, dilation, groups, dtype, tile):
    check("conv", "conv1d", conv.BOUND, conv._conv1d_case, c_in=c_in, c_out=c_out, t=t, k=k, stride=stride,
          dilation=dilation, groups=groups, dtype=dtype, residual=True, tiled=tile is not None, tile=tile)


@pytest.mark.parametrize("c_in,c_out,t,k,stride,dtype,tile", [
    (11, 7, 60, 16, 8, "bf16", None), (9, 13, 150, 6, 3, "f32", None), (20, 17, 40, 10, 5, "bf16", 64),
    (11, 21, 60, 16, 8, "f16", 64),      # weight rows C_out K: a piece of one or two input channels
    (13, 19, 150, 7, 3, "f32", 64),      # a phase with fewer taps, over input pieces
    (17, 30, 100, 2, 2, "bf16", 64),     # the upsampling's K = S
    (20, 70, 40, 10, 5, "bf16", 128),    # wide tiles over input and output pieces
    (13, 66, 150, 7, 3, "f32", 128),
])
def test_conv_transpose1d_split(rt, small_binding, c_in, c_out, t, k, stride, dtype, tile):
    check("conv", "conv_transpose1d", conv.BOUND, conv._transpose_case, c_in=c_in, c_out=c_out, t=t, k=k,
          stride=stride, dtype=dtype, tiled=tile is not None, tile=tile)


def test_snake_and_transpose_split(rt, small_binding):
    check("snake", "snake_beta", snake.BOUND, snake._case, c=7, t=1001, x_scale=2.0, log_scale=1.0)
    # cropped: pieces of x cross rows and skip `start` columns at each; pieces shrink to leave room for them
    check("snake", "snake_beta", snake.BOUND, snake._case, c=9, t=301, x_scale=2.0, log_scale=1.0, start=97)
    check("snake", "snake_beta", snake.BOUND, snake._case, c=3, t=1001, x_scale=2.0, log_scale=1.0, start=600)
    check("transpose", "transpose", 0.0, tr._case, r=301, c=37)


def test_one_row_past_the_limit_is_an_error(rt, small_binding):
    x = rt.upload(np.zeros((2, 2000), np.float32))
    with pytest.raises(KernelError, match=r"conv1d: one row of x \(8000 B\) exceeds the 4096 B binding limit"):
        conv.conv1d(x, rt.upload(np.zeros((2, 2, 3), np.float32)))


@pytest.mark.slow
def test_past_the_real_binding_limit(rt, rng):
    """A [C, T] activation of 140 MB, past lavapipe's 128 MiB binding: the residual unit's conv (K 7,
    dilation 3, bias, residual) and SnakeBeta on it, in pieces of the real limit."""
    limit = rt.gpu.max_binding
    c, t = 6, limit // 24 + 4099
    x = rand(rng, c, t)
    assert x.nbytes > limit
    w, b, w1 = rand(rng, c, c, 7, scale=0.3), rand(rng, c), rand(rng, c, c, 1)
    xt = rt.upload(x)
    y = conv.conv1d(xt, rt.upload(w), rt.upload(b), dilation=3)
    want = conv.conv1d_ref(x, w, b, dilation=3)
    assert nmse(y.numpy(), want) <= conv.BOUND
    conv.conv1d(xt, rt.upload(w1), residual=y, out=y)  # y += 1x1 conv of x, piece by piece in place
    assert nmse(y.numpy(), conv.conv1d_ref(x, w1, residual=want)) <= conv.BOUND
    a, be = rand(rng, c), rand(rng, c)
    snake.snake_beta(xt, rt.upload(a), rt.upload(be), out=xt)
    assert nmse(xt.numpy(), snake.snake_beta_ref(x, a, be)) <= snake.BOUND


# -- argument errors ---------------------------------------------------------------------------------

def test_errors_name_the_kernel(rt):
    x = rt.upload(np.zeros((4, 10), np.float32))
    w = rt.upload(np.zeros((6, 4, 3), np.float32))
    with pytest.raises(KernelError, match=r"conv1d: x must be f32, got bf16"):
        conv.conv1d(rt.upload(np.zeros((4, 10), np.float32), "bf16"), w)
    with pytest.raises(KernelError, match=r"conv1d: weight must be f32 or f16 or bf16, got i32"):
        conv.conv1d(x, rt.upload(np.zeros((6, 4, 3), np.int32)))
    with pytest.raises(KernelError, match=r"conv1d: weight must be \[C_out, 2, K\] for C_in = 4, groups = 2 \(x=\(4, 10\) f32, weight=\(6, 4, 3\) f32\)"):
        conv.conv1d(x, w, groups=2)
    with pytest.raises(KernelError, match=r"conv1d: groups = 3 must divide C_in = 4 and C_out = 6"):
        conv.conv1d(x, w, groups=3)
    with pytest.raises(KernelError, match=r"conv1d: x must be \[C_in, T\] with C_in, T > 0 \(x=\(1, 4, 10\) f32\)"):
        conv.conv1d(x.view((1, 4, 10)), w)
    with pytest.raises(KernelError, match=r"conv1d: bias must be \[6\] \(C_out\) \(bias=\(4,\) f32\)"):
        conv.conv1d(x, w, rt.upload(np.zeros(4, np.float32)))
    with pytest.raises(KernelError, match=r"conv1d: out must be \(6, 5\) f32 \(out=\(6, 10\) f32"):
        conv.conv1d(x, w, stride=2, out=rt.upload(np.zeros((6, 10), np.float32)))
    with pytest.raises(KernelError, match=r"conv1d: residual must be \[6, 10\] \(the output's shape\)"):
        conv.conv1d(x, w, residual=rt.upload(np.zeros((6, 9), np.float32)))
    with pytest.raises(KernelError, match=r"conv1d: out must not share x's buffer"):
        conv.conv1d(x, rt.upload(np.zeros((4, 4, 3), np.float32)), out=x)
    with pytest.raises(KernelError, match=r"conv1d: stride and dilation must be >= 1, got 0, 1"):
        conv.conv1d(x, w, stride=0)
    with pytest.raises(KernelError, match=r"conv1d: the tiled kernel needs groups = 1"):
        conv.conv1d(x, rt.upload(np.zeros((6, 2, 3), np.float32)), groups=2, tiled=True)
    wt = rt.upload(np.zeros((4, 5, 4), np.float32))
    with pytest.raises(KernelError, match=r"conv_transpose1d: weight must be \[4 \(C_in\), C_out, K\] \(x=\(4, 10\) f32, weight=\(6, 4, 3\) f32\)"):
        conv.conv_transpose1d(x, w, stride=2)
    with pytest.raises(KernelError, match=r"conv_transpose1d: stride must be in 1 .. K = 4 \(HF trims K - stride from each end\), got 5"):
        conv.conv_transpose1d(x, wt, stride=5)
    with pytest.raises(KernelError, match=r"conv_transpose1d: out must be \(5, 18\) f32 \(out=\(5, 21\) f32"):
        conv.conv_transpose1d(x, wt, stride=2, out=rt.upload(np.zeros((5, 21), np.float32)))
    with pytest.raises(KernelError, match=r"snake_beta: alpha must be \[4\] \(x's channels\) \(x=\(4, 10\) f32, alpha=\(10,\) f32\)"):
        snake.snake_beta(x, rt.upload(np.zeros(10, np.float32)), rt.upload(np.zeros(4, np.float32)))
    with pytest.raises(KernelError, match=r"snake_beta: beta must be f32, got f16"):
        snake.snake_beta(x, rt.upload(np.zeros(4, np.float32)), rt.upload(np.zeros(4, np.float16)))
    with pytest.raises(KernelError, match=r"transpose: out must be \(10, 4\) f32 \(out=\(4, 10\) f32, x=\(4, 10\) f32\)"):
        tr.transpose(x, out=rt.upload(np.zeros((4, 10), np.float32)))
    with pytest.raises(KernelError, match=r"transpose: x must be \[R, C\]"):
        tr.transpose(x.view((40,)))


def test_transposed_conv_with_no_output(rt):
    """T_in = 1 with K = 2 stride (the decoder blocks): Transformers' trim leaves nothing, and so do we."""
    y = conv.conv_transpose1d(rt.upload(np.ones((3, 1), np.float32)), rt.upload(np.ones((3, 2, 8), np.float32)), stride=4)
    assert y.shape == (2, 0)
