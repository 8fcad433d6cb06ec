"""Config dataclasses whose field names are the HF config names, read from a checkpoint's config.json.

Every decoder of Qwen3-Omni (dense Qwen3, the thinker's text model, the talker's, the code predictor,
code2wav's pre-transformer) is described by one `DecoderConfig`, parsed from the sub-dict of config.json
that holds it (`where` names that sub-dict in error messages). A component says which sub-dict is its own
(models/registry.py); the fields a decoder does not have keep their defaults (no experts, no MRoPE).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import ConfigError


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768
    layer_types: tuple[str, ...] = ()
    sliding_window: int | None = None
    mrope_section: tuple[int, int, int] | None = None   # interleaved MRoPE (thinker, talker); None: plain RoPE
    moe_intermediate_size: int = 0
    num_experts: int = 0
    num_experts_per_tok: int = 0
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    shared_expert_intermediate_size: int = 0
    eos_token_id: int | tuple[int, ...] | None = None
    bos_token_id: int | None = None

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json", where: str = "", what: str = "",
                  mrope: bool = False, moe: bool = False, **given) -> "DecoderConfig":
        """Parse the decoder sub-dict `d`. `where` is its path in config.json ("thinker_config.text_config.")
        for error messages, `what` names the model in them; mrope / moe read those fields; `given` supplies
        fields the sub-dict does not own (the thinker's eos id lives at the top level; code2wav's layer
        types are a property of its config class, all sliding, not a stored field)."""
        d = {**d, **given}
        if d.get("attention_bias"):
            raise ConfigError(f"{source}: {what}attention_bias=true is not supported")
        if d.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: {what}hidden_act '{d.get('hidden_act')}' is not supported (only silu)")
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ConfigError(f"{source}: {what}rope_type '{rope.get('rope_type')}' is not supported (only 'default')")
        try:
            heads, n_layers = d["num_attention_heads"], d["num_hidden_layers"]
            eos = d.get("eos_token_id")
            values = dict(
                vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
                num_hidden_layers=n_layers, num_attention_heads=heads, num_key_value_heads=d["num_key_value_heads"],
                head_dim=d.get("head_dim") or d["hidden_size"] // heads, rms_norm_eps=d["rms_norm_eps"],
                rope_theta=float(rope.get("rope_theta", d.get("rope_theta", 10000.0))),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                max_position_embeddings=d.get("max_position_embeddings", 32768),
                layer_types=tuple(d.get("layer_types") or ["full_attention"] * n_layers),
                sliding_window=d.get("sliding_window"),
                eos_token_id=tuple(eos) if isinstance(eos, list) else eos, bos_token_id=d.get("bos_token_id"),
            )
            if mrope:  # transformers' rotary module defaults the section to [24, 20, 20] when the config has none
                values["mrope_section"] = tuple(rope.get("mrope_section", (24, 20, 20)))
            if moe:
                values.update(
                    # the talker's text config calls it num_local_experts (num_experts is an alias there)
                    moe_intermediate_size=d["moe_intermediate_size"],
                    num_experts=d["num_experts"] if d.get("num_experts") is not None else d["num_local_experts"],
                    num_experts_per_tok=d["num_experts_per_tok"], norm_topk_prob=bool(d.get("norm_topk_prob", True)),
                    decoder_sparse_step=d.get("decoder_sparse_step", 1),
                    mlp_only_layers=tuple(d.get("mlp_only_layers") or ()),
                    shared_expert_intermediate_size=d.get("shared_expert_intermediate_size", 0))
        except KeyError as e:
            raise ConfigError(f"{source}: missing field {where}{e.args[0]}") from None
        return cls(**values)

    def window(self, layer: int) -> int:
        """Sliding-window length of a layer, 0 for full attention."""
        return (self.sliding_window or 0) if self.layer_types[layer] == "sliding_attention" else 0

    def is_moe(self, layer: int) -> bool:
        """transformers' rule (Qwen3OmniMoeThinkerTextDecoderLayer, and the talker's)."""
        return (layer not in self.mlp_only_layers and self.num_experts > 0
                and (layer + 1) % self.decoder_sparse_step == 0)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        e = self.eos_token_id
        return () if e is None else (e,) if isinstance(e, int) else tuple(e)


def sub_dict(d: dict, path: str, source: str) -> dict:
    """The sub-dict of config.json at a dotted path ("thinker_config.text_config"), or a ConfigError."""
    node = d
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
        if not node:
            raise ConfigError(f"{source}: missing field {path}")
    return node


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]
