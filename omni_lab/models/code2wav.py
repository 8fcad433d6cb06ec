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

Activations: conv outputs [1, C, T] are captured as [C, T] (layout "CT"; capture's rule for a batch of one),
the transformer's and the ConvNeXt's channels-last [1, T, F] as [T, F] ("TF"), the waveform as [N] ("N").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..activations import Activation
from .config import ConfigError

PREFIX = "code2wav"
EMBEDDING_MEAN = f"{PREFIX}.code_embedding.mean"
DILATIONS = (1, 3, 9)   # of the residual units in each decoder block, fixed by the module
CONVNEXT_EXPANSION = 4  # pwconv1 is H -> 4H


@dataclass(frozen=True)
class Code2WavConfig:
    codebook_size: int
    num_quantizers: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    sliding_window: int
    rms_norm_eps: float
    rope_theta: float
    upsampling_ratios: tuple[int, ...]
    upsample_rates: tuple[int, ...]
    decoder_dim: int
    layer_scale_initial_scale: float = 0.01  # only the untrained value of LayerScale; checkpoints store the scales

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "Code2WavConfig":
        """From a full Qwen3-Omni config.json dict (its `code2wav_config`)."""
        if d.get("model_type") != "qwen3_omni_moe":
            raise ConfigError(f"{source}: model_type '{d.get('model_type')}' is not Qwen3-Omni ('qwen3_omni_moe')")
        c = d.get("code2wav_config")
        if not c:
            raise ConfigError(f"{source}: missing field code2wav_config")
        if c.get("attention_bias"):
            raise ConfigError(f"{source}: code2wav_config.attention_bias=true is not supported")
        if c.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: code2wav_config.hidden_act '{c.get('hidden_act')}' is not supported "
                              "(only silu)")
        rope = c.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default":
            raise ConfigError(f"{source}: code2wav_config rope_type '{rope.get('rope_type')}' is not supported "
                              "(only 'default')")
        try:
            heads = c["num_attention_heads"]
            cfg = cls(
                codebook_size=c["codebook_size"], num_quantizers=c["num_quantizers"], hidden_size=c["hidden_size"],
                num_hidden_layers=c["num_hidden_layers"], num_attention_heads=heads,
                num_key_value_heads=c["num_key_value_heads"],
                # the attention's rule: getattr(config, "head_dim", hidden_size // num_attention_heads)
                head_dim=c.get("head_dim") or c["hidden_size"] // heads,
                intermediate_size=c["intermediate_size"], sliding_window=c["sliding_window"],
                rms_norm_eps=c["rms_norm_eps"],
                # Transformers 5 writes rope_parameters; an older config.json has rope_theta (10000 if neither)
                rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
                upsampling_ratios=tuple(c["upsampling_ratios"]), upsample_rates=tuple(c["upsample_rates"]),
                decoder_dim=c["decoder_dim"], layer_scale_initial_scale=c.get("layer_scale_initial_scale", 0.01),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing field code2wav_config.{e.args[0]}") from None
        if not cfg.upsample_rates or not cfg.upsampling_ratios:
            raise ConfigError(f"{source}: code2wav_config.upsample_rates and upsampling_ratios must not be empty")
        return cfg

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
    for i in range(cfg.num_hidden_layers):
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


def hf_code2wav_activations(model, codes, names=None) -> dict[str, np.ndarray]:
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
