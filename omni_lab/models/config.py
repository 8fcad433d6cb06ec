"""Config dataclasses whose field names are the HF config names, read from a checkpoint's config.json.

Every decoder of Qwen3-Omni (dense Qwen3, the thinker's text model, the talker's, the code predictor,
code2wav's pre-transformer) is described by one `DecoderConfig`, parsed from the sub-dict of config.json
that holds it (`where` names that sub-dict in error messages). A component says which sub-dict is its own
(models/registry.py); the fields a decoder does not have keep their defaults (no experts, no MRoPE).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import ConfigError

# Upper bounds far beyond any released Qwen3 / Qwen3-Omni config (vocab 152064, 48 layers, hidden 2048-5120,
# 64 heads, 128 experts, 262144 positions), low enough that a typo or a corrupt file is refused before a
# buffer sized by it is allocated (a vocab of 2**31 rows, 10**12 layers).
LIMITS = dict(vocab_size=1 << 24, hidden_size=1 << 16, intermediate_size=1 << 18, num_hidden_layers=1024,
              num_attention_heads=1024, head_dim=1024, max_position_embeddings=1 << 24, sliding_window=1 << 24,
              moe_intermediate_size=1 << 18, num_experts=4096, shared_expert_intermediate_size=1 << 18)
LAYER_TYPES = ("full_attention", "sliding_attention")
_MISSING = object()


def read_config(path: str | Path) -> dict:
    """config.json as a dict, or a ConfigError naming the file: not UTF-8, not JSON, nested past what the
    parser can hold, or not an object."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e})", path=path) from None
    return parse_config(text, path)


def parse_config(text: str, source: str | Path) -> dict:
    """A config.json's text (from a file, or embedded in a GGUF) as a dict, or a ConfigError naming `source`."""
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ConfigError(f"not JSON ({type(e).__name__}: {str(e)[:200]})", path=source) from None
    if not isinstance(d, dict):
        raise ConfigError(f"is a JSON {type(d).__name__}, not an object", path=source)
    return d


def config_file(source: str) -> str:
    """Where a config came from, for messages: a checkpoint directory's config.json; a GGUF names itself."""
    return str(Path(source) / "config.json") if Path(source).is_dir() else str(source)


class Fields:
    """Typed, range-checked reads of one config sub-dict; every refusal is a ConfigError naming the file and
    the field's full path in config.json (`where` + key). JSON gives ints, floats, strings and bools: a "2"
    or a true where an int belongs is refused, not converted (bool is an int to Python, so it is excluded)."""

    def __init__(self, d: dict, source: str, where: str = ""):
        self.d, self.source, self.where = d, config_file(source), where

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, path=self.source, field=self.where + key)

    def missing(self, key: str) -> ConfigError:
        return ConfigError(f"missing field {self.where}{key}", path=self.source)

    def _get(self, key, default):
        """The value, or `default` when absent or null (real configs write null for "not set")."""
        v = self.d.get(key)
        if v is None:
            if default is _MISSING:
                raise self.missing(key)
            return default
        return v

    def int(self, key: str, lo: int = 1, hi: int | None = None, default=_MISSING) -> int | None:
        v = self._get(key, default)
        if v is None:  # absent or null, and None is the default
            return None
        hi = LIMITS.get(key, 1 << 30) if hi is None else hi
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.error(key, f"must be an integer, got {type(v).__name__} {v!r:.40}")
        if not lo <= v <= hi:
            raise self.error(key, f"must be in [{lo}, {hi}], got {v}")
        return v

    def float(self, key: str, default=_MISSING, below: float = math.inf, d: dict | None = None) -> float:
        """A finite float > 0 (and < `below`); read from `d` instead of the sub-dict when given."""
        v = (self.d if d is None else d).get(key)
        v = default if v is None else v
        if v is _MISSING:
            raise self.missing(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or not 0 < v < below:
            raise self.error(key, f"must be a finite number in (0, {below}), got {v!r:.40}")
        return float(v)

    def bool(self, key: str, default: bool) -> bool:
        v = self._get(key, default)
        if not isinstance(v, bool):
            raise self.error(key, f"must be true or false, got {v!r:.40}")
        return v

    def ints(self, key: str, lo: int, hi: int, length: int | None = None, value=_MISSING) -> tuple[int, ...]:
        """A list of ints in [lo, hi] (of `length` entries when given); `value` checks a value from elsewhere."""
        v = self._get(key, _MISSING) if value is _MISSING else value
        if not isinstance(v, (list, tuple)) or (length is not None and len(v) != length):
            raise self.error(key, f"must be a list of {length or 'some'} integers, got {v!r:.60}")
        for x in v:
            if not isinstance(x, int) or isinstance(x, bool) or not lo <= x <= hi:
                raise self.error(key, f"entries must be integers in [{lo}, {hi}], got {v!r:.60}")
        return tuple(v)

    def token_ids(self, key: str, vocab: int):
        """A token id or a list of them, each inside the vocabulary; None when absent."""
        v = self.d.get(key)
        if v is None:
            return None
        if isinstance(v, list):
            return self.ints(key, 0, vocab - 1)
        return self.int(key, 0, vocab - 1)


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
    def from_dict(cls, d: dict, source: str = "config.json", where: str = "", mrope: bool = False,
                  moe: bool = False, **given) -> "DecoderConfig":
        """Parse the decoder sub-dict `d`, every field checked for type and range (a ConfigError names the
        file and the field). `where` is its path in config.json ("thinker_config.text_config.") for those
        messages; mrope / moe read those fields; `given` supplies
        fields the sub-dict does not own (the thinker's eos id lives at the top level; code2wav's layer
        types are a property of its config class, all sliding, not a stored field)."""
        d = {**d, **given}
        f = Fields(d, source, where)
        if d.get("attention_bias"):
            raise f.error("attention_bias", "true is not supported")
        if d.get("hidden_act", "silu") != "silu":
            raise f.error("hidden_act", f"'{d.get('hidden_act')}' is not supported (only silu)")
        rope_key = "rope_parameters" if d.get("rope_parameters") else "rope_scaling"
        rope = d.get(rope_key) or {}
        if not isinstance(rope, dict):
            raise f.error(rope_key, f"must be an object, got {rope!r:.40}")
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise f.error(f"{rope_key}.rope_type", f"'{rope.get('rope_type', rope.get('type'))}' is not supported "
                                                   "(only 'default')")
        hidden, heads, n_layers = f.int("hidden_size"), f.int("num_attention_heads"), f.int("num_hidden_layers")
        kv = f.int("num_key_value_heads", hi=heads)
        if heads % kv:
            raise f.error("num_key_value_heads", f"{kv} does not divide num_attention_heads {heads}")
        head_dim = f.int("head_dim", default=None) or hidden // heads
        if head_dim < 2 or head_dim % 2:  # RoPE rotates pairs
            raise f.error("head_dim", f"must be even and at least 2, got {head_dim}")
        vocab = f.int("vocab_size")
        layer_types = f.d.get("layer_types") or ["full_attention"] * n_layers
        if (not isinstance(layer_types, (list, tuple)) or len(layer_types) != n_layers
                or any(t not in LAYER_TYPES for t in layer_types)):
            raise f.error("layer_types", f"must list one of {LAYER_TYPES} for each of the {n_layers} layers, "
                                         f"got {layer_types!r:.80}")
        sliding = f.int("sliding_window", default=None)
        if sliding is None and "sliding_attention" in layer_types:
            raise f.error("sliding_window", "missing, and layer_types has sliding_attention layers")
        values = dict(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=f.int("intermediate_size"),
            num_hidden_layers=n_layers, num_attention_heads=heads, num_key_value_heads=kv,
            head_dim=head_dim, rms_norm_eps=f.float("rms_norm_eps", below=1.0),
            rope_theta=f.float("rope_theta", d=rope, default=d.get("rope_theta", 10000.0)),
            tie_word_embeddings=f.bool("tie_word_embeddings", False),
            max_position_embeddings=f.int("max_position_embeddings", default=32768),
            layer_types=tuple(layer_types), sliding_window=sliding,
            eos_token_id=f.token_ids("eos_token_id", vocab), bos_token_id=f.token_ids("bos_token_id", vocab),
        )
        if mrope:  # transformers' rotary module defaults the section to [24, 20, 20] when the config has none
            # interleaved sections may exceed D/2 (that default does for a small head_dim): HF's slices clamp
            values["mrope_section"] = f.ints("mrope_section", 0, LIMITS["head_dim"], length=3,
                                             value=rope.get("mrope_section", (24, 20, 20)))
        if moe:
            # the talker's text config calls it num_local_experts (num_experts is an alias there)
            experts = f.int("num_experts" if d.get("num_experts") is not None else "num_local_experts")
            values.update(
                moe_intermediate_size=f.int("moe_intermediate_size"), num_experts=experts,
                num_experts_per_tok=f.int("num_experts_per_tok", hi=experts),
                norm_topk_prob=f.bool("norm_topk_prob", True),
                decoder_sparse_step=f.int("decoder_sparse_step", default=1),
                mlp_only_layers=f.ints("mlp_only_layers", 0, n_layers - 1, value=d.get("mlp_only_layers") or ()),
                shared_expert_intermediate_size=f.int("shared_expert_intermediate_size", lo=0, default=0))
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


def omni_sub_dict(d: dict, path: str, source: str) -> dict:
    """The sub-dict of a Qwen3-Omni config.json at `path` (one component's config), or a ConfigError that
    names the model type when the checkpoint is not Qwen3-Omni at all."""
    if d.get("model_type") != "qwen3_omni_moe":
        raise ConfigError(f"{source}: model_type '{d.get('model_type')}' is not Qwen3-Omni ('qwen3_omni_moe')")
    return sub_dict(d, path, source)


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]
