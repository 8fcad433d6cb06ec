"""Dense Qwen3 (Qwen3ForCausalLM) on our kernels: prefill, decode with a GPU KV cache, generation.

The decoder of models/decoder.py with Qwen3's checkpoint keys (`model.layers.{i}...`, the same as its
module paths) and plain RoPE positions. Activations: `model.embed_tokens`, `model.layers.{i}.self_attn`,
`model.layers.{i}.mlp`, `model.layers.{i}`, `model.norm`, `lm_head`.
"""

from __future__ import annotations

import numpy as np

from ..gpu import runtime
from .config import ConfigError, DecoderConfig
from .decoder import Decoder, ModelInputError  # noqa: F401  (ModelInputError is part of this module's API)
from .layers import Rotary
from .loaders import Keys, load_decoder


class Qwen3(Decoder):
    prefix = "model"
    lm_head_name = "lm_head"

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> DecoderConfig:
        if d.get("model_type") != "qwen3":
            raise ConfigError(f"{source}: model_type '{d.get('model_type')}' is not a dense Qwen3 ('qwen3')")
        return DecoderConfig.from_dict(d, source)

    def __init__(self, cfg: DecoderConfig, ckpt, max_len: int = 2048, progress: bool = True):
        self.cfg = cfg
        self.max_len = max_len
        load_decoder(self, ckpt, Keys("model."), "lm_head.weight", max_len, progress)
        self._init_decoder(ckpt)

    def scratch_shapes(self, t: int, rows: int) -> dict:
        return {**super().scratch_shapes(t, rows), "positions": ((t,), "i32")}

    def write_positions(self, s, start: int, t: int) -> None:
        runtime().write(s.positions, np.arange(start, start + t, dtype=np.int32))

    def rotary(self, s) -> Rotary:
        return Rotary(s.positions, self.inv_freq)


def hf_activations(model, activation_names, input_ids) -> dict[str, np.ndarray]:
    """Our activation names captured on a transformers Qwen3ForCausalLM: its module paths are our names."""
    import torch

    from ..reference import capture

    return capture(model, activation_names, {"input_ids": torch.as_tensor(np.asarray(input_ids, np.int64)[None])})
