"""The one table between Hugging Face checkpoint keys and llama.cpp GGUF tensor names.

Dense Qwen3 is stored under llama.cpp's own architecture ('qwen3') and names, so llama.cpp can load our
files. The GGUF side of each row is taken from gguf-py's `TENSOR_NAMES` (llama.cpp's list), not retyped;
only the HF side is written here. Every other architecture (Qwen3-Omni) is stored under our own
architecture name with its HF keys unchanged: llama.cpp has no model for it, so a translation would buy
nothing and cost a second table.
"""

from __future__ import annotations

import re

from gguf.constants import MODEL_ARCH, MODEL_ARCH_NAMES, MODEL_TENSOR, MODEL_TENSORS, TENSOR_NAMES

QWEN3_ARCH = MODEL_ARCH_NAMES[MODEL_ARCH.QWEN3]  # "qwen3"
OMNI_ARCH = "qwen3omni-omnilab"  # ours: HF keys kept as they are

# HF model_type -> GGUF general.architecture of the files we write.
ARCH_OF_MODEL_TYPE = {"qwen3": QWEN3_ARCH}

# HF key (without .weight/.bias) -> llama.cpp tensor kind. `{bid}` is the block (layer) index.
QWEN3_TENSORS: dict[str, MODEL_TENSOR] = {
    "model.embed_tokens": MODEL_TENSOR.TOKEN_EMBD,
    "model.norm": MODEL_TENSOR.OUTPUT_NORM,
    "lm_head": MODEL_TENSOR.OUTPUT,
    "model.layers.{bid}.input_layernorm": MODEL_TENSOR.ATTN_NORM,
    "model.layers.{bid}.self_attn.q_proj": MODEL_TENSOR.ATTN_Q,
    "model.layers.{bid}.self_attn.k_proj": MODEL_TENSOR.ATTN_K,
    "model.layers.{bid}.self_attn.v_proj": MODEL_TENSOR.ATTN_V,
    "model.layers.{bid}.self_attn.o_proj": MODEL_TENSOR.ATTN_OUT,
    "model.layers.{bid}.self_attn.q_norm": MODEL_TENSOR.ATTN_Q_NORM,
    "model.layers.{bid}.self_attn.k_norm": MODEL_TENSOR.ATTN_K_NORM,
    "model.layers.{bid}.post_attention_layernorm": MODEL_TENSOR.FFN_NORM,
    "model.layers.{bid}.mlp.gate_proj": MODEL_TENSOR.FFN_GATE,
    "model.layers.{bid}.mlp.up_proj": MODEL_TENSOR.FFN_UP,
    "model.layers.{bid}.mlp.down_proj": MODEL_TENSOR.FFN_DOWN,
}

_SUFFIXES = (".weight", ".bias")


class UnknownTensorName(KeyError):
    """A tensor name with no row in the table of its architecture."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(re.escape("{bid}"), r"(?P<bid>\d+)") + "$")


_HF_TO_GGUF = [(_pattern(hf), TENSOR_NAMES[kind]) for hf, kind in QWEN3_TENSORS.items()]
_GGUF_TO_HF = [(_pattern(TENSOR_NAMES[kind]), hf) for hf, kind in QWEN3_TENSORS.items()]


def _split_suffix(name: str) -> tuple[str, str]:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def _translate(name: str, table, arch: str, direction: str) -> str:
    base, suffix = _split_suffix(name)
    for pattern, template in table:
        m = pattern.match(base)
        if m:
            return template.format(**m.groupdict()) + suffix
    raise UnknownTensorName(f"{arch}: no {direction} name for tensor '{name}' (formats/names.py has no row for it)")


def hf_to_gguf(name: str, arch: str) -> str:
    """HF checkpoint key -> GGUF tensor name for a file of architecture `arch`."""
    if arch == QWEN3_ARCH:
        return _translate(name, _HF_TO_GGUF, arch, "GGUF")
    return name


def gguf_to_hf(name: str, arch: str) -> str:
    """GGUF tensor name -> HF checkpoint key for a file of architecture `arch`."""
    if arch == QWEN3_ARCH:
        return _translate(name, _GGUF_TO_HF, arch, "HF")
    return name


def arch_for(model_type: str | None) -> str:
    """The GGUF architecture we write for an HF `model_type`."""
    return ARCH_OF_MODEL_TYPE.get(model_type or "", OMNI_ARCH)


def check_against_gguf() -> None:
    """Raise unless every tensor kind of the table is one llama.cpp lists for its architecture."""
    allowed = set(MODEL_TENSORS[MODEL_ARCH.QWEN3])
    missing = [TENSOR_NAMES[k] for k in QWEN3_TENSORS.values() if k not in allowed]
    if missing:
        raise AssertionError(f"gguf-py lists no {missing} for {QWEN3_ARCH}")
