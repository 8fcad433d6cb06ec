"""The one table of what runs: model type and component -> our class, its config, its activations, and
its capture on the Transformers side. The CLI, the workbench, the quantization report and the notebooks
ask this table; nothing else branches on `model_type`.

A component class provides `config_from(config_dict, source)`, `activation_specs(cfg, t)`,
`input_specs(cfg, *inputs)` (the activations of one forward over those inputs), `input_length(cfg, *inputs)`,
a constructor `(cfg, ckpt, max_len, progress)` and `tap(*inputs, names)`; its module an
`hf_activations(model, names, *inputs)`. Inputs are named as the manifest of a reference records them
(`Entry.inputs`); one component may have several entries that take different inputs (the thinker: token
ids; token ids and audio features; token ids, patches and grids of images; or all of them), and the inputs
given choose among them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from ..activations import Activation
from ..formats.gguf_io import open_checkpoint
from .config import ConfigError


# What the parts that speak are compared on: a chat prompt and how it is spoken (models/speech_taps.py).
SPOKEN_PROMPT = ("input_ids", "speaker", "max_new_tokens", "max_frames")


@dataclass(frozen=True)
class Entry:
    model_type: str   # config.json's model_type
    component: str    # "text" for a plain language model; "thinker", "code2wav", ... for Qwen3-Omni's parts
    module: str       # where the class and its HF capture live
    class_name: str
    inputs: tuple[str, ...] = ("input_ids",)  # what one forward takes, in the order its methods take them

    def component_class(self):
        return getattr(importlib.import_module(self.module), self.class_name)

    def args(self, inputs: dict) -> list:
        """The inputs {name: value} as the positional arguments of the component's methods."""
        return [inputs[k] for k in self.inputs]

    def hf_activations(self, model, names, inputs: dict):
        """The component's activations `names` captured on the Transformers model, for its inputs (token
        ids; codec codes [Q, T] for code2wav; mel features [M, L] per audio for the audio encoder; patches [N, K] and grids [images, 3] for
        the vision encoder)."""
        return importlib.import_module(self.module).hf_activations(model, names, *self.args(inputs))


ENTRIES = (
    Entry("qwen3", "text", "omni_lab.models.qwen3", "Qwen3"),
    Entry("qwen3_omni_moe", "thinker", "omni_lab.models.thinker", "Qwen3OmniThinkerText"),
    Entry("qwen3_omni_moe", "thinker", "omni_lab.models.audio_in", "ThinkerWithAudio", ("input_ids", "input_features")),
    Entry("qwen3_omni_moe", "thinker", "omni_lab.models.image_in", "ThinkerWithImages",
          ("input_ids", "pixel_values", "image_grid_thw")),
    Entry("qwen3_omni_moe", "thinker", "omni_lab.models.image_in", "ThinkerWithAudioImages",
          ("input_ids", "input_features", "pixel_values", "image_grid_thw")),
    Entry("qwen3_omni_moe", "code2wav", "omni_lab.models.code2wav", "Code2Wav", ("codes",)),
    Entry("qwen3_omni_moe", "audio_encoder", "omni_lab.models.audio_encoder", "AudioEncoder", ("input_features",)),
    Entry("qwen3_omni_moe", "vision", "omni_lab.models.vision_encoder", "VisionEncoder", ("pixel_values", "image_grid_thw")),
    # The parts that speak, compared inside a spoken answer (models/speech_taps.py): their inputs are the prompt's
    Entry("qwen3_omni_moe", "talker", "omni_lab.models.speech_taps", "SpokenTalker", SPOKEN_PROMPT),
    Entry("qwen3_omni_moe", "code_predictor", "omni_lab.models.speech_taps", "SpokenCodePredictor", SPOKEN_PROMPT),
    Entry("qwen3_omni_moe", "speech", "omni_lab.models.speech_taps", "SpokenSpeech", SPOKEN_PROMPT),
)
# The component a model type runs when none is named: its text path.
DEFAULT_COMPONENT = {"qwen3": "text", "qwen3_omni_moe": "thinker"}


def entry_for(config: dict, component: str | None = None, source: str = "config.json", inputs=None) -> Entry:
    """The entry of a component; `inputs` (their names) picks among a component's entries, else its first."""
    kind = config.get("model_type")
    if not isinstance(kind, str) or kind not in DEFAULT_COMPONENT:
        raise ConfigError(f"{source}: model_type '{kind}' is not supported (supported: {', '.join(DEFAULT_COMPONENT)})")
    component = component or DEFAULT_COMPONENT[kind]
    mine = [e for e in ENTRIES if e.model_type == kind and e.component == component]
    if not mine:
        have = dict.fromkeys(e.component for e in ENTRIES if e.model_type == kind)
        raise ConfigError(f"{source}: {kind} has no component '{component}' here (have: {', '.join(have)})")
    if inputs is None:
        return mine[0]
    for e in mine:
        if set(e.inputs) == set(inputs):
            return e
    takes = " or ".join("(" + ", ".join(e.inputs) + ")" for e in mine)
    raise ConfigError(f"{source}: the {component} takes {takes}, not ({', '.join(inputs)})")


def load(path: str | Path, component: str | None = None, max_len: int = 2048, progress: bool = True, inputs=None):
    """Our implementation of a component of the checkpoint at `path` (directory or .gguf), the entry that
    takes `inputs` (their names; None: the component's first)."""
    ckpt = open_checkpoint(path)
    cls = entry_for(ckpt.config, component, str(path), inputs).component_class()
    return cls(cls.config_from(ckpt.config, source=str(path)), ckpt, max_len, progress)


def activation_specs(path: str | Path, t: int = 1, component: str | None = None) -> list[Activation]:
    """The named activations of a component for an input of length t, in execution order."""
    config = open_checkpoint(path).config
    cls = entry_for(config, component, str(path)).component_class()
    return cls.activation_specs(cls.config_from(config, source=str(path)), t)


def input_specs(path: str | Path, inputs: dict, component: str | None = None) -> list[Activation]:
    """The named activations of one forward of a component over `inputs` ({name: value}), in execution order."""
    config = open_checkpoint(path).config
    entry = entry_for(config, component, str(path), inputs)
    cls = entry.component_class()
    return cls.input_specs(cls.config_from(config, source=str(path)), *entry.args(inputs))


def input_length(path: str | Path, inputs, component: str | None = None) -> int:
    """Tokens (a decoder) or frames (code2wav) of a component's input, checked as the component checks it:
    what its max_len must hold. `inputs`: the component's one input, or {name: value}."""
    config = open_checkpoint(path).config
    entry = entry_for(config, component, str(path), inputs if isinstance(inputs, dict) else None)
    cls = entry.component_class()
    args = entry.args(inputs) if isinstance(inputs, dict) else [inputs]
    return cls.input_length(cls.config_from(config, source=str(path)), *args)
