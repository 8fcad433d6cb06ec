"""Qwen3-Omni's vocoder (code2wav): codec codes [16, T] in, a 24 kHz waveform out. This part holds its config,
its activation names and shapes, and the Transformers capture (transformers 5.24, `Qwen3OmniMoeCode2Wav`).

What the module computes (batch 1; H hidden, D decoder_dim, Q num_quantizers, T frames):

- embedding: `code_embedding(codes + q * codebook_size).mean(over q)`: [T, H]. The mean is no module; it is
  named `code2wav.code_embedding.mean` (the pre_transformer's inputs_embeds).
- pre_transformer: `num_hidden_layers` pre-norm layers, x += self_attn_layer_scale(attn(rms(x))), then
  x += mlp_layer_scale(mlp(rms(x))), and a final RMSNorm. Attention is causal within a sliding window:
  query t sees keys t - sliding_window + 1 .. t (w keys, itself included); rotate-half RoPE (not interleaved)
  at positions 0..T-1, no QK norm, no bias; SiLU-gated MLP.
- upsample: per ratio f, a transposed conv (kernel f, stride f: T -> T f) and a ConvNeXt block: depthwise
  causal conv (kernel 7), LayerNorm (eps 1e-6) and pwconv1 -> exact (erf) GELU -> pwconv2 over [T, H]
  (channels last), times gamma, plus the block's input.
- decoder: a causal conv H -> D (kernel 7), then per rate r a block: SnakeBeta, a transposed conv (kernel 2r,
  stride r) that halves the channels, and three residual units (SnakeBeta, causal conv kernel 7 with
  dilation 1, 3, 9, SnakeBeta, 1x1 conv, plus the unit's input); then SnakeBeta and a causal conv to one
  channel (`code2wav.decoder.{n+2}`, before the clamp), and the output clamped to [-1, 1] (`code2wav`).
- SnakeBeta: x + sin(x * exp(alpha))^2 / (exp(beta) + 1e-9), alpha and beta per channel.
- A causal conv pads (kernel - 1) * dilation zeros on the left and none on the right: the length is kept.
  A decoder transposed conv gives (L + 1) r samples and drops r at each end: L -> (L - 1) r, and output
  sample n reads inputs n // r and n // r + 1 (one step of look-ahead, which is why the tail is dropped).
  So T frames give T * samples_per_frame - samples_lost samples (1920 T - 555 for the released model).

How `chunked_decode(codes, chunk_size, left_context_size)` cuts (what streaming must reproduce): chunks
[start, end) of chunk_size frames (the last one shorter); each is decoded on its own together with
ctx = min(left_context_size, start) frames before it, and the first ctx * samples_per_frame samples are
dropped. A decode is samples_lost short at its end, so every chunk gives (end - start) * samples_per_frame -
samples_lost samples, and the concatenation skips samples_lost samples of the one-shot waveform at every
chunk end. Everything else is causal, so where ctx covers the receptive field a chunk's samples equal the
one-shot decode's [start * samples_per_frame, end * samples_per_frame - samples_lost).
Transformers decodes the whole context through every layer; ours decodes through the decoder blocks only
the steps a kept sample reads (Code2Wav.crops): the same samples, about half the decoder's work a chunk at
its defaults.

Activations: conv outputs [1, C, T] are captured as [C, T] (layout "CT"; capture's rule for a batch of one),
the transformer's and the ConvNeXt's channels-last [1, T, F] as [T, F] ("TF"), the waveform as [N] ("N").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..activations import Activation
from ..compare.audio import SAMPLE_RATE  # noqa: F401  (the rate a waveform is played at; the config has none)
from ..gpu import Tensor, runtime
from ..ops import conv, elementwise, embedding, norm, snake, transpose
from .component import Buffers, Component, ModelInputError, StepContext
from .config import ConfigError, DecoderConfig, Fields, omni_sub_dict
from .decoder import Decoder
from .layers import Rotary, linear
from .loaders import Keys, load_layers, progress_bar, upload_f32, upload_unquantized, upload_weight

PREFIX = "code2wav"
EMBEDDING_MEAN = f"{PREFIX}.code_embedding.mean"
DILATIONS = (1, 3, 9)   # of the residual units in each decoder block, fixed by the module
CONVNEXT_EXPANSION = 4  # pwconv1 is H -> 4H
CONVNEXT_EPS = 1e-6     # its LayerNorm's, fixed by the module


@dataclass(frozen=True)
class Code2WavConfig:
    """The vocoder's own fields (HF names) and its pre-transformer as a DecoderConfig: all layers
    sliding-window, no QK norm, and the code embedding (codebook_size x num_quantizers rows) as its
    vocabulary."""
    codebook_size: int
    num_quantizers: int
    upsampling_ratios: tuple[int, ...]
    upsample_rates: tuple[int, ...]
    decoder_dim: int
    transformer: DecoderConfig

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "Code2WavConfig":
        """From a full Qwen3-Omni config.json dict (its `code2wav_config`)."""
        c = omni_sub_dict(d, "code2wav_config", source)
        f = Fields(c, source, "code2wav_config.")
        n_layers, codebook, groups = f.int("num_hidden_layers"), f.int("codebook_size"), f.int("num_quantizers", hi=64)
        # ratios of at most 64, at most 8 stages: the released model's are (2, 2) and (8, 5, 4, 3)
        cfg = cls(codebook_size=codebook, num_quantizers=groups, upsampling_ratios=f.ints("upsampling_ratios", 1, 64),
                  upsample_rates=f.ints("upsample_rates", 1, 64), decoder_dim=f.int("decoder_dim"),
                  # Qwen3OmniMoeCode2WavConfig.layer_types is a property: every layer slides
                  transformer=DecoderConfig.from_dict(
                      c, source, where="code2wav_config.",
                      vocab_size=codebook * groups, layer_types=("sliding_attention",) * n_layers,
                      sliding_window=f.int("sliding_window")))
        if not 0 < len(cfg.upsample_rates) <= 8 or not 0 < len(cfg.upsampling_ratios) <= 8:
            raise ConfigError(f"{source}: code2wav_config.upsample_rates and upsampling_ratios need 1 to 8 entries")
        if cfg.decoder_dim >> len(cfg.upsample_rates) == 0:  # each decoder block halves the channels
            raise ConfigError(f"{source}: code2wav_config.decoder_dim {cfg.decoder_dim} is too small to halve "
                              f"{len(cfg.upsample_rates)} times")
        return cfg

    @property
    def hidden_size(self) -> int:
        return self.transformer.hidden_size

    @property
    def samples_per_frame(self) -> int:
        """Waveform samples per codec frame (the module's total_upsample): 1920 for the released model."""
        return math.prod(self.upsampling_ratios) * math.prod(self.upsample_rates)

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """Channels into decoder block 1.. and out of the last one: decoder_dim // 2**i (the module's rule)."""
        return tuple(self.decoder_dim // 2 ** i for i in range(len(self.upsample_rates) + 1))

    def waveform_samples(self, frames: int) -> int:
        """The one-shot waveform's length for `frames` frames (each decoder transposed conv maps L -> (L-1) r)."""
        n = frames * math.prod(self.upsampling_ratios)
        for r in self.upsample_rates:
            n = (n - 1) * r
        return n

    @property
    def samples_lost(self) -> int:
        """How many samples a decode is short of frames * samples_per_frame (the same for every frame count)."""
        return self.samples_per_frame - self.waveform_samples(1)


def code2wav_activations(cfg: Code2WavConfig, frames: int) -> list[Activation]:
    """Every compared activation of code2wav in execution order (parents after their children, as forward
    hooks fire), named by the live module path under Qwen3OmniMoeForConditionalGeneration."""
    if frames < 1:
        raise ValueError(f"code2wav needs at least one frame, got {frames}")
    h, t = cfg.hidden_size, frames
    out = [Activation(EMBEDDING_MEAN, (t, h))]
    for i in range(cfg.transformer.num_hidden_layers):
        layer = f"{PREFIX}.pre_transformer.layers.{i}"
        out += [Activation(f"{layer}.self_attn", (t, h)), Activation(f"{layer}.mlp", (t, h)), Activation(layer, (t, h))]
    out.append(Activation(f"{PREFIX}.pre_transformer.norm", (t, h)))
    for i, f in enumerate(cfg.upsampling_ratios):
        t *= f
        stage = f"{PREFIX}.upsample.{i}"
        out += [Activation(f"{stage}.0", (h, t), "CT"),
                Activation(f"{stage}.1.dwconv", (h, t), "CT"),
                Activation(f"{stage}.1.norm", (t, h)),       # channels last inside the block: [T, H]
                Activation(f"{stage}.1.pwconv1", (t, CONVNEXT_EXPANSION * h)),
                Activation(f"{stage}.1.act", (t, CONVNEXT_EXPANSION * h)),
                Activation(f"{stage}.1.pwconv2", (t, h)),
                Activation(f"{stage}.1", (h, t), "CT")]
    ch = cfg.decoder_channels
    out.append(Activation(f"{PREFIX}.decoder.0", (ch[0], t), "CT"))
    for b, r in enumerate(cfg.upsample_rates):
        block = f"{PREFIX}.decoder.{b + 1}"
        out.append(Activation(f"{block}.block.0", (ch[b], t), "CT"))
        t = (t - 1) * r
        out.append(Activation(f"{block}.block.1", (ch[b + 1], t), "CT"))
        for j in range(len(DILATIONS)):
            unit = f"{block}.block.{j + 2}"
            out += [Activation(f"{unit}.{part}", (ch[b + 1], t), "CT") for part in ("act1", "conv1", "act2", "conv2")]
            if j < len(DILATIONS) - 1:  # the last unit's output is the block's: named once, as the block
                out.append(Activation(unit, (ch[b + 1], t), "CT"))
        out.append(Activation(block, (ch[b + 1], t), "CT"))
    n = len(cfg.upsample_rates)
    out += [Activation(f"{PREFIX}.decoder.{n + 1}", (ch[-1], t), "CT"),
            Activation(f"{PREFIX}.decoder.{n + 2}", (1, t), "CT"),   # the waveform before the clamp
            Activation(PREFIX, (t,), "N", "waveform")]
    return out


def chunk_windows(frames: int, chunk_size: int, left_context: int) -> list[tuple[int, int, int]]:
    """chunked_decode's cut: (first frame decoded, start, end) per chunk; the decode's samples before
    start * samples_per_frame are dropped, what is left is that chunk's piece of the waveform."""
    if chunk_size < 1 or left_context < 0:
        raise ValueError(f"chunk_size must be >= 1 and left_context >= 0, got {chunk_size}, {left_context}")
    return [(start - min(left_context, start), start, min(start + chunk_size, frames))
            for start in range(0, frames, chunk_size)]


def _codes_tensor(model, codes):
    import torch

    codes = torch.as_tensor(np.asarray(codes), dtype=torch.int64)
    q = model.config.code2wav_config.num_quantizers
    if codes.ndim != 2 or codes.shape[0] != q:
        raise ValueError(f"codes must be [num_quantizers={q}, frames], got shape {tuple(codes.shape)}")
    return codes[None]  # [1, Q, T]


def hf_activations(model, names, codes) -> dict[str, np.ndarray]:
    """Run Transformers' `model.code2wav(codes[None])` (model: a loaded Qwen3OmniMoeForConditionalGeneration,
    codes int64 [Q, T]) under forward hooks and return name -> float32 array, in execution order, for `names`
    (default: all of code2wav_activations)."""
    from ..reference import capture

    c2w = model.code2wav
    batch = _codes_tensor(model, codes)
    if names is None:
        cfg = Code2WavConfig.from_dict(model.config.to_dict(), "model.config")
        names = [a.name for a in code2wav_activations(cfg, batch.shape[-1])]
    names = list(names)
    # Module paths relative to code2wav; "" is code2wav itself, whose output is the clamped waveform.
    modules = [n.removeprefix(PREFIX).removeprefix(".") for n in names if n != EMBEDDING_MEAN]
    got: dict[str, np.ndarray] = {}
    handles = []
    if EMBEDDING_MEAN in names:
        def grab_embeds(module, args, kwargs):
            got[EMBEDDING_MEAN] = kwargs["inputs_embeds"][0].detach().float().numpy().copy()  # [1, T, H] -> [T, H]
        handles.append(c2w.pre_transformer.register_forward_pre_hook(grab_embeds, with_kwargs=True))
    try:
        acts = capture(c2w, modules, {"codes": batch})
    finally:
        for handle in handles:
            handle.remove()
    for rel, a in acts.items():
        name = f"{PREFIX}.{rel}" if rel else PREFIX
        if not rel:  # [1, 1, N] -> capture's [1, N] -> [N]
            a = a.reshape(-1)
        got[name] = a
    return got


def hf_chunked_decode(model, codes, chunk_size: int, left_context: int) -> np.ndarray:
    """The float32 waveform [N] of Transformers' own `code2wav.chunked_decode` (see the module docstring)."""
    import torch

    with torch.no_grad():
        wav = model.code2wav.chunked_decode(_codes_tensor(model, codes), chunk_size=chunk_size,
                                            left_context_size=left_context)  # [1, 1, N]
    return wav.float().reshape(-1).numpy()


# -- on our kernels ----------------------------------------------------------------------------------

@dataclass
class Conv:
    """Qwen3OmniMoeCausalConvNet (`transposed` False) or CausalTransConvNet: weight in the checkpoint's
    16-bit storage, bias f32."""
    weight: Tensor
    bias: Tensor
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    transposed: bool = False

    def __call__(self, x: Tensor, out: Tensor, residual: Tensor | None = None) -> Tensor:
        if self.transposed:
            return conv.conv_transpose1d(x, self.weight, self.bias, stride=self.stride, out=out)
        return conv.conv1d(x, self.weight, self.bias, stride=self.stride, dilation=self.dilation, groups=self.groups,
                           residual=residual, out=out)

    def out_shape(self, x_shape: tuple[int, int]) -> tuple[int, int]:
        c_out = self.weight.shape[1] if self.transposed else self.weight.shape[0]
        k, t = self.weight.shape[2], x_shape[1]
        if self.transposed:
            return c_out, conv.transposed_length(t, k, self.stride)
        return c_out, conv.causal_padding(t, k, self.stride, self.dilation)[2]


@dataclass
class Snake:
    alpha: Tensor  # [C] log-scale, as stored
    beta: Tensor

    def __call__(self, x: Tensor, out: Tensor, start: int = 0) -> Tensor:
        return snake.snake_beta(x, self.alpha, self.beta, out=out, start=start)


@dataclass
class ConvNeXt:
    """Qwen3OmniMoeConvNeXtBlock: x + (gamma * pwconv2(gelu(pwconv1(norm(dwconv(x)^T)))))^T on [H, T]."""
    dwconv: Conv
    norm_weight: Tensor
    norm_bias: Tensor
    pwconv1: Tensor
    pwconv1_bias: Tensor
    pwconv2: Tensor
    pwconv2_bias: Tensor
    gamma: Tensor

    def __call__(self, x: Tensor, ctx: StepContext, name: str, out: Tensor) -> Tensor:
        s = ctx.s
        h, t = x.shape
        d = self.dwconv(x, ctx.out(f"{name}.dwconv", s.get((h, t), "dwconv")))
        d_t = transpose.transpose(d, s.get((t, h), "channels_last"))  # [H, T] -> [T, H]
        n = norm.layernorm(d_t, self.norm_weight, self.norm_bias, CONVNEXT_EPS, out=ctx.out(f"{name}.norm", s.get((t, h), "norm")))
        wide = (t, self.pwconv1.shape[0])
        p1 = linear(n, self.pwconv1, s.get(wide, "pwconv1"))
        p1 = elementwise.add(p1, self.pwconv1_bias, out=ctx.out(f"{name}.pwconv1", p1))
        a = elementwise.gelu(p1, out=ctx.out(f"{name}.act", s.get(wide, "act")))
        p2 = linear(a, self.pwconv2, s.get((t, h), "pwconv2"))
        p2 = elementwise.add(p2, self.pwconv2_bias, out=ctx.out(f"{name}.pwconv2", p2))
        g = elementwise.mul(p2, self.gamma, out=s.get((t, h), "gamma"))
        g_ct = transpose.transpose(g, s.get((h, t), "channels_first"))  # [T, H] -> [H, T]
        return elementwise.add(x, g_ct, out=out)


@dataclass
class ResidualUnit:
    """Qwen3OmniMoeCode2WavDecoderResidualUnit: x + conv2(act2(conv1(act1(x)))), conv1 dilated."""
    act1: Snake
    conv1: Conv
    act2: Snake
    conv2: Conv

    def __call__(self, x: Tensor, ctx: StepContext, name: str, out: Tensor) -> Tensor:
        s = ctx.s
        a = self.act1(x, ctx.out(f"{name}.act1", s.get(x.shape, "act")))
        c = self.conv1(a, ctx.out(f"{name}.conv1", s.get(x.shape, "conv")))
        a = self.act2(c, ctx.out(f"{name}.act2", s.get(x.shape, "act")))
        tap = ctx.taps.get(f"{name}.conv2")
        if tap is None:  # the residual add fused into the conv
            return self.conv2(a, out, residual=x)
        return elementwise.add(self.conv2(a, tap), x, out=out)  # conv2's own output is an activation


@dataclass
class DecoderBlock:
    """Qwen3OmniMoeCode2WavDecoderBlock: SnakeBeta, a transposed conv (upsampling, halving channels),
    then residual units of dilation 1, 3, 9."""
    act: Snake
    upsample: Conv
    units: list[ResidualUnit]

    def reach(self) -> int:
        """How many steps back, after the transposed conv, the block's last output reads."""
        return sum((u.conv1.weight.shape[2] - 1) * u.conv1.dilation + (u.conv2.weight.shape[2] - 1) * u.conv2.dilation
                   for u in self.units)

    def __call__(self, x: Tensor, ctx: StepContext, name: str, out: Tensor, crop: int = 0) -> Tensor:
        """crop: x's first columns skipped (Code2Wav.crops)."""
        s = ctx.s
        a = self.act(x, ctx.out(f"{name}.block.0", s.get((x.shape[0], x.shape[1] - crop), "act")), start=crop)
        shape = self.upsample.out_shape(a.shape)
        h = self.upsample(a, ctx.out(f"{name}.block.1", s.get(shape, "up")))
        for j, unit in enumerate(self.units):
            last = j + 1 == len(self.units)
            unit_name = f"{name}.block.{j + 2}"
            # the last unit's output is the block's, named once as the block (code2wav_activations)
            h = unit(h, ctx, unit_name, out if last else ctx.out(unit_name, s.get(shape, f"residual{j % 2}")))
        return h


class Code2WavTransformer(Decoder):
    """code2wav's pre_transformer: the decoder of models/decoder.py over the code embeddings, without QK
    norm, with LayerScale, every layer a sliding window, plain RoPE at positions 0..T-1; its output is the
    final norm (no LM head)."""
    prefix = f"{PREFIX}.pre_transformer"
    lm_head_name = None

    def __init__(self, cfg: DecoderConfig, ckpt, max_len: int, bar):
        self.cfg = cfg
        self.max_len = max_len
        self.lm_head = None
        load_layers(self, ckpt, Keys(self.prefix + "."), max_len, bar, qk_norm=False, layer_scale=True)
        self._init_decoder(ckpt)

    @classmethod
    def activation_specs(cls, cfg: DecoderConfig, t: int) -> list[Activation]:
        return [a for a in super().activation_specs(cfg, t) if not a.name.endswith(".embed_tokens") and a.name != cls.lm_head_name]

    def scratch_shapes(self, t: int, rows: int) -> dict:
        shapes = super().scratch_shapes(t, rows)
        del shapes["logits"], shapes["ids"]
        return {**shapes, "positions": ((t,), "i32")}

    def write_positions(self, s, start: int, t: int) -> None:
        runtime().write(s.positions, np.arange(start, start + t, dtype=np.int32))

    def rotary(self, s) -> Rotary:
        return Rotary(s.positions, self.inv_freq)


def as_codes(cfg: Code2WavConfig, codes) -> np.ndarray:
    """codes int [Q, T] (or [T, Q], as a user may save them) in the codebook range, as [Q, T] int64."""
    q, n = cfg.num_quantizers, cfg.codebook_size
    codes = np.asarray(codes)
    if not np.issubdtype(codes.dtype, np.integer):
        raise ModelInputError(f"codes must be integers, got {codes.dtype}")
    if codes.ndim == 2 and codes.shape[0] != q and codes.shape[1] == q:
        codes = codes.T  # [T, Q] -> [Q, T]
    if codes.ndim != 2 or codes.shape[0] != q:
        raise ModelInputError(f"codes must be [{q}, frames] or [frames, {q}] ({q} codebooks), got {codes.shape}")
    if codes.shape[1] == 0:
        raise ModelInputError("codes have zero frames")
    bad = (codes < 0) | (codes >= n)
    if bad.any():
        qi, ti = np.argwhere(bad)[0]
        raise ModelInputError(f"code {int(codes[qi, ti])} at codebook {qi}, frame {ti} is outside [0, {n})")
    return codes.astype(np.int64)


class Code2Wav(Component):
    """Qwen3OmniMoeCode2Wav on our kernels: codes [Q, T] -> the clamped waveform [N], one GPU step a
    forward. `max_len` bounds a forward's frames (the transformer's KV cache)."""
    prefix = PREFIX
    input_name = "codes"

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> Code2WavConfig:
        return Code2WavConfig.from_dict(d, source)

    @classmethod
    def activation_specs(cls, cfg: Code2WavConfig, t: int) -> list[Activation]:
        return code2wav_activations(cfg, t)

    def __init__(self, cfg: Code2WavConfig, ckpt, max_len: int = 2048, progress: bool = False):
        self.cfg = cfg
        self.max_len = max_len
        h, q = cfg.hidden_size, cfg.num_quantizers
        blocks = len(cfg.upsample_rates)
        bar = progress_bar(ckpt, cfg.transformer.num_hidden_layers + 3, progress, " (code2wav)")
        self.code_embedding = upload_unquantized(ckpt, f"{PREFIX}.code_embedding.weight", (cfg.codebook_size * q, h))
        self.code_offsets = np.arange(q, dtype=np.int64)[:, None] * cfg.codebook_size  # [Q, 1]
        bar.update()
        self.transformer = Code2WavTransformer(cfg.transformer, ckpt, max_len, bar)
        w = lambda name, shape: upload_weight(ckpt, f"{PREFIX}.{name}", shape)  # noqa: E731
        f32 = lambda name, n: upload_f32(ckpt, f"{PREFIX}.{name}", (n,))  # noqa: E731

        def conv_at(name, c_in, c_out, k, transposed=False, **kw):
            shape = (c_in, c_out, k) if transposed else (c_out, c_in // kw.get("groups", 1), k)
            weight = upload_unquantized(ckpt, f"{PREFIX}.{name}.conv.weight", shape)
            return Conv(weight, f32(f"{name}.conv.bias", c_out), transposed=transposed, **kw)

        def snake_at(name, c):
            return Snake(f32(f"{name}.alpha", c), f32(f"{name}.beta", c))

        self.upsample = []
        for i, f in enumerate(cfg.upsampling_ratios):
            b = f"upsample.{i}.1"
            self.upsample.append((conv_at(f"upsample.{i}.0", h, h, f, transposed=True, stride=f), ConvNeXt(
                conv_at(f"{b}.dwconv", h, h, 7, groups=h), f32(f"{b}.norm.weight", h), f32(f"{b}.norm.bias", h),
                w(f"{b}.pwconv1.weight", (CONVNEXT_EXPANSION * h, h)), f32(f"{b}.pwconv1.bias", CONVNEXT_EXPANSION * h),
                w(f"{b}.pwconv2.weight", (h, CONVNEXT_EXPANSION * h)), f32(f"{b}.pwconv2.bias", h), f32(f"{b}.gamma", h))))
        ch = cfg.decoder_channels
        self.decoder_in = conv_at("decoder.0", h, ch[0], 7)
        self.blocks = []
        for b, r in enumerate(cfg.upsample_rates):
            name = f"decoder.{b + 1}.block"
            units = [ResidualUnit(snake_at(f"{name}.{j + 2}.act1", ch[b + 1]),
                                  conv_at(f"{name}.{j + 2}.conv1", ch[b + 1], ch[b + 1], 7, dilation=dil),
                                  snake_at(f"{name}.{j + 2}.act2", ch[b + 1]),
                                  conv_at(f"{name}.{j + 2}.conv2", ch[b + 1], ch[b + 1], 1))
                     for j, dil in enumerate(DILATIONS)]
            self.blocks.append(DecoderBlock(snake_at(f"{name}.0", ch[b]),
                                            conv_at(f"{name}.1", ch[b], ch[b + 1], 2 * r, transposed=True, stride=r), units))
        self.decoder_act = snake_at(f"decoder.{blocks + 1}", ch[-1])
        self.decoder_out = conv_at(f"decoder.{blocks + 2}", ch[-1], 1, 7)
        bar.update()
        bar.close()
        self._init_component(ckpt)
        self._buffers: dict[int, Buffers] = {}

    def activations(self, t: int) -> list[Activation]:
        return code2wav_activations(self.cfg, t)

    def check_codes(self, codes) -> np.ndarray:
        codes = as_codes(self.cfg, codes)
        if codes.shape[1] > self.max_len:
            raise ModelInputError(f"{codes.shape[1]} frames exceed max_len {self.max_len} of this vocoder")
        return codes

    @classmethod
    def input_length(cls, cfg: Code2WavConfig, codes) -> int:
        return as_codes(cfg, codes).shape[1]

    def tap(self, codes, names) -> dict[str, np.ndarray]:
        """The named activations of one forward over codes (what the workbench compares)."""
        return self.forward(codes, taps=names)

    def first_reads(self, drop: int) -> list[int]:
        """The first step of each decoder block's input, and of the final SnakeBeta's, that the waveform's
        samples from `drop` on read, however far back through the stack: a causal conv reads (K - 1) d steps
        back, a decoder transposed conv's output n its inputs n // r and n // r + 1 (kernel 2r)."""
        need = max(0, drop - (self.decoder_out.weight.shape[2] - 1))
        needs = [need]
        for block in reversed(self.blocks):
            need = max(0, need - block.reach()) // block.upsample.stride
            needs.append(need)
        return needs[::-1]

    def crops(self, drop: int) -> tuple[list[int], int, int]:
        """Where a forward whose first `drop` samples the caller throws away (a chunk's left context) skips
        work: the columns each decoder block's SnakeBeta skips of its input (up to first_reads), those the
        final SnakeBeta skips, and the samples to drop from the cropped waveform. The kept samples are the
        uncropped decode's: a causal conv's first outputs after a crop read its zero padding, and no kept
        sample reads those. The pre-transformer (its attention reads the whole window back) and the upsample
        stages, a small part of the work, are not cropped."""
        needs = self.first_reads(drop)
        crops, offset = [], 0  # offset: the uncropped step at column 0 of the tensor in hand
        for block, need in zip(self.blocks, needs):
            crops.append(need - offset)
            offset = need * block.upsample.stride
        return crops, needs[-1] - offset, drop - needs[-1]

    def forward(self, codes, taps=(), drop: int = 0) -> dict[str, np.ndarray]:
        """The waveform (`code2wav`, [N] float32) of codes [Q, T], plus the tapped activations. `drop`: the
        waveform's first samples are not wanted (returned: [N - drop]), so the decoder skips what only
        they read (crops); no taps then. Without taps a forward of T frames is recorded once and replayed
        (plan key ("forward", T, drop)): streaming decodes chunk after chunk of one length."""
        codes = self.check_codes(codes)
        t = codes.shape[1]
        n = self.cfg.waveform_samples(t)
        if not 0 <= drop < n or (drop and taps):
            raise ModelInputError(f"drop must be in [0, {n}) (the waveform's samples) and 0 with taps, got {drop}")
        tr = self.transformer
        rt = runtime()
        s = tr.scratch(t, 1)
        bufs = self._buffers.setdefault(t, Buffers(PREFIX))
        ids = bufs.get((t, self.cfg.num_quantizers), "ids", "i32")
        rt.write(ids, np.ascontiguousarray((codes + self.code_offsets).T).astype(np.int32))  # [T, Q]
        tr.write_positions(s, 0, t)
        rt.write(tr.step_buf, np.zeros(4, np.uint32))
        if not taps:
            crops, final, keep = self.crops(drop)
            wave = bufs.get((1, n - (drop - keep)), "clamped")
            (value,) = self.plan(("forward", t, drop),
                                 lambda: self._encode(ids, s, StepContext(t, bufs, self.step_buf), crops, final), (wave,))
            return {PREFIX: value.reshape(-1)[keep:]}
        specs = self.check_taps(t, taps)
        tapped = {n: self.tap_buffers(specs[n]) for n in taps if n != PREFIX}
        with rt.step() as step:
            wave = self._encode(ids, s, StepContext(t, bufs, self.step_buf, tapped))
            reads = self.read_taps(step, tapped)
            reads[PREFIX] = step.read(wave)
        return self.collect_reads(specs, reads)

    def _encode(self, ids: Tensor, s_tr, ctx: StepContext, crops=None, final: int = 0) -> Tensor:
        """crops, final: Code2Wav.crops (none by default)."""
        cfg, tr, bufs, t = self.cfg, self.transformer, ctx.s, ctx.t
        h = embedding.embedding_mean(ids, self.code_embedding, out=ctx.out(EMBEDDING_MEAN, s_tr.h))  # [T, H]
        x = tr.layers_forward(h, StepContext(t, s_tr, tr.step_buf, ctx.taps))  # [T, H], the final norm's
        x = transpose.transpose(x, bufs.get((cfg.hidden_size, t), "channels_first"))  # [T, H] -> [H, T]
        for i, (up, block) in enumerate(self.upsample):
            name = f"{PREFIX}.upsample.{i}"
            y = up(x, ctx.out(f"{name}.0", bufs.get(up.out_shape(x.shape), "upsampled")))
            x = block(y, ctx, f"{name}.1", ctx.out(f"{name}.1", bufs.get(y.shape, "stage")))
        x = self.decoder_in(x, ctx.out(f"{PREFIX}.decoder.0", bufs.get(self.decoder_in.out_shape(x.shape), "block_in")))
        for b, (block, crop) in enumerate(zip(self.blocks, crops or [0] * len(self.blocks))):
            shape = block.upsample.out_shape((x.shape[0], x.shape[1] - crop))
            x = block(x, ctx, f"{PREFIX}.decoder.{b + 1}", ctx.out(f"{PREFIX}.decoder.{b + 1}", bufs.get(shape, "block_out")),
                      crop)
        n = len(self.blocks)
        x = self.decoder_act(x, ctx.out(f"{PREFIX}.decoder.{n + 1}", bufs.get((x.shape[0], x.shape[1] - final), "act")),
                             start=final)
        wave = self.decoder_out(x, ctx.out(f"{PREFIX}.decoder.{n + 2}", bufs.get(self.decoder_out.out_shape(x.shape), "wave")))
        return elementwise.clamp(wave, -1.0, 1.0, out=bufs.get(wave.shape, "clamped"))  # [1, N]

    # -- chunked and streaming ------------------------------------------------------------------
    def chunked_decode(self, codes, chunk_size: int = 300, left_context: int = 25) -> np.ndarray:
        """Transformers' `chunked_decode`: chunks of `chunk_size` frames, each decoded with up to
        `left_context` frames before it, whose samples are dropped (module docstring: the cut). Its
        defaults are Transformers'."""
        codes = self.check_codes(codes)
        return np.concatenate(list(self.stream(codes.T, chunk_size, left_context)))

    def stream(self, frames: Iterable, chunk_size: int = 300, left_context: int = 25) -> Iterator[np.ndarray]:
        """Yield waveform pieces as codec frames arrive: `frames` gives one frame ([Q] codes) or a block of
        frames ([n, Q]) at a time; a piece is decoded as soon as a chunk is complete, the rest at the end.
        The pieces concatenate to `chunked_decode` of all the frames, the same chunks cut the same way."""
        if chunk_size < 1 or left_context < 0:
            raise ModelInputError(f"chunk_size must be >= 1 and left_context >= 0, got {chunk_size}, {left_context}")
        if chunk_size + left_context > self.max_len:
            raise ModelInputError(f"chunk_size {chunk_size} + left_context {left_context} exceed max_len {self.max_len}")
        q, spf = self.cfg.num_quantizers, self.cfg.samples_per_frame
        held = np.zeros((0, q), np.int64)  # [n, Q]: the frames from `first` on
        first, start = 0, 0               # frame index of held[0]; first frame of the next chunk

        def piece(end: int) -> np.ndarray:
            ctx = min(left_context, start)
            window = held[start - ctx - first:end - first]  # [ctx + chunk, Q]
            return self.forward(window.T, drop=ctx * spf)[PREFIX]

        for block in frames:
            block = np.asarray(block).reshape(-1, q)
            held = np.concatenate([held, block])
            while first + len(held) >= start + chunk_size:
                yield piece(start + chunk_size)
                start += chunk_size
                keep = max(0, start - left_context - first)  # frames no later chunk reads
                held, first = held[keep:], first + keep
        if first + len(held) > start:
            yield piece(first + len(held))
