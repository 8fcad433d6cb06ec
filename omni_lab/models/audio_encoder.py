"""Qwen3-Omni's audio encoder (AuT, transformers 5.24 `Qwen3OmniMoeAudioEncoder`) on our kernels: log-mel
features of one or more audios in, one row of thinker-width features per 80 ms out.

What the module computes (M mel bins, C downsample_hidden_size, D d_model, features of audio i: [M, L_i]):

- chunks: every audio is cut into chunks of 2 n_window frames (100: one second), its last one ragged, and
  all chunks of all audios are padded with zeros to the longest: [N, 1, M, Lmax]. Which chunks share a
  padded length matters: past a chunk's end the padding goes through the convolutions' bias and GELU, and
  the second and third convolution read one such frame at a ragged end; so the audios of one prompt are
  encoded together, as Transformers does.
- stem: three Conv2d (kernel 3, stride 2, padding 1), each followed by an exact GELU outside the module:
  [N, C, M/8, Lmax/8] (rounded up at each stride); then frames [N, T, C * M/8] (permute(0, 3, 1, 2)) and
  `conv_out` (no bias) to D.
- positions: sinusoids (SinusoidsPositionEmbedding: a fixed table, not a weight) restarting at 0 in every
  chunk, added to each chunk's frames; then only the valid frames of each chunk are kept (13 of a full
  chunk), in order: [T, D].
- layers: pre-LayerNorm (with bias) blocks of bidirectional attention inside windows (q/k/v/out
  projections with bias, heads of D / H, scale 1/sqrt(head dim)) and a GELU MLP (fc1, fc2 with bias). The
  windows are Transformers' `get_audio_cu_seqlens`: each audio's frames in windows of the longest chunk's
  frame count times n_window_infer / (2 n_window), its last window ragged; no window spans two audios.
- `ln_post`, `proj1`, GELU (`act`), `proj2` to output_dim (the thinker's hidden size).

Activations (named by the live module paths under Qwen3OmniMoeForConditionalGeneration, which forward
hooks see; the checkpoint stores the weights under `thinker.audio_tower.`): the convolutions before their
GELU as [N * C * F, T'] ("CT": chunk, channel, frequency by frame), the last one as the frames conv_out
reads ([N * T', C * F], "TF"), `conv_out` on all padded frames [N * T', D], the valid frames with their
positions (`...audio_tower.positional_embedding.sum`, no module: the first layer's input), then [T, F] per
module. Chunking and window cutting are done on the host (they are the input's layout, like token ids);
every computation is on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..activations import Activation
from ..formats import omni_names as names
from ..gpu import Tensor, runtime
from ..ops import attention as attn_ops
from ..ops import conv, elementwise, embedding, norm
from .component import Buffers, Component, ModelInputError, StepContext
from .config import ConfigError, Fields, sub_dict
from .layers import linear
from .loaders import Keys, progress_bar, upload_f32, upload_unquantized, upload_weight

PREFIX = "thinker.model.audio_tower"
POSITIONS = f"{PREFIX}.positional_embedding.sum"
OUTPUT = f"{PREFIX}.proj2"
STEM = ("conv2d1", "conv2d2", "conv2d3")
KERNEL, STRIDE, PAD = 3, 2, 1  # every stem conv, fixed by the module
LN_EPS = 1e-5                  # nn.LayerNorm's default, which the module keeps
FRAMES_PER_CHUNK_OUT = 13      # transformers' _get_feat_extract_output_lengths counts 13 per 100-frame chunk
MAX_TIMESCALE = 10000
# The largest value each config field is read with (Fields.int): far past any released model, small enough
# that a corrupt config is refused before anything is allocated from it.
AUDIO_LIMITS = dict(num_mel_bins=1024, encoder_layers=1024, encoder_attention_heads=1024, encoder_ffn_dim=1 << 18,
                    d_model=1 << 16, output_dim=1 << 16, downsample_hidden_size=1 << 14, n_window=1 << 12,
                    n_window_infer=1 << 16, max_source_positions=1 << 20)


@dataclass(frozen=True)
class AudioEncoderConfig:
    """`thinker_config.audio_config` (HF names)."""
    num_mel_bins: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    d_model: int
    output_dim: int
    downsample_hidden_size: int
    n_window: int
    n_window_infer: int
    max_source_positions: int

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "AudioEncoderConfig":
        if d.get("model_type") != "qwen3_omni_moe":
            raise ConfigError(f"{source}: model_type '{d.get('model_type')}' is not Qwen3-Omni ('qwen3_omni_moe')")
        a = sub_dict(d, "thinker_config.audio_config", source)
        where = "thinker_config.audio_config."
        f = Fields(a, source, where)
        cfg = cls(**{k: f.int(k, hi=hi) for k, hi in AUDIO_LIMITS.items()})
        if a.get("activation_function", "gelu") != "gelu":
            raise ConfigError(f"{source}: {where}activation_function '{a['activation_function']}' is not supported "
                              "(only gelu)")
        if cfg.n_window != 50:
            # Transformers counts each full chunk's frames as 13 (its _get_feat_extract_output_lengths), which
            # is the stem's output length only for 100-frame chunks; another n_window breaks its own model.
            raise ConfigError(f"{source}: {where}n_window must be 50 (Transformers' frame count assumes it), "
                              f"got {cfg.n_window}")
        if cfg.d_model % cfg.encoder_attention_heads or (cfg.d_model // cfg.encoder_attention_heads) % 4:
            raise ConfigError(f"{source}: {where}d_model / encoder_attention_heads must be a multiple of 4")
        if cfg.n_window_infer % cfg.chunk:
            # get_audio_cu_seqlens windows n_window_infer // (2 n_window) chunks: a remainder would be dropped
            raise f.error("n_window_infer", f"must be a multiple of 2 n_window ({cfg.chunk}), got {cfg.n_window_infer}")
        if cfg.d_model % 2 or cfg.d_model < 4:
            # the sinusoids are sin and cos halves of log-spaced timescales over d_model / 2 - 1 steps
            raise f.error("d_model", f"must be even and at least 4 (the position table's halves), got {cfg.d_model}")
        return cfg

    @property
    def chunk(self) -> int:
        """Mel frames per chunk (one second at the released 100 frames a second)."""
        return 2 * self.n_window

    @property
    def stem_bins(self) -> int:
        """Frequency rows after the stem: M halved three times, rounded up."""
        f = self.num_mel_bins
        for _ in STEM:
            f = conv.conv2d_length(f, KERNEL, STRIDE, PAD)
        return f


def output_length(frames: int, n_window: int = 50) -> int:
    """Encoder frames of an audio of `frames` mel frames (transformers' _get_feat_extract_output_lengths):
    the number of audio placeholder tokens the processor puts in the prompt for it."""
    chunk = 2 * n_window
    leave = frames % chunk
    f = (leave - 1) // 2 + 1
    return ((f - 1) // 2 + 1 - 1) // 2 + 1 + (frames // chunk) * FRAMES_PER_CHUNK_OUT


@dataclass(frozen=True)
class Layout:
    """Where the frames of a batch of audios go (transformers' chunk_and_pad_features, get_valid_indices and
    get_audio_cu_seqlens, on the host): N chunks padded to `padded` mel frames, `frames` stem frames each;
    the valid rows of the [N * frames, D] stem output and each one's position in its chunk; the windows."""
    lengths: tuple[int, ...]    # mel frames per audio
    chunk_lengths: tuple[int, ...]
    padded: int                 # Lmax
    frames: int                 # stem frames of a padded chunk
    valid: np.ndarray           # [T] int32 rows of the stem output kept
    positions: np.ndarray       # [T] int32 position of each kept row in its chunk
    cu_seqlens: np.ndarray      # [windows + 1] int64

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_lengths)

    @property
    def t(self) -> int:
        return len(self.valid)

    @property
    def per_audio(self) -> list[int]:
        return [output_length(n) for n in self.lengths]


def layout(cfg: AudioEncoderConfig, lengths) -> Layout:
    lengths = tuple(int(n) for n in lengths)
    if not lengths or min(lengths) < 1:
        raise ModelInputError(f"every audio needs at least one mel frame, got lengths {list(lengths)}")
    chunks = []
    for n in lengths:
        chunks += [cfg.chunk] * (n // cfg.chunk) + ([n % cfg.chunk] if n % cfg.chunk else [])
    padded = max(chunks)
    frames = padded
    for _ in STEM:
        frames = conv.conv2d_length(frames, KERNEL, STRIDE, PAD)
    per_chunk = [output_length(c) for c in chunks]  # valid frames of each chunk: a prefix of its rows
    valid = np.concatenate([i * frames + np.arange(k) for i, k in enumerate(per_chunk)]).astype(np.int32)
    positions = np.concatenate([np.arange(k) for k in per_chunk]).astype(np.int32)
    window = max(per_chunk) * (cfg.n_window_infer // cfg.chunk)
    cu = [0]
    for n in lengths:
        t = output_length(n)
        cu += [window] * (t // window) + ([t % window] if t % window else [])
    return Layout(lengths, tuple(chunks), padded, frames, valid, positions, np.cumsum(cu))


def sinusoids(length: int, channels: int) -> np.ndarray:
    """SinusoidsPositionEmbedding's table [length, channels]: sin then cos of t / 10000^(i / (C/2 - 1)),
    in float32 as torch computes it (float32 frequencies, float32 products)."""
    inc = np.log(MAX_TIMESCALE) / (channels // 2 - 1)
    inv = np.exp(np.float32(-inc) * np.arange(channels // 2, dtype=np.float32))
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def audio_encoder_activations(cfg: AudioEncoderConfig, lay: Layout) -> list[Activation]:
    n, c, d, f = lay.n_chunks, cfg.downsample_hidden_size, cfg.d_model, cfg.encoder_ffn_dim
    out, rows, w = [], cfg.num_mel_bins, lay.padded
    for i, name in enumerate(STEM):
        rows, w = conv.conv2d_length(rows, KERNEL, STRIDE, PAD), conv.conv2d_length(w, KERNEL, STRIDE, PAD)
        if i + 1 < len(STEM):
            out.append(Activation(f"{PREFIX}.{name}", (n * c * rows, w), "CT"))
        else:  # written as the frames conv_out reads
            out.append(Activation(f"{PREFIX}.{name}", (n * w, c * rows)))
    t = lay.t
    out += [Activation(f"{PREFIX}.conv_out", (n * lay.frames, d)), Activation(POSITIONS, (t, d))]
    for i in range(cfg.encoder_layers):
        layer = f"{PREFIX}.layers.{i}"
        out += [Activation(f"{layer}.self_attn_layer_norm", (t, d)), Activation(f"{layer}.self_attn", (t, d)),
                Activation(f"{layer}.final_layer_norm", (t, d)), Activation(f"{layer}.fc1", (t, f)),
                Activation(f"{layer}.fc2", (t, d)), Activation(layer, (t, d))]
    return out + [Activation(f"{PREFIX}.ln_post", (t, d)), Activation(f"{PREFIX}.proj1", (t, d)),
                  Activation(f"{PREFIX}.act", (t, d)), Activation(f"{PREFIX}.proj2", (t, cfg.output_dim))]


def as_features(cfg: AudioEncoderConfig, features) -> list[np.ndarray]:
    """One [M, L] float32 array per audio (a single [M, L] array is one audio)."""
    if isinstance(features, np.ndarray) and features.ndim == 2:
        features = [features]
    out = []
    for i, a in enumerate(features):
        a = np.asarray(a, np.float32)
        if a.ndim != 2 or a.shape[0] != cfg.num_mel_bins or a.shape[1] == 0:
            raise ModelInputError(f"audio {i}: features must be [{cfg.num_mel_bins} mel bins, frames > 0], got {a.shape}")
        if not np.isfinite(a).all():
            raise ModelInputError(f"audio {i}: features hold NaN or inf")
        out.append(a)
    if not out:
        raise ModelInputError("no audio features given")
    return out


# -- the HF side -------------------------------------------------------------------------------------

OWN_HOOKS = {f"{PREFIX}.{n}" for n in (*STEM, "conv_out")} | {POSITIONS}  # captured by tower_hooks


def hf_features(features):
    """Features [M, L] per audio as the thinker hands them to its tower: ([M, sum L], lengths)."""
    import torch

    feats = [np.asarray(a, np.float32) for a in ([features] if isinstance(features, np.ndarray) else features)]
    return torch.from_numpy(np.concatenate(feats, axis=1)), torch.tensor([a.shape[1] for a in feats])


def tower_hooks(tower, activation_names, got: dict) -> list:
    """Forward hooks on a transformers audio tower for the names of OWN_HOOKS among `activation_names`,
    filling `got` in our layouts; returns the handles. The stem's outputs are [N, C, F, T] (a batch of
    chunks) and conv_out's [N, T, D], which capture's batch-of-one rule does not take; the positions' sum is
    no module's output, but the first layer's input."""
    handles = []

    def keep(name, value):
        if name in got:
            raise RuntimeError(f"{name} ran twice in one forward (conv_chunksize split the chunks)")
        got[name] = value.detach().float().numpy().copy()

    for name in activation_names:
        if name not in OWN_HOOKS:
            continue
        if name == POSITIONS:
            handles.append(tower.layers[0].register_forward_pre_hook(lambda m, args, n=name: keep(n, args[0])))
            continue
        rel = name.removeprefix(PREFIX + ".")

        def hook(module, args, output, name=name, rel=rel):
            if rel == "conv_out":  # [N, T, D] -> [N * T, D]
                keep(name, output.reshape(-1, output.shape[-1]))
            elif rel == STEM[-1]:  # [N, C, F, T] -> [N * T, C * F]
                keep(name, output.permute(0, 3, 1, 2).reshape(-1, output.shape[1] * output.shape[2]))
            else:  # [N, C, F, T] -> [N * C * F, T]
                keep(name, output.reshape(-1, output.shape[-1]))
        handles.append(tower.get_submodule(rel).register_forward_hook(hook))
    return handles


def hf_activations(model, activation_names, features) -> dict[str, np.ndarray]:
    """Capture our activation names on a transformers Qwen3OmniMoeForConditionalGeneration's audio tower,
    run as the thinker runs it (get_audio_features: the audios' frames packed, with their lengths) on the
    same features ([M, L] per audio)."""
    from ..reference import capture

    tower = model.thinker.model.audio_tower
    flat, lengths = hf_features(features)
    got: dict[str, np.ndarray] = {}
    handles = tower_hooks(tower, activation_names, got)
    modules = [n.removeprefix(PREFIX + ".") for n in activation_names if n not in OWN_HOOKS]
    try:
        acts = capture(tower, modules, {"input_features": flat, "feature_lens": lengths})
    finally:
        for h in handles:
            h.remove()
    return {**got, **{f"{PREFIX}.{n}": a for n, a in acts.items()}}


# -- on our kernels ----------------------------------------------------------------------------------

@dataclass
class Linear:
    """nn.Linear with its bias (None: conv_out has none)."""
    weight: object
    bias: Tensor | None

    def __call__(self, x: Tensor, out: Tensor) -> Tensor:
        y = linear(x, self.weight, out)
        return y if self.bias is None else elementwise.add(y, self.bias, out=y)


@dataclass
class LayerNorm:
    weight: Tensor
    bias: Tensor
    eps: float = LN_EPS  # the vision encoder's are 1e-6

    def __call__(self, x: Tensor, out: Tensor) -> Tensor:
        return norm.layernorm(x, self.weight, self.bias, self.eps, out=out)


@dataclass
class EncoderLayer:
    """Qwen3OmniMoeAudioEncoderLayer: h += out_proj(attention in windows(ln1(h))); h += fc2(gelu(fc1(ln2(h))))."""
    self_attn_layer_norm: LayerNorm
    q_proj: Linear
    k_proj: Linear
    v_proj: Linear
    out_proj: Linear
    final_layer_norm: LayerNorm
    fc1: Linear
    fc2: Linear
    heads: int

    def __call__(self, h: Tensor, ctx: StepContext, name: str, bounds: Tensor, cache: tuple[Tensor, Tensor],
                 out: Tensor) -> Tensor:
        s, t = ctx.s, ctx.t
        d = h.shape[1]
        dh = d // self.heads
        x = self.self_attn_layer_norm(h, ctx.out(f"{name}.self_attn_layer_norm", s.get((t, d), "x")))
        q, k, v = (proj(x, s.get((t, d), slot)) for proj, slot in ((self.q_proj, "q"), (self.k_proj, "k"), (self.v_proj, "v")))
        heads = (t, self.heads, dh)  # [T, D] -> [T, H, Dh]
        attn_ops.kv_append(k.view(heads), v.view(heads), *cache, ctx.step_buf)
        a = attn_ops.attention_segments(q.view(heads), *cache, ctx.step_buf, bounds, dh ** -0.5,
                                        out=s.get(heads, "attn"))
        o = self.out_proj(a.view((t, d)), ctx.out(f"{name}.self_attn", s.get((t, d), "o")))
        h = elementwise.add(h, o, out=s.get((t, d), "h_mid"))
        x = self.final_layer_norm(h, ctx.out(f"{name}.final_layer_norm", s.get((t, d), "x")))
        f = self.fc1(x, ctx.out(f"{name}.fc1", s.get((t, self.fc1.weight.shape[0]), "fc1")))
        g = elementwise.gelu(f, out=s.get(f.shape, "gelu"))
        m = self.fc2(g, ctx.out(f"{name}.fc2", s.get((t, d), "o")))
        return elementwise.add(h, m, out=out)


class AudioEncoder(Component):
    """Qwen3OmniMoeAudioEncoder on our kernels: features of one or more audios -> [T, output_dim], one GPU
    step a forward. `max_len` bounds the encoder frames of a forward (its attention's key buffer)."""
    prefix = PREFIX
    input_name = "input_features"

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> AudioEncoderConfig:
        return AudioEncoderConfig.from_dict(d, source)

    @classmethod
    def activation_specs(cls, cfg: AudioEncoderConfig, t) -> list[Activation]:
        """For mel frame counts `t` (one int: one audio; a list: several)."""
        return audio_encoder_activations(cfg, layout(cfg, np.atleast_1d(t)))

    @classmethod
    def input_specs(cls, cfg: AudioEncoderConfig, features) -> list[Activation]:
        return cls.activation_specs(cfg, [a.shape[1] for a in as_features(cfg, features)])

    @classmethod
    def input_length(cls, cfg: AudioEncoderConfig, features) -> int:
        """Encoder frames (what max_len bounds)."""
        return layout(cfg, [a.shape[1] for a in as_features(cfg, features)]).t

    def __init__(self, cfg: AudioEncoderConfig, ckpt, max_len: int = 2048, progress: bool = False):
        self.cfg = cfg
        self.max_len = max_len
        keys = Keys(PREFIX + ".", names.layout_of(ckpt.names))
        d, c = cfg.d_model, cfg.downsample_hidden_size
        bar = progress_bar(ckpt, cfg.encoder_layers + 2, progress, " (audio encoder)")

        def lin(name, n, k, bias=True):
            return Linear(upload_weight(ckpt, keys(f"{name}.weight"), (n, k)),
                          upload_f32(ckpt, keys(f"{name}.bias"), (n,)) if bias else None)

        def ln(name):
            return LayerNorm(upload_f32(ckpt, keys(f"{name}.weight"), (d,)), upload_f32(ckpt, keys(f"{name}.bias"), (d,)))

        self.stem = [(upload_unquantized(ckpt, keys(f"{name}.weight"), (c, 1 if i == 0 else c, KERNEL, KERNEL)),
                      upload_f32(ckpt, keys(f"{name}.bias"), (c,))) for i, name in enumerate(STEM)]
        self.conv_out = lin("conv_out", d, c * cfg.stem_bins, bias=False)
        self.positional_embedding = runtime().upload(sinusoids(cfg.max_source_positions, d), "f32",
                                                     label=f"{PREFIX}.positional_embedding")
        bar.update()
        f = cfg.encoder_ffn_dim
        self.layers = []
        for i in range(cfg.encoder_layers):
            p = f"layers.{i}"
            self.layers.append(EncoderLayer(
                ln(f"{p}.self_attn_layer_norm"), *(lin(f"{p}.self_attn.{w}", d, d) for w in ("q_proj", "k_proj", "v_proj", "out_proj")),
                ln(f"{p}.final_layer_norm"), lin(f"{p}.fc1", f, d), lin(f"{p}.fc2", d, f), cfg.encoder_attention_heads))
            bar.update()
        self.ln_post = ln("ln_post")
        self.proj1 = lin("proj1", d, d)
        self.proj2 = lin("proj2", cfg.output_dim, d)
        bar.update()
        bar.close()
        self._init_component(ckpt)
        self._buffers: dict[tuple, Buffers] = {}

    def activations(self, t) -> list[Activation]:
        return self.activation_specs(self.cfg, t)

    def tap(self, features, names) -> dict[str, np.ndarray]:
        return self.forward(features, taps=names)

    def prepare(self, features) -> tuple[Layout, list[np.ndarray]]:
        feats = as_features(self.cfg, features)
        lay = layout(self.cfg, [a.shape[1] for a in feats])
        if lay.t > self.max_len:
            raise ModelInputError(f"{lay.t} encoder frames exceed max_len {self.max_len} of this audio encoder")
        if lay.frames > self.cfg.max_source_positions:
            raise ModelInputError(f"a chunk of {lay.frames} frames exceeds max_source_positions "
                                  f"{self.cfg.max_source_positions}")
        return lay, feats

    def forward(self, features, taps=()) -> dict[str, np.ndarray]:
        """The encoder's output (OUTPUT, `...audio_tower.proj2`, [T, output_dim]) for mel features ([M, L]
        per audio), plus the tapped activations."""
        lay, feats = self.prepare(features)
        specs = self.check_taps([a.shape[1] for a in feats], taps)
        rt = runtime()
        tapped = {n: self.tap_buffers(specs[n]) for n in taps if n != OUTPUT}
        with rt.step() as step:
            out = self.encode(lay, feats, tapped)
            reads = self.read_taps(step, tapped)
            reads[OUTPUT] = step.read(out)
        return self.collect_reads(specs, reads)

    def encode(self, lay: Layout, feats: list[np.ndarray], taps: dict | None = None) -> Tensor:
        """Write the inputs and record the forward into the open step; returns the output [T, output_dim],
        a buffer of this layout's that stays valid until the next forward of the same layout."""
        cfg, rt = self.cfg, runtime()
        key = (lay.lengths,)
        bufs = self._buffers.setdefault(key, Buffers(PREFIX))
        n, m, t, d = lay.n_chunks, cfg.num_mel_bins, lay.t, cfg.d_model
        padded = np.zeros((n, 1, m, lay.padded), np.float32)  # [N, 1, M, Lmax]: chunk_and_pad_features
        starts = np.cumsum((0,) + lay.chunk_lengths[:-1])
        flat = np.concatenate(feats, axis=1)
        for i, (a, c) in enumerate(zip(starts, lay.chunk_lengths)):
            padded[i, 0, :, :c] = flat[:, a:a + c]
        x = bufs.get(padded.shape, "features")
        rt.write(x, padded)
        valid, positions = bufs.get((t,), "valid", "i32"), bufs.get((t,), "positions", "i32")
        rt.write(valid, lay.valid)
        rt.write(positions, lay.positions)
        bounds = bufs.get((t, 2), "bounds", "u32")
        rt.write(bounds, attn_ops.segment_bounds(lay.cu_seqlens, t))
        rt.write(self.step_buf, np.zeros(4, np.uint32))  # the windows' keys from row 0
        ctx = StepContext(t, bufs, self.step_buf, taps or {})
        for i, (w, b) in enumerate(self.stem):
            last = i + 1 == len(self.stem)
            name = f"{PREFIX}.{STEM[i]}"
            c_out, h_out, w_out = w.shape[0], conv.conv2d_length(x.shape[2], KERNEL, STRIDE, PAD), \
                conv.conv2d_length(x.shape[3], KERNEL, STRIDE, PAD)
            shape = (n, w_out, c_out * h_out) if last else (n, c_out, h_out, w_out)
            tap = ctx.taps.get(name)
            y = conv.conv2d(x, w, b, stride=STRIDE, pad=PAD, frames=last,
                            out=tap.view(shape) if tap is not None else bufs.get(shape, f"stem{i}"))
            x = elementwise.gelu(y, out=bufs.get(shape, f"stem_gelu{i}"))
        rows = x.view((n * lay.frames, x.shape[2]))  # [N, T', C * F] -> [N * T', C * F]
        e = self.conv_out(rows, ctx.out(f"{PREFIX}.conv_out", bufs.get((n * lay.frames, d), "conv_out")))
        kept = embedding.embedding(valid, e, out=bufs.get((t, d), "kept"))  # the valid frames, in order
        pos = embedding.embedding(positions, self.positional_embedding, out=bufs.get((t, d), "pos"))
        h = elementwise.add(kept, pos, out=ctx.out(POSITIONS, bufs.get((t, d), "h0")))
        cache = (bufs.get((t, cfg.encoder_attention_heads, d // cfg.encoder_attention_heads), "keys"),
                 bufs.get((t, cfg.encoder_attention_heads, d // cfg.encoder_attention_heads), "values"))
        for i, layer in enumerate(self.layers):
            name = f"{PREFIX}.layers.{i}"
            h = layer(h, ctx, name, bounds, cache, ctx.out(name, bufs.get((t, d), f"h{(i + 1) % 2}")))
        x = self.ln_post(h, ctx.out(f"{PREFIX}.ln_post", bufs.get((t, d), "x")))
        p1 = self.proj1(x, ctx.out(f"{PREFIX}.proj1", bufs.get((t, d), "proj1")))
        a = elementwise.gelu(p1, out=ctx.out(f"{PREFIX}.act", bufs.get((t, d), "act")))
        return self.proj2(a, bufs.get((t, cfg.output_dim), "out"))  # OUTPUT: read by forward, never a tap
