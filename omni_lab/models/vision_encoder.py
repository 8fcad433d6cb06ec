"""Qwen3-Omni's vision encoder (transformers 5.24 `Qwen3OmniMoeVisionEncoder`) on our kernels: the flattened
patches the checkpoint's image processor makes, out one row of thinker-width features per 2x2 merged patch,
plus the DeepStack features of the intermediate layers the thinker adds into its first layers.

What the module computes (N patches of all images, K = C * T * P * P, D hidden, M = N / merge^2):

- patch_embed: a Conv3d whose kernel equals its stride over patches the processor already flattened in the
  kernel's (C, T, P, P) order, so it is a linear [D, K] with bias over pixel_values [N, K].
- position embeddings: the learned square table (num_position_embeddings rows) resampled bilinearly
  (align_corners) to each image's grid: four taps per patch, their table rows and weights from
  transformers' own get_vision_interpolation_indices_and_weights on the host (geometry of grid_thw, input
  metadata like token positions); the gathers and the weighted sum run on the GPU.
- blocks: pre-LayerNorm (eps 1e-6, with bias) bidirectional attention inside each image's frame (the
  cu_seqlens of get_vision_cu_seqlens), qkv one linear with bias split into q, k, v at load, 2-D rotary,
  proj; then an MLP linear_fc1, hidden_act, linear_fc2.
- 2-D rotary: the vision rotary's inv_freq has head_dim / 4 entries; pairs [0, dh/4) rotate by the patch's
  row, [dh/4, dh/2) by its column (recomposition_frequencies: cat(h freqs, w freqs)). That is our contiguous
  MRoPE with sections (0, dh/4, dh/4), the inv_freq table repeated twice, and positions (0, row, col).
- mergers: the patches come in merge-block order (the processor's layout), so merge^2 consecutive rows are
  one merged token: a view [N, D] -> [M, merge^2 D]. The final `merger` normalises per patch then views;
  the DeepStack mergers (`merger_list.j`, use_postshuffle_norm) view then normalise over merge^2 D. Then
  mlp.0, exact GELU (nn.GELU), mlp.2 to out_hidden_size.
- DeepStack: after block i in deepstack_visual_indexes, merger_list[indexes.index(i)] of its output; the
  features are listed in block order (which is the thinker layer each goes into).

Activations are named by the live module paths (`thinker.model.visual.blocks.0.attn`; weights are stored
under `thinker.visual.`), plus `thinker.model.visual.pos_embed.sum` (patch embedding plus interpolated
positions, the first block's input; no module outputs it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..activations import Activation
from ..formats import omni_names as names
from ..gpu import Tensor, runtime
from ..ops import attention as attn_ops
from ..ops import elementwise, embedding, rope
from .audio_encoder import LayerNorm, Linear
from .component import Buffers, Component, ModelInputError, StepContext
from .config import ConfigError, Fields, sub_dict
from .loaders import Keys, checked, progress_bar, upload_f32, upload_unquantized, upload_weight

PREFIX = "thinker.model.visual"
POSITIONS = f"{PREFIX}.pos_embed.sum"
OUTPUT = f"{PREFIX}.merger"
LN_EPS = 1e-6  # every LayerNorm of the module
TAPS = 4       # bilinear: the four table rows around each patch
ACTIVATIONS = {"gelu_pytorch_tanh": elementwise.gelu_tanh, "gelu": elementwise.gelu}
VISION_LIMITS = dict(depth=1024, hidden_size=1 << 16, intermediate_size=1 << 18, num_heads=1024, in_channels=16,
                     patch_size=1024, spatial_merge_size=16, temporal_patch_size=64, out_hidden_size=1 << 16,
                     num_position_embeddings=1 << 20)


@dataclass(frozen=True)
class VisionEncoderConfig:
    """`thinker_config.vision_config` (HF names)."""
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    in_channels: int
    patch_size: int
    spatial_merge_size: int
    temporal_patch_size: int
    out_hidden_size: int
    num_position_embeddings: int
    deepstack_visual_indexes: tuple[int, ...]
    hidden_act: str
    rope_theta: float

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "VisionEncoderConfig":
        if d.get("model_type") != "qwen3_omni_moe":
            raise ConfigError(f"{source}: model_type '{d.get('model_type')}' is not Qwen3-Omni ('qwen3_omni_moe')")
        v = sub_dict(d, "thinker_config.vision_config", source)
        f = Fields(v, source, "thinker_config.vision_config.")
        ints = {k: f.int(k, hi=hi) for k, hi in VISION_LIMITS.items()}
        act = v.get("hidden_act", "gelu_pytorch_tanh")
        if act not in ACTIVATIONS:
            raise f.error("hidden_act", f"'{act}' is not supported (supported: {', '.join(ACTIVATIONS)})")
        deep = f.ints("deepstack_visual_indexes", 0, ints["depth"] - 1)
        if len(set(deep)) != len(deep):
            raise f.error("deepstack_visual_indexes", f"lists a layer twice: {list(deep)}")
        rope_params = v.get("rope_parameters") or {}
        theta = f.float("rope_theta", default=10000.0, d=rope_params)
        cfg = cls(**ints, deepstack_visual_indexes=tuple(deep), hidden_act=act, rope_theta=theta)
        if cfg.hidden_size % cfg.num_heads or cfg.head_dim % 4:
            # the 2-D rotary splits each head's pairs in halves, one per axis: head_dim / 4 frequencies
            raise f.error("num_heads", f"hidden_size / num_heads must be a multiple of 4, got "
                                       f"{cfg.hidden_size} / {cfg.num_heads}")
        side = int(cfg.num_position_embeddings ** 0.5)
        if side * side != cfg.num_position_embeddings:
            raise f.error("num_position_embeddings", f"must be a square (the learned grid), got "
                                                     f"{cfg.num_position_embeddings}")
        return cfg

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """K: one flattened patch, (C, T, P, P)."""
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @property
    def unit(self) -> int:
        """Patches per merged token."""
        return self.spatial_merge_size ** 2

    @property
    def grid_side(self) -> int:
        return int(self.num_position_embeddings ** 0.5)


def as_images(cfg: VisionEncoderConfig, pixel_values, image_grid_thw) -> tuple[np.ndarray, np.ndarray]:
    """pixel_values [N, K] float32 and image_grid_thw [images, 3] int64, checked against each other."""
    pv = np.asarray(pixel_values, np.float32)
    grid = np.asarray(image_grid_thw)
    if grid.ndim == 1:
        grid = grid[None]
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] == 0 or grid.dtype.kind not in "iu":
        raise ModelInputError(f"image_grid_thw must be integers [images, 3] (t, h, w), got {grid.dtype} {grid.shape}")
    grid = grid.astype(np.int64)
    m = cfg.spatial_merge_size
    for i, (t, h, w) in enumerate(grid):
        if t < 1 or h < m or w < m or h % m or w % m:
            raise ModelInputError(f"image {i}: grid (t, h, w) = {(int(t), int(h), int(w))} must have t >= 1 and h, w "
                                  f"multiples of spatial_merge_size {m}")
    n = int(grid.prod(axis=1).sum())
    if pv.ndim != 2 or pv.shape != (n, cfg.patch_dim):
        raise ModelInputError(f"pixel_values must be [{n} patches (the grids' t*h*w), {cfg.patch_dim}], got {pv.shape}")
    if not np.isfinite(pv).all():
        raise ModelInputError("pixel_values hold NaN or inf")
    return pv, grid


def merged_tokens(cfg: VisionEncoderConfig, image_grid_thw) -> list[int]:
    """Thinker placeholder tokens of each image (t * h * w / merge^2, the processor's replace_image_token)."""
    return [int(np.prod(g)) // cfg.unit for g in np.atleast_2d(image_grid_thw)]


@dataclass(frozen=True)
class Layout:
    """Host-side geometry of a batch of images (transformers' own vision_utils, from grid_thw)."""
    grid: tuple[tuple[int, int, int], ...]
    taps: np.ndarray        # [TAPS, N] int32 pos_embed rows
    weights: np.ndarray     # [TAPS, N] float32 their bilinear weights
    positions: np.ndarray   # [3, N] int32 (0, row, col) of each patch
    cu_seqlens: np.ndarray  # [frames + 1] patches per attention segment

    @property
    def n(self) -> int:
        return self.taps.shape[1]


def layout(cfg: VisionEncoderConfig, grid: np.ndarray) -> Layout:
    import torch
    from transformers import vision_utils as vu

    g = torch.as_tensor(np.asarray(grid, np.int64))
    idx, w = vu.get_vision_interpolation_indices_and_weights(g, cfg.grid_side, mode="bilinear", align_corners=True,
                                                             spatial_merge_size=cfg.spatial_merge_size)
    pos = vu.get_vision_position_ids(g, cfg.spatial_merge_size).numpy()  # [N, 2] (row, col)
    positions = np.concatenate([np.zeros((1, len(pos)), np.int32), pos.T.astype(np.int32)])  # [3, N]
    cu = vu.get_vision_cu_seqlens(g).numpy()
    return Layout(tuple(tuple(int(x) for x in r) for r in grid), np.ascontiguousarray(idx.numpy().T, np.int32),
                  np.ascontiguousarray(w.numpy().T, np.float32), positions, cu.astype(np.int64))


def rotary_inv_freq(cfg: VisionEncoderConfig) -> np.ndarray:
    """[head_dim / 2]: the vision rotary's head_dim / 4 frequencies for the rows, then again for the columns,
    computed with torch as compute_axial_rope_parameters does (bit for bit)."""
    import torch

    spatial = cfg.head_dim // 2
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, spatial, 2, dtype=torch.float) / spatial))
    return np.tile(inv.numpy().astype(np.float32), 2)


def deepstack_name(j: int) -> str:
    return f"{PREFIX}.merger_list.{j}"


def vision_activations(cfg: VisionEncoderConfig, n: int) -> list[Activation]:
    d, f, u = cfg.hidden_size, cfg.intermediate_size, cfg.unit
    m, wide, o = n // u, d * u, cfg.out_hidden_size
    out = [Activation(f"{PREFIX}.patch_embed", (n, d)), Activation(POSITIONS, (n, d))]
    for i in range(cfg.depth):
        b = f"{PREFIX}.blocks.{i}"
        out += [Activation(f"{b}.norm1", (n, d)), Activation(f"{b}.attn", (n, d)), Activation(f"{b}.norm2", (n, d)),
                Activation(f"{b}.mlp.linear_fc1", (n, f)), Activation(f"{b}.mlp.act_fn", (n, f)),
                Activation(f"{b}.mlp", (n, d)), Activation(b, (n, d))]
        if i in cfg.deepstack_visual_indexes:
            j = deepstack_name(cfg.deepstack_visual_indexes.index(i))
            out += [Activation(f"{j}.ln_q", (m, wide)), Activation(f"{j}.mlp.0", (m, wide)),
                    Activation(f"{j}.mlp.1", (m, wide)), Activation(j, (m, o))]
    return out + [Activation(f"{OUTPUT}.ln_q", (n, d)), Activation(f"{OUTPUT}.mlp.0", (m, wide)),
                  Activation(f"{OUTPUT}.mlp.1", (m, wide)), Activation(OUTPUT, (m, o))]


# -- the HF side -------------------------------------------------------------------------------------

def hf_hooks(visual, activation_names, got: dict) -> list:
    """A pre-hook for POSITIONS (the first block's input) if asked; returns the handles."""
    if POSITIONS not in activation_names:
        return []

    def grab(module, args):
        got[POSITIONS] = args[0].detach().float().numpy().copy()
    return [visual.blocks[0].register_forward_pre_hook(grab)]


def hf_activations(model, activation_names, pixel_values, image_grid_thw) -> dict[str, np.ndarray]:
    """Our activation names on a transformers Qwen3OmniMoeForConditionalGeneration's vision encoder, run as
    the thinker runs it (get_image_features) on the same patches."""
    import torch

    from ..reference import capture

    visual = model.thinker.model.visual
    names_ = list(activation_names)
    got: dict[str, np.ndarray] = {}
    handles = hf_hooks(visual, names_, got)
    modules = [n.removeprefix(PREFIX + ".") for n in names_ if n != POSITIONS]
    kwargs = {"hidden_states": torch.from_numpy(np.asarray(pixel_values, np.float32)).to(visual.dtype),
              "grid_thw": torch.as_tensor(np.atleast_2d(np.asarray(image_grid_thw, np.int64)))}
    try:
        acts = capture(visual, modules, kwargs)
    finally:
        for h in handles:
            h.remove()
    merged = {**got, **{f"{PREFIX}.{n}": a for n, a in acts.items()}}
    return {n: merged[n] for n in names_}


# -- on our kernels ----------------------------------------------------------------------------------

@dataclass
class Block:
    """Qwen3OmniMoeVisionBlock: h += proj(attention in segments(rotary(qkv(norm1(h))))); h += mlp(norm2(h))."""
    norm1: LayerNorm
    q: Linear
    k: Linear
    v: Linear
    proj: Linear
    norm2: LayerNorm
    linear_fc1: Linear
    linear_fc2: Linear
    heads: int
    act: object

    def __call__(self, h: Tensor, ctx: StepContext, name: str, rot: tuple, bounds: Tensor, cache: tuple,
                 out: Tensor) -> Tensor:
        s, n = ctx.s, ctx.t
        d = h.shape[1]
        dh = d // self.heads
        positions, inv_freq = rot
        x = self.norm1(h, ctx.out(f"{name}.norm1", s.get((n, d), "x")))
        heads = (n, self.heads, dh)  # [N, D] -> [N, H, Dh]
        q, k, v = (p(x, s.get((n, d), slot)).view(heads) for p, slot in ((self.q, "q"), (self.k, "k"), (self.v, "v")))
        sections = (0, dh // 4, dh // 4)
        for t in (q, k):
            rope.mrope(t, positions, inv_freq, sections, interleaved=False, out=t)
        attn_ops.kv_append(k, v, *cache, ctx.step_buf)
        a = attn_ops.attention_segments(q, *cache, ctx.step_buf, bounds, dh ** -0.5, out=s.get(heads, "attn"))
        o = self.proj(a.view((n, d)), ctx.out(f"{name}.attn", s.get((n, d), "o")))
        h = elementwise.add(h, o, out=s.get((n, d), "h_mid"))
        x = self.norm2(h, ctx.out(f"{name}.norm2", s.get((n, d), "x")))
        fi = self.linear_fc1.weight.shape[0]
        f = self.linear_fc1(x, ctx.out(f"{name}.mlp.linear_fc1", s.get((n, fi), "fc1")))
        g = self.act(f, out=ctx.out(f"{name}.mlp.act_fn", s.get((n, fi), "act")))
        m = self.linear_fc2(g, ctx.out(f"{name}.mlp", s.get((n, d), "o")))
        return elementwise.add(h, m, out=out)


@dataclass
class Merger:
    """Qwen3OmniMoeVisionPatchMerger: LayerNorm per patch (postshuffle False) or per merged token (True),
    mlp.0, GELU, mlp.2."""
    ln_q: LayerNorm
    fc1: Linear
    fc2: Linear
    postshuffle: bool

    def __call__(self, h: Tensor, ctx: StepContext, name: str, unit: int, out: Tensor) -> Tensor:
        s = ctx.s
        n, d = h.shape
        wide = (n // unit, d * unit)  # [N, D] -> [M, unit * D]: merge-block order keeps a token's patches adjacent
        if self.postshuffle:
            x = self.ln_q(h.view(wide), ctx.out(f"{name}.ln_q", s.get(wide, "m_x")))
        else:
            x = self.ln_q(h, ctx.out(f"{name}.ln_q", s.get((n, d), "m_x"))).view(wide)
        y = self.fc1(x, ctx.out(f"{name}.mlp.0", s.get(wide, "m_fc1")))
        g = elementwise.gelu(y, out=ctx.out(f"{name}.mlp.1", s.get(wide, "m_act")))
        return self.fc2(g, out)


def upload_rows(ckpt, name: str, shape: tuple[int, int], part: int, parts: int):
    """Rows [part * N / parts, (part + 1) * N / parts) of a linear weight [N, K] in its stored format
    (qkv's q, k and v thirds: our attention reads each as its own [T, H, Dh] tensor)."""
    from ..formats.q8_0 import upload_q8_0

    ckpt.expect(name, shape)
    array, dtype = ckpt.get(name)
    n, k = shape
    rows = slice(part * n // parts, (part + 1) * n // parts)
    if dtype == "q8_0":
        return checked(ckpt, name, upload_q8_0(np.asarray(array).reshape(n, -1)[rows], (n // parts, k), label=name))
    if dtype not in ("bf16", "f16", "f32"):
        array, dtype = ckpt.get_f32(name), "f32"
    return checked(ckpt, name, runtime().upload(np.ascontiguousarray(np.asarray(array).reshape(n, k)[rows]), dtype,
                                                label=name))


class VisionEncoder(Component):
    """Qwen3OmniMoeVisionEncoder on our kernels: patches of one or more images -> [M, out_hidden_size] and the
    DeepStack features, one GPU step a forward. `max_len` bounds the patches of a forward."""
    prefix = PREFIX
    input_name = "pixel_values"

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> VisionEncoderConfig:
        return VisionEncoderConfig.from_dict(d, source)

    @classmethod
    def activation_specs(cls, cfg: VisionEncoderConfig, t: int) -> list[Activation]:
        """For t patches, rounded down to whole merged tokens, at least one (the names do not depend on t)."""
        return vision_activations(cfg, max(cfg.unit, int(t) - int(t) % cfg.unit))

    @classmethod
    def input_specs(cls, cfg: VisionEncoderConfig, pixel_values, image_grid_thw) -> list[Activation]:
        pv, _ = as_images(cfg, pixel_values, image_grid_thw)
        return vision_activations(cfg, pv.shape[0])

    @classmethod
    def input_length(cls, cfg: VisionEncoderConfig, pixel_values, image_grid_thw) -> int:
        """Patches (what max_len bounds)."""
        return as_images(cfg, pixel_values, image_grid_thw)[0].shape[0]

    def __init__(self, cfg: VisionEncoderConfig, ckpt, max_len: int = 2048, progress: bool = False):
        self.cfg = cfg
        self.max_len = max_len
        keys = Keys(PREFIX + ".", names.layout_of(ckpt.names))
        d, fi, u, o = cfg.hidden_size, cfg.intermediate_size, cfg.unit, cfg.out_hidden_size
        bar = progress_bar(ckpt, cfg.depth + 2, progress, " (vision encoder)")

        def lin(name, n, k):
            return Linear(upload_weight(ckpt, keys(f"{name}.weight"), (n, k)), upload_f32(ckpt, keys(f"{name}.bias"), (n,)))

        def ln(name, width=d):
            return LayerNorm(upload_f32(ckpt, keys(f"{name}.weight"), (width,)),
                             upload_f32(ckpt, keys(f"{name}.bias"), (width,)), LN_EPS)

        def merger(name, postshuffle):
            return Merger(ln(f"{name}.ln_q", d * u if postshuffle else d), lin(f"{name}.mlp.0", d * u, d * u),
                          lin(f"{name}.mlp.2", o, d * u), postshuffle)

        conv = upload_unquantized(ckpt, keys("patch_embed.proj.weight"),
                                  (d, cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size))
        # Conv3d with kernel == stride over flattened (C, T, P, P) patches: a linear [D, K]
        self.patch_embed = Linear(conv.view((d, cfg.patch_dim)), upload_f32(ckpt, keys("patch_embed.proj.bias"), (d,)))
        # The learned grid stays in its stored 16-bit (formats/quantize.py keeps it): an embedding gathered
        # with bilinear weights, not a linear.
        table = keys("pos_embed.weight")
        self.pos_embed = upload_unquantized(ckpt, table, (cfg.num_position_embeddings, d))
        self.inv_freq = runtime().upload(rotary_inv_freq(cfg), "f32", label=f"{PREFIX}.rotary_pos_emb.inv_freq")
        bar.update()
        act = ACTIVATIONS[cfg.hidden_act]
        self.blocks = []
        for i in range(cfg.depth):
            p = f"blocks.{i}"
            qkv = keys(f"{p}.attn.qkv.weight")
            qkv_b = ckpt.get_f32(keys(f"{p}.attn.qkv.bias")).reshape(3, d)  # [3D] -> [q | k | v, D]
            q, k, v = (Linear(upload_rows(ckpt, qkv, (3 * d, d), j, 3),
                              checked(ckpt, f"{qkv}[{j}]".replace(".weight", ".bias"),
                                      runtime().upload(np.ascontiguousarray(qkv_b[j]), "f32", label=f"{qkv}[{j}]")))
                       for j in range(3))
            self.blocks.append(Block(ln(f"{p}.norm1"), q, k, v, lin(f"{p}.attn.proj", d, d), ln(f"{p}.norm2"),
                                     lin(f"{p}.mlp.linear_fc1", fi, d), lin(f"{p}.mlp.linear_fc2", d, fi),
                                     cfg.num_heads, act))
            bar.update()
        self.merger_list = [merger(f"merger_list.{j}", True) for j in range(len(cfg.deepstack_visual_indexes))]
        self.merger = merger("merger", False)
        bar.update()
        bar.close()
        self._init_component(ckpt)
        self._buffers: dict[tuple, Buffers] = {}

    def activations(self, t) -> list[Activation]:
        return self.activation_specs(self.cfg, t)

    def prepare(self, pixel_values, image_grid_thw) -> tuple[Layout, np.ndarray]:
        pv, grid = as_images(self.cfg, pixel_values, image_grid_thw)
        if pv.shape[0] > self.max_len:
            raise ModelInputError(f"{pv.shape[0]} patches exceed max_len {self.max_len} of this vision encoder")
        return layout(self.cfg, grid), pv

    def tap(self, pixel_values, image_grid_thw, names_) -> dict[str, np.ndarray]:
        return self.forward(pixel_values, image_grid_thw, taps=names_)

    def forward(self, pixel_values, image_grid_thw, taps=()) -> dict[str, np.ndarray]:
        """The merged features (OUTPUT, [M, out_hidden_size]), the DeepStack features and the tapped
        activations."""
        lay, pv = self.prepare(pixel_values, image_grid_thw)
        specs = self.check_taps(lay.n, taps)
        rt = runtime()
        tapped = {n: self.tap_buffers(specs[n]) for n in taps if n != OUTPUT}
        with rt.step() as step:
            out, _ = self.encode(lay, pv, tapped)
            reads = self.read_taps(step, tapped)
            reads[OUTPUT] = step.read(out)
        return self.collect_reads(specs, reads)

    def encode(self, lay: Layout, pv: np.ndarray, taps: dict | None = None) -> tuple[Tensor, list[Tensor]]:
        """Write the inputs and record the forward into the open step; returns the merged features [M, out]
        and the DeepStack features in block order (the thinker layer each goes into), buffers of this
        layout's that stay valid until its next forward."""
        cfg, rt = self.cfg, runtime()
        bufs = self._buffers.setdefault(lay.grid, Buffers(PREFIX))
        n, d, u = lay.n, cfg.hidden_size, cfg.unit
        m, o = n // u, cfg.out_hidden_size
        x = bufs.get(pv.shape, "pixel_values")
        rt.write(x, pv)
        # one buffer per tap: rows of a [TAPS, N] buffer would start at offsets a binding may not take
        taps_idx = [bufs.get((n,), f"tap{j}", "i32") for j in range(TAPS)]
        taps_w = [bufs.get((n,), f"weight{j}") for j in range(TAPS)]
        for j in range(TAPS):
            rt.write(taps_idx[j], lay.taps[j])
            rt.write(taps_w[j], lay.weights[j])
        positions = bufs.get((3, n), "positions", "i32")
        rt.write(positions, lay.positions)
        bounds = bufs.get((n, 2), "bounds", "u32")
        rt.write(bounds, attn_ops.segment_bounds(lay.cu_seqlens, n))
        rt.write(self.step_buf, np.zeros(4, np.uint32))  # keys from row 0
        ctx = StepContext(n, bufs, self.step_buf, taps or {})
        e = self.patch_embed(x, ctx.out(f"{PREFIX}.patch_embed", bufs.get((n, d), "patch")))
        # pos_embed(idx) * w summed over the taps, in tap order as torch's sum(1) adds them
        pos = bufs.get((n, d), "pos")
        row = bufs.get((n, d), "pos_row")
        for j in range(TAPS):
            g = embedding.embedding(taps_idx[j], self.pos_embed, out=pos if j == 0 else row)
            elementwise.mul(g, taps_w[j], out=g, axis=0)  # one weight per row
            if j:
                elementwise.add(pos, g, out=pos)
        h = elementwise.add(e, pos, out=ctx.out(POSITIONS, bufs.get((n, d), "h0")))
        dh = cfg.head_dim
        cache = (bufs.get((n, cfg.num_heads, dh), "keys"), bufs.get((n, cfg.num_heads, dh), "values"))
        deep = []
        for i, block in enumerate(self.blocks):
            name = f"{PREFIX}.blocks.{i}"
            h = block(h, ctx, name, (positions, self.inv_freq), bounds, cache,
                      ctx.out(name, bufs.get((n, d), f"h{(i + 1) % 2}")))
            if i in cfg.deepstack_visual_indexes:
                j = cfg.deepstack_visual_indexes.index(i)
                deep.append(self.merger_list[j](h, ctx, deepstack_name(j), u,
                                                ctx.out(deepstack_name(j), bufs.get((m, o), f"deepstack{j}"))))
        out = self.merger(h, ctx, OUTPUT, u, bufs.get((m, o), "out"))  # OUTPUT: read by forward, never a tap
        return out, deep
