"""The Qwen3-Omni thinker's text model (MoE decoder) on our kernels: text in, logits out.

Activations are named by transformers 5.23's live module paths: `thinker.model.language_model.embed_tokens`,
`...language_model.layers.{i}.self_attn`, `...layers.{i}.mlp`, `...layers.{i}`, `...language_model.norm`,
`thinker.lm_head`, plus `...layers.{i}.mlp.router` on MoE layers: [T, 2k] float32, columns 0..k-1 the
selected expert ids and k..2k-1 their routing weights, slots in descending probability (torch.topk's
order). Checkpoint keys go through formats/omni_names.py. The attention block is the dense model's.
"""

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
from ..ops import elementwise, linear, moe
from .config import ConfigError
from .decoder import DecoderLM, ModelInputError  # noqa: F401  (ModelInputError is part of this module's API)
from .qwen3 import Scratch as DenseScratch
from .qwen3 import (AttentionLayer, apply_linear, apply_linears, encode_decoder, load_attention,
                    load_embedding_and_head, upload_weight)

LIVE = names.LIVE_TEXT.rstrip(".")  # "thinker.model.language_model"
LM_HEAD = "thinker.lm_head"


@dataclass(frozen=True)
class ThinkerTextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, int, int]
    moe_intermediate_size: int
    num_experts: int
    num_experts_per_tok: int
    norm_topk_prob: bool
    decoder_sparse_step: int
    mlp_only_layers: tuple[int, ...]
    tie_word_embeddings: bool
    eos_token_id: int | tuple[int, ...] | None = None

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "ThinkerTextConfig":
        if d.get("model_type") != "qwen3_omni_moe":
            raise ConfigError(f"{source}: model_type '{d.get('model_type')}' is not Qwen3-Omni ('qwen3_omni_moe')")
        thinker = d.get("thinker_config") or {}
        t = thinker.get("text_config")
        if not t:
            raise ConfigError(f"{source}: missing field thinker_config.text_config")
        if t.get("attention_bias"):
            raise ConfigError(f"{source}: thinker text attention_bias=true is not supported")
        if t.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: thinker text hidden_act '{t.get('hidden_act')}' is not supported (only silu)")
        rope_p = t.get("rope_parameters") or t.get("rope_scaling") or {}
        if rope_p.get("rope_type", rope_p.get("type", "default")) != "default":
            raise ConfigError(f"{source}: thinker rope_type '{rope_p.get('rope_type')}' is not supported (only 'default')")
        try:
            heads = t["num_attention_heads"]
            return cls(
                vocab_size=t["vocab_size"], hidden_size=t["hidden_size"], intermediate_size=t["intermediate_size"],
                num_hidden_layers=t["num_hidden_layers"], num_attention_heads=heads,
                num_key_value_heads=t["num_key_value_heads"], head_dim=t.get("head_dim") or t["hidden_size"] // heads,
                rms_norm_eps=t["rms_norm_eps"], rope_theta=float(rope_p.get("rope_theta", t.get("rope_theta", 10000.0))),
                # transformers' rotary module defaults the section to [24, 20, 20] when the config has none
                mrope_section=tuple(rope_p.get("mrope_section", (24, 20, 20))),
                moe_intermediate_size=t["moe_intermediate_size"], num_experts=t["num_experts"],
                num_experts_per_tok=t["num_experts_per_tok"], norm_topk_prob=bool(t.get("norm_topk_prob", True)),
                decoder_sparse_step=t.get("decoder_sparse_step", 1), mlp_only_layers=tuple(t.get("mlp_only_layers") or ()),
                tie_word_embeddings=bool(thinker.get("tie_word_embeddings", False)),
                eos_token_id=d.get("im_end_token_id", t.get("eos_token_id")),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing field thinker_config.text_config.{e.args[0]}") from None

    def is_moe(self, layer: int) -> bool:
        """transformers' rule (Qwen3OmniMoeThinkerTextDecoderLayer)."""
        return (layer not in self.mlp_only_layers and self.num_experts > 0
                and (layer + 1) % self.decoder_sparse_step == 0)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        e = self.eos_token_id
        return () if e is None else (e,) if isinstance(e, int) else tuple(e)


@dataclass
class DenseMlp:
    gate_proj: object
    up_proj: object
    down_proj: object


@dataclass
class MoeMlp:
    gate: object        # router [E, D]
    gate_up_proj: object  # [E, 2F, D]: per expert F gate_proj rows, then F up_proj rows
    down_proj: object     # [E, D, F]


@dataclass
class ThinkerLayer(AttentionLayer):
    mlp: DenseMlp | MoeMlp


def _stack_experts(ckpt, which: str, layer: int, cfg: ThinkerTextConfig, fused: bool):
    """One stacked expert weight in its stored format: which = "gate_up_proj" [E, 2F, D] (gate rows, then
    up rows per expert, transformers' fused layout) or "down_proj" [E, D, F]; Q8_0 stays Q8_0."""
    e, f, d = cfg.num_experts, cfg.moe_intermediate_size, cfg.hidden_size
    shape = (e, 2 * f, d) if which == "gate_up_proj" else (e, d, f)
    if fused:
        key = names.fused_expert_key(which, layer)
        ckpt.expect(key, shape)
        array, dtype = ckpt.get(key)
    else:
        parts, dtypes = [], set()
        for x in range(e):
            for half in (("gate_proj", "up_proj") if which == "gate_up_proj" else ("down_proj",)):
                key = names.expert_key(half, layer, x)
                ckpt.expect(key, shape[1:] if half == "down_proj" else (f, d))
                a, dt = ckpt.get(key)
                parts.append(np.asarray(a).reshape(shape[1] // (2 if which == "gate_up_proj" else 1), -1))
                dtypes.add(dt)
        if len(dtypes) != 1:
            raise CheckpointError(f"{ckpt.path}: layer {layer} experts' {which} mix dtypes {sorted(dtypes)}")
        array, dtype = np.stack(parts).reshape(e, shape[1], -1), dtypes.pop()  # [E, 2F or D, row bytes]
    label = f"{LIVE}.layers.{layer}.mlp.experts.{which}"
    if dtype == "q8_0":
        return upload_q8_0(array, shape, label)
    if dtype not in linear.WEIGHT_DTYPES:
        raise CheckpointError(f"{ckpt.path}: layer {layer} experts' {which} are {dtype}; MoE weights must be "
                              f"one of {', '.join(linear.WEIGHT_DTYPES + ('q8_0',))}")
    return runtime().upload(array.reshape(shape), dtype, label=label)


def _check_expert_count(ckpt, layer: int, cfg: ThinkerTextConfig) -> None:
    held = names.experts_in_checkpoint(ckpt.names, layer)
    if held and held != list(range(cfg.num_experts)):
        missing = sorted(set(range(cfg.num_experts)) - set(held))
        extra = sorted(set(held) - set(range(cfg.num_experts)))
        raise CheckpointError(
            f"{ckpt.path}: config.json says num_experts={cfg.num_experts}, but the checkpoint holds experts "
            f"{held[0]}..{held[-1]} ({len(held)}) for layer {layer}"
            + (f"; first missing: '{names.expert_key('gate_proj', layer, missing[0])}'" if missing else "")
            + (f"; unexpected: '{names.expert_key('gate_proj', layer, extra[0])}'" if extra else ""))


class Scratch(DenseScratch):
    """The dense model's buffers plus three position streams and the MoE block's buffers."""

    def __init__(self, cfg: ThinkerTextConfig, t: int, logits_rows: int):
        super().__init__(cfg, t, logits_rows)
        rt = runtime()
        fe, e, k = cfg.moe_intermediate_size, cfg.num_experts, cfg.num_experts_per_tok
        self.positions3 = rt.empty((3, t), "i32", "positions3")
        if e:
            self.router_logits = rt.empty((t, e), label="router_logits")
            self.route_w = rt.empty((t, k), label="route_weights")
            self.route_e = rt.empty((t, k), "i32", label="route_experts")
            self.e_act = rt.empty((t, k, fe), label="expert_act")


def thinker_names(cfg: ThinkerTextConfig) -> list[str]:
    """The thinker text model's activation names in execution order (`...mlp.router` on MoE layers)."""
    out = [f"{LIVE}.embed_tokens"]
    for i in range(cfg.num_hidden_layers):
        p = f"{LIVE}.layers.{i}"
        out += [f"{p}.self_attn"] + ([f"{p}.mlp.router"] if cfg.is_moe(i) else []) + [f"{p}.mlp", p]
    return out + [f"{LIVE}.norm", LM_HEAD]


class Qwen3OmniThinkerText(DecoderLM):
    config_class = ThinkerTextConfig
    scratch_class = Scratch

    def __init__(self, cfg: ThinkerTextConfig, ckpt, max_len: int = 2048, progress: bool = False):
        self.cfg = cfg
        self.max_len = max_len
        # From this many tokens on, the experts run grouped by expert (prefill); fewer run per pair.
        # None: moe.grouped_from, by the experts' storage.
        self.grouped_min_tokens: int | None = None
        rt = runtime()
        d, hq, hkv, dh, f, v = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                                cfg.intermediate_size, cfg.vocab_size)
        fused = names.is_fused(ckpt.names)
        key = lambda live, i=None: names.text_key(live, i, fused)  # noqa: E731

        def norm_f32(name: str, n: int) -> Tensor:
            ckpt.expect(name, (n,))
            return rt.upload(ckpt.get_f32(name), "f32", label=name)

        bar = tqdm(total=cfg.num_hidden_layers + 2, desc=f"loading {Path(str(getattr(ckpt, 'path', ''))).name} (thinker)",
                   disable=not progress, unit="part")
        self.embed_tokens, self.lm_head = load_embedding_and_head(
            ckpt, key("embed_tokens.weight"), names.LM_HEAD, (v, d), cfg.tie_word_embeddings)
        bar.update()
        self.layers: list[ThinkerLayer] = []
        for i in range(cfg.num_hidden_layers):
            if cfg.is_moe(i):
                if not fused:
                    _check_expert_count(ckpt, i, cfg)
                mlp = MoeMlp(gate=upload_weight(ckpt, key("layers.{i}.mlp.gate.weight", i), (cfg.num_experts, d)),
                             **{w: _stack_experts(ckpt, w, i, cfg, fused) for w in ("gate_up_proj", "down_proj")})
            else:
                mlp = DenseMlp(gate_proj=upload_weight(ckpt, key("layers.{i}.mlp.gate_proj.weight", i), (f, d)),
                               up_proj=upload_weight(ckpt, key("layers.{i}.mlp.up_proj.weight", i), (f, d)),
                               down_proj=upload_weight(ckpt, key("layers.{i}.mlp.down_proj.weight", i), (d, f)))
            ck, cv = attn_ops.kv_cache(max_len, hkv, dh, label=f"thinker.layers.{i}")
            self.layers.append(ThinkerLayer(
                **load_attention(ckpt, lambda a: key(f"layers.{{i}}.self_attn.{a}.weight", i), d, hq, hkv, dh),
                input_layernorm=norm_f32(key("layers.{i}.input_layernorm.weight", i), d),
                post_attention_layernorm=norm_f32(key("layers.{i}.post_attention_layernorm.weight", i), d),
                mlp=mlp, cache_k=ck, cache_v=cv))
            bar.update()
        self.norm = norm_f32(key("norm.weight"), d)
        bar.update()
        bar.close()
        self._init_decoder()

    def write_positions(self, s: Scratch, start: int, t: int) -> None:
        runtime().write(s.positions3, self.text_positions(start, t))

    def tap_buffers(self, name: str, shape: tuple[int, int]):
        if name.endswith(".mlp.router"):  # routing weights and expert ids, written by moe.route
            k = self.cfg.num_experts_per_tok
            rt = runtime()
            return (rt.empty((shape[0], k), label=name + ".weights"), rt.empty((shape[0], k), "i32", label=name + ".experts"))
        return super().tap_buffers(name, shape)

    def collect(self, name: str, values) -> np.ndarray:
        if isinstance(values, tuple):  # router: [T, k] weights and ids -> [T, 2k], ids first
            weights, experts = values
            return np.concatenate([experts.astype(np.float32), weights], axis=1)
        return values

    def activation_shapes(self, t: int) -> dict[str, tuple[int, int]]:
        """Every named activation in execution order, with its [tokens, features] shape."""
        cfg, d, k = self.cfg, self.cfg.hidden_size, self.cfg.num_experts_per_tok
        width = {f"{LIVE}.norm": d, LM_HEAD: cfg.vocab_size}
        return {n: (t, 2 * k if n.endswith(".mlp.router") else width.get(n, d)) for n in thinker_names(cfg)}

    @staticmethod
    def text_positions(start: int, t: int) -> np.ndarray:
        """[3, T] mrope positions of text tokens: transformers' get_rope_index gives text the same position
        in all three streams (temporal, height, width), counting on from the cache."""
        return np.broadcast_to(np.arange(start, start + t, dtype=np.int32), (3, t)).copy()

    def _mlp(self, i: int, L: ThinkerLayer, x: Tensor, s: Scratch, t: int, taps: dict, out: Tensor) -> Tensor:
        m = L.mlp
        if isinstance(m, DenseMlp):
            gate, up = apply_linears(x, (m.gate_proj, m.up_proj), (s.gate, s.up))
            act = elementwise.swiglu(gate, up, out=s.act)
            return apply_linear(act, m.down_proj, out)
        cfg, k = self.cfg, self.cfg.num_experts_per_tok
        router = taps.get(f"{LIVE}.layers.{i}.mlp.router")
        w_buf, e_buf = router if router else (s.route_w, s.route_e)
        logits = apply_linear(x, m.gate, s.router_logits)  # [T, E]
        weights, experts = moe.route(logits, k, cfg.norm_topk_prob, out_weights=w_buf, out_experts=e_buf)
        grouped = t >= (self.grouped_min_tokens or moe.grouped_from(m.gate_up_proj))
        groups = moe.group_pairs(experts, cfg.num_experts) if grouped else None
        act = moe.experts_gate_up(x, m.gate_up_proj, experts, out=s.e_act, groups=groups)  # [T, k, F]
        out = moe.experts_down(act, m.down_proj, experts, weights, out=out, groups=groups)
        if groups:
            groups.release()  # the next layer's dispatches run after these: its groups can reuse the buffers
        return out

    def _encode(self, s: Scratch, t: int, taps: dict, all_logits: bool) -> Tensor:
        return encode_decoder(self, s, t, taps, all_logits, LIVE, LM_HEAD, (s.positions3, self.inv_freq, self.cfg.mrope_section),
                              lambda i: 0, lambda i, L, x, out: self._mlp(i, L, x, s, t, taps, out))


# -- the HF side -------------------------------------------------------------------------------------

def hf_thinker_activations(model, activation_names, input_ids) -> dict[str, np.ndarray]:
    """Capture our activation names on a transformers Qwen3OmniMoeForConditionalGeneration (run through
    its thinker). `...mlp.router` is not a module: it is built from the router (`...mlp.gate`) outputs,
    (logits, scores [T, k], indices [T, k]), in the layout above."""
    import torch

    from ..reference import capture

    thinker = model.thinker
    modules = [n.removeprefix("thinker.") for n in activation_names if not n.endswith(".mlp.router")]
    routers = [n for n in activation_names if n.endswith(".mlp.router")]
    got: dict[str, np.ndarray] = {}
    handles = []
    for n in routers:
        gate = thinker.get_submodule(n.removeprefix("thinker.").removesuffix(".router") + ".gate")

        def hook(module, args, output, name=n):
            _, scores, idx = output
            got[name] = torch.cat([idx.float(), scores.float()], dim=-1).detach().numpy()
        handles.append(gate.register_forward_hook(hook))
    try:
        acts = capture(thinker, modules, {"input_ids": torch.as_tensor(np.asarray(input_ids)[None])})
    finally:
        for h in handles:
            h.remove()
    return {**{f"thinker.{n}": a for n, a in acts.items()}, **got}
