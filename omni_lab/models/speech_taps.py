"""The talker, the code predictor, and the whole speech pipeline as the workbench compares them: tapped
inside a spoken answer, on our kernels and in Transformers' generate(return_audio=True).

Their inputs are made by the parts before them (the talker's prompt from the thinker's answer, the code
predictor's from the talker's last hidden state and code 0), so a comparison's input is what makes those: a
chat prompt's ids, the speaker and the generation limits (`SPOKEN_PROMPT`, all recorded in a reference's
manifest). Both sides speak greedily, and
- ours taps one talker forward over its prompt from position 0 (Transformers' prefill) and the code
  predictor's 2-row prefill of the first frame over [the talker's last hidden state, code 0's embedding];
- Transformers' side hooks generate (models/talker.py's capture_by_name), keeping each module's first call:
  the same prefills.
The `speech` component spans all four parts in one namespace: the thinker's prefill, the talker's prompt
and prefill, the code predictor's first prefill, and code2wav's first chunk of each side's own codes (what
generate's chunked_decode runs first), so that the first divergence can be in any of them. Its shapes
follow the prompt, the talker's prompt rows and the frames decoded: exactly max_frames (up to a chunk), so
the talker must speak that many.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import code2wav
from .code2wav import Code2Wav, Code2WavConfig
from .code_predictor import PREFIX as CODE_PREDICTOR
from .code_predictor import CodePredictor
from .component import ModelInputError
from .config import DecoderConfig
from .speech import (
    CHUNK_SIZE,
    Speech,
    SpeechConfig,
    cache_length,
    hf_speak,
    talker_prompt_rows,
)
from .talker import Talker, capture_by_name
from .thinker import Qwen3OmniThinkerText

from .registry import SPOKEN_PROMPT  # the parts of a spoken prompt, as the manifest records them


@dataclass(frozen=True)
class SpokenConfig:
    speech: SpeechConfig
    thinker: DecoderConfig
    talker: DecoderConfig
    code_predictor: DecoderConfig
    code2wav: Code2WavConfig


class SpokenPart:
    """A part of the speech pipeline (`part`, its class; `name`, its field of SpokenConfig) compared on a
    spoken prompt: the registry's component protocol (config_from, activation_specs, input_specs,
    input_length, the constructor, tap; each taking the prompt's SPOKEN_PROMPT parts in order) over the
    whole Speech pipeline, which makes the part's input."""
    part: type
    name: str

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> SpokenConfig:
        return SpokenConfig(SpeechConfig.from_dict(d, source), Qwen3OmniThinkerText.config_from(d, source),
                            Talker.config_from(d, source), CodePredictor.config_from(d, source),
                            Code2Wav.config_from(d, source))

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
    def input_length(cls, cfg: SpokenConfig, *prompt) -> int:
        """The cache speaking it needs (what max_len bounds)."""
        x = cls.as_inputs(cfg, dict(zip(SPOKEN_PROMPT, prompt)))
        return cache_length(len(x["input_ids"]), x["max_new_tokens"], x["max_frames"])

    @classmethod
    def input_specs(cls, cfg: SpokenConfig, *prompt):
        return cls.activation_specs(cfg, cls.spec_length(cfg, cls.as_inputs(cfg, dict(zip(SPOKEN_PROMPT, prompt)))))

    @classmethod
    def activation_specs(cls, cfg: SpokenConfig, t: int):
        return cls.part.activation_specs(getattr(cfg, cls.name), t)

    def __init__(self, cfg: SpokenConfig, ckpt, max_len: int = 2048, progress: bool = False):
        self.cfg = cfg
        self.speech = Speech(ckpt.path, max_len, progress)

    def tap(self, *prompt_and_names) -> dict[str, np.ndarray]:
        *prompt, names = prompt_and_names
        return spoken_taps(self.speech, self.as_inputs(self.cfg, dict(zip(SPOKEN_PROMPT, prompt))), names)


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


class SpokenSpeech(SpokenPart):
    name = "speech"
    PARTS = (("thinker", Qwen3OmniThinkerText), ("talker", Talker), ("code_predictor", CodePredictor),
             ("code2wav", Code2Wav))

    @classmethod
    def spec_length(cls, cfg: SpokenConfig, inputs: dict) -> tuple[int, int, int, int]:
        """Per part: the prompt's tokens, the talker's prompt rows, 2, the frames code2wav decodes first."""
        ids = np.asarray(inputs["input_ids"])
        return len(ids), talker_prompt_rows(ids, cfg.speech), 2, min(int(inputs["max_frames"]), CHUNK_SIZE)

    @classmethod
    def activation_specs(cls, cfg: SpokenConfig, t):
        """In execution order; `t` as spec_length gives it, or one int for them all (the names alone)."""
        lengths = t if isinstance(t, tuple) else (t,) * len(cls.PARTS)
        return [a for (name, part), n in zip(cls.PARTS, lengths) for a in part.activation_specs(getattr(cfg, name), n)]


def split_names(names) -> dict[str, list[str]]:
    """names by the part that computes them (their namespaces are disjoint: thinker., talker.code_predictor.,
    the rest of talker., code2wav)."""
    def part(n: str) -> str:
        if n.startswith(f"{CODE_PREDICTOR}."):
            return "code_predictor"
        return next(p for p in ("thinker", "talker", "code2wav") if n.split(".")[0] == p)
    out = {p: [] for p in ("thinker", "talker", "code_predictor", "code2wav")}
    for n in names:
        out[part(n)].append(n)
    return out


def first_chunk(codes: np.ndarray, x: dict) -> np.ndarray:
    """codes [frames, 16] -> the [16, F] code2wav decodes first, F = max_frames up to a chunk (see above)."""
    frames = min(x["max_frames"], CHUNK_SIZE)
    if len(codes) < frames:
        raise ModelInputError(f"the talker spoke {len(codes)} frames, fewer than --max-frames {x['max_frames']}: "
                              f"the speech comparison decodes exactly that many; give --max-frames {len(codes)}")
    return codes[:frames].T


def spoken_taps(speech: Speech, x: dict, names) -> dict[str, np.ndarray]:
    """Speak the prompt `x` (greedy) on our kernels, then tap `names`: thinker names on its prefill, talker
    names on one forward over its prompt from position 0, code predictor names on the first frame's prefill,
    code2wav names on its first chunk of the codes spoken."""
    parts = split_names(names)
    talker_names, cp_names = parts["talker"], parts["code_predictor"]
    ids = x["input_ids"]
    result = speech.speak(ids, x["speaker"], x["max_new_tokens"], x["max_frames"], greedy=True)
    out: dict[str, np.ndarray] = {}
    if parts["thinker"]:
        out.update(speech.thinker.forward(ids, start=0, taps=parts["thinker"]))
    if talker_names:
        prompt, *_ = speech.talker_prompt(ids, len(result.text_ids), speech.cfg.speaker_id(x["speaker"]))
        out.update(speech.talker.forward(embeds=prompt, start=0, taps=talker_names))
    if cp_names:
        if not len(result.codes):
            raise ModelInputError("the talker ended before its first frame: the code predictor never ran")
        first = speech.first_frame_input(result.talker_prompt, int(result.codes[0, 0]))
        out.update(speech.code_predictor.forward(embeds=first, taps=cp_names))
    if parts["code2wav"]:
        out.update(speech.code2wav.tap(first_chunk(result.codes, x), parts["code2wav"]))
    return {n: out[n] for n in names}


# -- the HF side -------------------------------------------------------------------------------------

def hf_activations(model, names, *prompt) -> dict[str, np.ndarray]:
    """`names` (talker and code predictor activations) from Transformers' greedy generate(return_audio=True)
    of the spoken prompt (its SPOKEN_PROMPT parts in order, as the manifest holds them): the first call of
    each module, its prefill; code2wav names on the first chunk of the codes generate spoke."""
    x = dict(zip(SPOKEN_PROMPT, prompt))
    parts = split_names(names)
    spoken = {}

    def speak():
        spoken["codes"] = hf_speak(model, x["input_ids"], x["speaker"], x["max_new_tokens"], x["max_frames"])[1]
    got = capture_by_name(model, "", [n for n in names if n not in parts["code2wav"]], speak)
    if parts["code2wav"]:
        got.update(code2wav.hf_activations(model, parts["code2wav"], first_chunk(spoken["codes"], x)))
    return got
