"""Weights from a checkpoint to the GPU, shared by every component: one linear in its stored format, the
embedding and LM head, a decoder layer (attention, dense or MoE MLP), stacked experts with their count
checked. Keys come from a `Keys` map (live module path -> checkpoint key, formats/omni_names.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..formats import omni_names as names
from ..formats.q8_0 import upload_q8_0
from ..formats.safetensors_io import CheckpointError
from ..gpu import Tensor, runtime
from ..ops import attention as attn_ops
from ..ops import linear
from ..ops.finite import weight_check
from .config import DecoderConfig
from .decoder import router_name
from .layers import Attention, DecoderLayer, DenseMlp, MoeMlp


@dataclass(frozen=True)
class Keys:
    """Checkpoint keys of one component: `keys("layers.3.mlp.gate.weight")` is the stored key of the
    live path `prefix + "layers.3.mlp.gate.weight"` under the checkpoint's layout (a prefix table)."""
    prefix: str                  # live module path of the component, with its dot: "model."
    layout: tuple = names.LIVE_LAYOUT

    def __call__(self, rel: str) -> str:
        return names.stored_key(self.prefix + rel, self.layout)

    @property
    def fused_experts(self) -> bool:
        return self.layout is names.LIVE_LAYOUT


def checked(ckpt, name: str, weight):
    """weight, its NaN / inf check recorded on the GPU (ops/finite.py: read once the component is built)."""
    weight_check(ckpt).mark(name, weight)
    return weight


def upload_weight(ckpt, name: str, shape: tuple[int, ...]):
    """One linear weight to the GPU in its stored format (bf16/f16/f32 as is; Q8_0 as int8 blocks)."""
    ckpt.expect(name, shape)
    array, dtype = ckpt.get(name)
    if dtype == "q8_0":
        return checked(ckpt, name, upload_q8_0(array, shape))
    if dtype not in linear.WEIGHT_DTYPES:
        array, dtype = ckpt.get_f32(name), "f32"
    return checked(ckpt, name, runtime().upload(array, dtype, label=name))


def upload_unquantized(ckpt, name: str, shape: tuple[int, ...]) -> Tensor:
    """A weight whose kernel reads 16-bit or f32 only (a convolution, code2wav's code-embedding table), as
    stored. A Q8_0 one is refused by name: formats/quantize.py keeps these as stored (KEEP_AS_STORED), so it
    comes from a GGUF written before that rule, and would otherwise fail inside the kernel's dtype check."""
    ckpt.expect(name, shape)
    if ckpt.dtype(name) == "q8_0":
        raise CheckpointError(f"{ckpt.path}: tensor '{name}' is Q8_0, but its kernel reads 16-bit or f32 weights "
                              "only; quantize the checkpoint again with `omni-lab quantize`, which keeps it as stored")
    return upload_weight(ckpt, name, shape)


def upload_f32(ckpt, name: str, shape: tuple[int, ...]) -> Tensor:
    """A small parameter (norm weight) widened to f32."""
    ckpt.expect(name, shape)
    return checked(ckpt, name, runtime().upload(ckpt.get_f32(name), "f32", label=name))


def load_embedding_and_head(ckpt, embed_name: str, head_name: str, shape: tuple[int, int], tied: bool):
    """(the table the embedding gather reads, the LM head), each in its stored format; a tied head is the
    embedding's weight. A Q8_0 table is gathered from its blocks (ops/embedding.py), so a Q8_0 model keeps
    it once instead of beside an f32 copy for the gather (1.25 GB for the thinker's 152064 x 2048)."""
    table = upload_weight(ckpt, embed_name, shape)
    head = table if tied and head_name not in ckpt else upload_weight(ckpt, head_name, shape)
    return table, head


def load_attention(ckpt, keys: Keys, layer: int, cfg: DecoderConfig, max_len: int, qk_norm: bool = True) -> Attention:
    d, hq, hkv, dh = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    key = lambda a: keys(f"layers.{layer}.self_attn.{a}.weight")  # noqa: E731
    shapes = {"q_proj": (hq * dh, d), "k_proj": (hkv * dh, d), "v_proj": (hkv * dh, d), "o_proj": (d, hq * dh)}
    ck, cv = attn_ops.kv_cache(max_len, hkv, dh, label=f"{keys.prefix}layers.{layer}")
    norms = {a: upload_f32(ckpt, key(a), (dh,)) if qk_norm else None for a in ("q_norm", "k_norm")}
    return Attention(**{a: upload_weight(ckpt, key(a), shape) for a, shape in shapes.items()}, **norms,
                     cache_k=ck, cache_v=cv, heads=(hq, hkv, dh), eps=cfg.rms_norm_eps, window=cfg.window(layer))


def load_dense_mlp(ckpt, keys: Keys, layer: int, cfg: DecoderConfig, part: str = "mlp", f: int | None = None,
                   scratch: str = "") -> DenseMlp:
    """The SwiGLU MLP at `layers.{layer}.{part}` (a dense layer's `mlp`, or a MoE block's `mlp.shared_expert`
    of width f)."""
    d, f = cfg.hidden_size, f or cfg.intermediate_size
    key = lambda w: keys(f"layers.{layer}.{part}.{w}.weight")  # noqa: E731
    return DenseMlp(gate_proj=upload_weight(ckpt, key("gate_proj"), (f, d)),
                    up_proj=upload_weight(ckpt, key("up_proj"), (f, d)),
                    down_proj=upload_weight(ckpt, key("down_proj"), (d, f)), scratch=scratch)


def stack_experts(ckpt, keys: Keys, which: str, layer: int, cfg: DecoderConfig):
    """One stacked expert weight in its stored format: which = "gate_up_proj" [E, 2F, D] (gate rows, then
    up rows per expert, transformers' fused layout) or "down_proj" [E, D, F]; Q8_0 stays Q8_0."""
    e, f, d = cfg.num_experts, cfg.moe_intermediate_size, cfg.hidden_size
    shape = (e, 2 * f, d) if which == "gate_up_proj" else (e, d, f)
    live_layer = f"{keys.prefix}layers.{layer}"
    if keys.fused_experts:
        key = names.fused_expert_key(which, layer, keys.prefix)
        ckpt.expect(key, shape)
        array, dtype = ckpt.get(key)
    else:
        parts, dtypes = [], set()
        part_rows = shape[1] // len(names.EXPERT_PARTS[which])
        for x in range(e):
            for part in names.EXPERT_PARTS[which]:
                key = names.expert_key(part, layer, x, keys.prefix)
                ckpt.expect(key, (part_rows, shape[2]))
                a, dt = ckpt.get(key)
                parts.append(np.asarray(a).reshape(part_rows, -1))
                dtypes.add(dt)
        if len(dtypes) != 1:
            raise CheckpointError(f"{ckpt.path}: layer {layer} experts' {which} mix dtypes {sorted(dtypes)}")
        array, dtype = np.stack(parts).reshape(e, shape[1], -1), dtypes.pop()  # [E, 2F or D, row bytes]
    label = f"{live_layer}.mlp.experts.{which}"
    if dtype == "q8_0":
        return checked(ckpt, label, upload_q8_0(array, shape, label))
    if dtype not in linear.WEIGHT_DTYPES:
        raise CheckpointError(f"{ckpt.path}: layer {layer} experts' {which} are {dtype}; MoE weights must be "
                              f"one of {', '.join(linear.WEIGHT_DTYPES + ('q8_0',))}")
    return checked(ckpt, label, runtime().upload(array.reshape(shape), dtype, label=label))


def check_expert_count(ckpt, keys: Keys, layer: int, cfg: DecoderConfig) -> None:
    held = names.experts_in_checkpoint(ckpt.names, layer, keys.prefix)
    if held and held != list(range(cfg.num_experts)):
        missing = sorted(set(range(cfg.num_experts)) - set(held))
        extra = sorted(set(held) - set(range(cfg.num_experts)))
        first = lambda x: names.expert_key("gate_proj", layer, x, keys.prefix)  # noqa: E731
        raise CheckpointError(
            f"{ckpt.path}: config.json says num_experts={cfg.num_experts}, but the checkpoint holds experts "
            f"{held[0]}..{held[-1]} ({len(held)}) for layer {layer}"
            + (f"; first missing: '{first(missing[0])}'" if missing else "")
            + (f"; unexpected: '{first(extra[0])}'" if extra else ""))


def load_moe_mlp(ckpt, keys: Keys, layer: int, cfg: DecoderConfig) -> MoeMlp:
    if not keys.fused_experts:
        check_expert_count(ckpt, keys, layer, cfg)
    gate = upload_weight(ckpt, keys(f"layers.{layer}.mlp.gate.weight"), (cfg.num_experts, cfg.hidden_size))
    shared = {}
    if cfg.shared_expert_intermediate_size:  # the talker's MoE blocks
        shared = dict(shared_expert=load_dense_mlp(ckpt, keys, layer, cfg, "mlp.shared_expert",
                                                   cfg.shared_expert_intermediate_size, scratch="shared_"),
                      shared_expert_gate=upload_weight(ckpt, keys(f"layers.{layer}.mlp.shared_expert_gate.weight"),
                                                       (1, cfg.hidden_size)))
    return MoeMlp(gate=gate, **{w: stack_experts(ckpt, keys, w, layer, cfg) for w in ("gate_up_proj", "down_proj")},
                  top_k=cfg.num_experts_per_tok, norm_topk_prob=cfg.norm_topk_prob,
                  router_name=router_name(keys.prefix.rstrip("."), layer), **shared)


def load_layers(model, ckpt, keys: Keys, max_len: int, bar, qk_norm: bool = True, layer_scale: bool = False) -> None:
    """A decoder's `layers` and final `norm` from `ckpt`, one progress step a layer."""
    cfg = model.cfg
    d = cfg.hidden_size
    scale = lambda i, which: upload_f32(ckpt, keys(f"layers.{i}.{which}_layer_scale.scale"), (d,))  # noqa: E731
    model.layers = []
    for i in range(cfg.num_hidden_layers):
        mlp = load_moe_mlp(ckpt, keys, i, cfg) if cfg.is_moe(i) else load_dense_mlp(ckpt, keys, i, cfg)
        model.layers.append(DecoderLayer(
            input_layernorm=upload_f32(ckpt, keys(f"layers.{i}.input_layernorm.weight"), (d,)),
            self_attn=load_attention(ckpt, keys, i, cfg, max_len, qk_norm),
            post_attention_layernorm=upload_f32(ckpt, keys(f"layers.{i}.post_attention_layernorm.weight"), (d,)),
            mlp=mlp, self_attn_layer_scale=scale(i, "self_attn") if layer_scale else None,
            mlp_layer_scale=scale(i, "mlp") if layer_scale else None))
        bar.update()
    model.norm = upload_f32(ckpt, keys("norm.weight"), (d,))
    bar.update()


def progress_bar(ckpt, parts: int, progress: bool, what: str = ""):
    return tqdm(total=parts, desc=f"loading {Path(str(getattr(ckpt, 'path', ''))).name}{what}", disable=not progress,
                unit="part")


def load_decoder(model, ckpt, keys: Keys, head_key: str, max_len: int, progress: bool, what: str = "") -> None:
    """Fill a Decoder's embed_tokens, layers, norm and lm_head from `ckpt` (one progress step a layer)."""
    cfg = model.cfg
    model.source = getattr(ckpt, "path", None)
    bar = progress_bar(ckpt, cfg.num_hidden_layers + 2, progress, what)
    model.embed_tokens, model.lm_head = load_embedding_and_head(
        ckpt, keys("embed_tokens.weight"), head_key, (cfg.vocab_size, cfg.hidden_size), cfg.tie_word_embeddings)
    bar.update()
    load_layers(model, ckpt, keys, max_len, bar)
    bar.close()
