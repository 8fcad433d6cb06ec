"""The talker and the code predictor as the workbench compares them: tapped inside a spoken answer, on our
kernels and in Transformers' generate(return_audio=True).

Their inputs are made by the parts before them (the talker's prompt from the thinker's answer, the code
predictor's from the talker's last hidden state and code 0), so a comparison's input is what makes those: a
chat prompt's ids, the speaker and the generation limits (`SPOKEN_PROMPT`, all recorded in a reference's
manifest). Both sides speak greedily, and
- ours taps one talker forward over its prompt from position 0 (Transformers' prefill) and the code
  predictor's 2-row prefill of the first frame over [the talker's last hidden state, code 0's embedding];
- Transformers' side hooks generate (models/talker.py's capture_by_name), keeping each module's first call:
  the same prefills.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .code_predictor import PREFIX as CODE_PREDICTOR, CodePredictor
from .component import ModelInputError
from .config import DecoderConfig
from .speech import Speech, SpeechConfig, cache_length, hf_speak, talker_prompt_rows
from .talker import Talker, capture_by_name

# The parts of a spoken prompt, as the manifest records them.
SPOKEN_PROMPT = ("input_ids", "speaker", "max_new_tokens", "max_frames")


@dataclass(frozen=True)
class SpokenConfig:
    speech: SpeechConfig
    talker: DecoderConfig
    code_predictor: DecoderConfig


class SpokenPart:
    """A part of the speech pipeline (`part`, its class) compared on a spoken prompt: the registry's
    component protocol (config_from, activation_specs, input_length, spec_length, the constructor, tap)
    over the whole Speech pipeline, which makes the part's input."""
    part: type
    input_name = "spoken_prompt"

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> SpokenConfig:
        return SpokenConfig(SpeechConfig.from_dict(d, source), Talker.config_from(d, source),
                            CodePredictor.config_from(d, source))

    @classmethod
    def as_inputs(cls, cfg: SpokenConfig, inputs: dict) -> dict:
        """The spoken prompt checked (the speaker known, an assistant turn, limits of at least 1), in the
        manifest's form."""
        missing = [k for k in SPOKEN_PROMPT if k not in inputs]
        if missing:
            raise ModelInputError(f"a spoken prompt needs {', '.join(SPOKEN_PROMPT)}; missing {', '.join(missing)}")
        ids = np.asarray(inputs["input_ids"], np.int64).reshape(-1)
        cfg.speech.speaker_id(inputs["speaker"])
        talker_prompt_rows(ids, cfg.speech)
        limits = {k: int(inputs[k]) for k in ("max_new_tokens", "max_frames")}
        if min(limits.values()) < 1:
            raise ModelInputError(f"max_new_tokens and max_frames must be at least 1, got {limits}")
        return {"input_ids": ids, "speaker": str(inputs["speaker"]), **limits}

    @classmethod
    def input_length(cls, cfg: SpokenConfig, inputs: dict) -> int:
        """The cache speaking it needs (what max_len bounds)."""
        x = cls.as_inputs(cfg, inputs)
        return cache_length(len(x["input_ids"]), x["max_new_tokens"], x["max_frames"])

    @classmethod
    def activation_specs(cls, cfg: SpokenConfig, t: int):
        return cls.part.activation_specs(getattr(cfg, cls.name), t)

    def __init__(self, cfg: SpokenConfig, ckpt, max_len: int = 2048, progress: bool = False):
        self.cfg = cfg
        self.speech = Speech(ckpt.path, max_len, progress)

    def tap(self, inputs: dict, names) -> dict[str, np.ndarray]:
        return spoken_taps(self.speech, self.as_inputs(self.cfg, inputs), names)


class SpokenTalker(SpokenPart):
    part, name = Talker, "talker"

    @classmethod
    def spec_length(cls, cfg: SpokenConfig, inputs: dict) -> int:
        return talker_prompt_rows(np.asarray(inputs["input_ids"]), cfg.speech)


class SpokenCodePredictor(SpokenPart):
    part, name = CodePredictor, "code_predictor"

    @classmethod
    def spec_length(cls, cfg: SpokenConfig, inputs: dict) -> int:
        return 2  # the first frame's prefill: the talker's hidden state and code 0


def spoken_taps(speech: Speech, x: dict, names) -> dict[str, np.ndarray]:
    """Speak the prompt `x` (greedy) on our kernels, then tap `names`: talker names on one forward over its
    prompt from position 0, code predictor names on the first frame's prefill."""
    cp_names = [n for n in names if n.startswith(f"{CODE_PREDICTOR}.")]
    talker_names = [n for n in names if n not in cp_names]
    ids = x["input_ids"]
    result = speech.speak(ids, x["speaker"], x["max_new_tokens"], x["max_frames"], greedy=True)
    out: dict[str, np.ndarray] = {}
    if talker_names:
        prompt, *_ = speech.talker_prompt(ids, len(result.text_ids), speech.cfg.speaker_id(x["speaker"]))
        out.update(speech.talker.forward(embeds=prompt, start=0, taps=talker_names))
    if cp_names:
        if not len(result.codes):
            raise ModelInputError("the talker ended before its first frame: the code predictor never ran")
        first = speech.first_frame_input(result.talker_prompt, int(result.codes[0, 0]))
        out.update(speech.code_predictor.forward(embeds=first, taps=cp_names))
    return {n: out[n] for n in names}


# -- the HF side -------------------------------------------------------------------------------------

def hf_activations(model, names, x: dict) -> dict[str, np.ndarray]:
    """`names` (talker and code predictor activations) from Transformers' greedy generate(return_audio=True)
    of the spoken prompt `x` (in the manifest's form, SpokenPart.as_inputs): the first call of each module,
    its prefill."""
    return capture_by_name(model.talker, "talker", names, lambda: hf_speak(
        model, x["input_ids"], x["speaker"], x["max_new_tokens"], x["max_frames"], greedy=True))
