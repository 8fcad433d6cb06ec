"""Config dataclasses whose field names are the HF config names, read from a checkpoint's config.json."""

from __future__ import annotations

from dataclasses import dataclass, fields


class ConfigError(ValueError):
    """A config.json we cannot run; the message names the field."""


@dataclass(frozen=True)
class Qwen3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    max_position_embeddings: int
    layer_types: tuple[str, ...]
    sliding_window: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    bos_token_id: int | None = None

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "Qwen3Config":
        if d.get("model_type") != "qwen3":
            raise ConfigError(f"{source}: model_type '{d.get('model_type')}' is not a dense Qwen3 ('qwen3')")
        if d.get("attention_bias"):
            raise ConfigError(f"{source}: attention_bias=true is not supported by the Qwen3 implementation")
        rope = d.get("rope_parameters") or {"rope_theta": d.get("rope_theta", 10000.0), "rope_type": "default"}
        if rope.get("rope_type", "default") != "default":
            raise ConfigError(f"{source}: rope_type '{rope.get('rope_type')}' is not supported (only 'default')")
        n_layers = d["num_hidden_layers"]
        layer_types = d.get("layer_types") or ["full_attention"] * n_layers
        try:
            return cls(
                vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
                num_hidden_layers=n_layers, num_attention_heads=d["num_attention_heads"],
                num_key_value_heads=d["num_key_value_heads"],
                head_dim=d.get("head_dim") or d["hidden_size"] // d["num_attention_heads"],
                rms_norm_eps=d["rms_norm_eps"], rope_theta=float(rope["rope_theta"]),
                tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
                max_position_embeddings=d.get("max_position_embeddings", 32768),
                layer_types=tuple(layer_types), sliding_window=d.get("sliding_window"),
                eos_token_id=tuple(d["eos_token_id"]) if isinstance(d.get("eos_token_id"), list) else d.get("eos_token_id"),
                bos_token_id=d.get("bos_token_id"),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing field {e.args[0]}") from None

    def window(self, layer: int) -> int:
        """Sliding-window length of a layer, 0 for full attention."""
        return (self.sliding_window or 0) if self.layer_types[layer] == "sliding_attention" else 0

    @property
    def eos_ids(self) -> tuple[int, ...]:
        e = self.eos_token_id
        return () if e is None else (e,) if isinstance(e, int) else tuple(e)


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]
