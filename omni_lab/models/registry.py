"""The one table of what runs: model type and component -> our class, its config, its activations, and
its capture on the Transformers side. The CLI, the workbench, the quantization report and the notebooks
ask this table; nothing else branches on `model_type`.

A component class provides `config_from(config_dict, source)`, `activation_specs(cfg, t)`, `spec_length(cfg,
inputs)` (the t of its input), `input_length(cfg, inputs)` (what max_len bounds), a constructor `(cfg, ckpt,
max_len, progress)`, `tap(inputs, names)`, and its module an `hf_activations(model, names, inputs)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from ..activations import Activation
from ..formats.gguf_io import open_checkpoint
from .config import ConfigError


@dataclass(frozen=True)
class Entry:
    model_type: str   # config.json's model_type
    component: str    # "text" for a plain language model; "thinker", "code2wav", ... for Qwen3-Omni's parts
    module: str       # where the class and its HF capture live
    class_name: str

    def component_class(self):
        return getattr(importlib.import_module(self.module), self.class_name)

    def hf_activations(self, model, names, inputs):
        """The component's activations `names` captured on the Transformers model, for its inputs (token
        ids; codec codes [Q, T] for code2wav; mel features [M, L] for the audio encoder)."""
        return importlib.import_module(self.module).hf_activations(model, names, inputs)


ENTRIES = (
    Entry("qwen3", "text", "omni_lab.models.qwen3", "Qwen3"),
    Entry("qwen3_omni_moe", "thinker", "omni_lab.models.thinker", "Qwen3OmniThinkerText"),
    Entry("qwen3_omni_moe", "code2wav", "omni_lab.models.code2wav", "Code2Wav"),
    Entry("qwen3_omni_moe", "audio_encoder", "omni_lab.models.audio_encoder", "AudioEncoder"),
    Entry("qwen3_omni_moe", "talker", "omni_lab.models.speech_taps", "SpokenTalker"),
    Entry("qwen3_omni_moe", "code_predictor", "omni_lab.models.speech_taps", "SpokenCodePredictor"),
    Entry("qwen3_omni_moe", "speech", "omni_lab.models.speech_taps", "SpokenSpeech"),
)
# The component a model type runs when none is named: its text path.
DEFAULT_COMPONENT = {"qwen3": "text", "qwen3_omni_moe": "thinker"}


def entry_for(config: dict, component: str | None = None, source: str = "config.json") -> Entry:
    kind = config.get("model_type")
    if not isinstance(kind, str) or kind not in DEFAULT_COMPONENT:
        raise ConfigError(f"{source}: model_type '{kind}' is not supported (supported: {', '.join(DEFAULT_COMPONENT)})")
    component = component or DEFAULT_COMPONENT[kind]
    for e in ENTRIES:
        if e.model_type == kind and e.component == component:
            return e
    have = [e.component for e in ENTRIES if e.model_type == kind]
    raise ConfigError(f"{source}: {kind} has no component '{component}' here (have: {', '.join(have)})")


def load(path: str | Path, component: str | None = None, max_len: int = 2048, progress: bool = True):
    """Our implementation of a component of the checkpoint at `path` (directory or .gguf)."""
    ckpt = open_checkpoint(path)
    cls = entry_for(ckpt.config, component, str(path)).component_class()
    return cls(cls.config_from(ckpt.config, source=str(path)), ckpt, max_len, progress)


def activation_specs(path: str | Path, t: int = 1, component: str | None = None) -> list[Activation]:
    """The named activations of a component for an input of length t, in execution order."""
    config = open_checkpoint(path).config
    cls = entry_for(config, component, str(path)).component_class()
    return cls.activation_specs(cls.config_from(config, source=str(path)), t)


def input_length(path: str | Path, inputs, component: str | None = None) -> int:
    """Tokens (a decoder) or frames (code2wav) of a component's input, checked as the component checks it."""
    config = open_checkpoint(path).config
    cls = entry_for(config, component, str(path)).component_class()
    return cls.input_length(cls.config_from(config, source=str(path)), inputs)


def spec_length(path: str | Path, inputs, component: str | None = None):
    """The t that a component's activation_specs take for its input (tokens, frames, mel frames; the talker's
    prompt rows for a spoken prompt)."""
    config = open_checkpoint(path).config
    cls = entry_for(config, component, str(path)).component_class()
    return cls.spec_length(cls.config_from(config, source=str(path)), inputs)
