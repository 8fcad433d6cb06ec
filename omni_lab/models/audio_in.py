"""Audio prompts to the Qwen3-Omni thinker: audio files -> 16 kHz mono -> the checkpoint's own log-mel
features (its feature extractor, through Transformers) -> the audio encoder -> the thinker, whose audio
placeholder tokens are replaced by the encoder's rows on the GPU.

- Files are read with soundfile (wav, flac, ogg, ...), channels mixed down by their mean, resampled to
  16 kHz with soxr (HQ). An empty file, a file soundfile cannot read, a cut one (formats/audio_file.py: a
  WAV or Ogg shorter than its container says, which soundfile reads short without a word), a silent one, or
  one whose encoder frames do not fit the model is refused with one error naming the file.
- Features: the checkpoint's feature extractor (preprocessor_config.json; WhisperFeatureExtractor for the
  released model) called as Qwen3OmniMoeProcessor calls it (all audios at once, padding to the longest, no
  truncation, with the attention mask), each audio's valid frames kept.
- The prompt: the tokenizer's chat template with one audio part per file and the text, each audio's
  placeholder widened to its encoder frame count (the processor's replace_audio_token).
- Positions: for a prompt of text and audio (no image, no video) transformers 5.24's get_rope_index gives
  every token, audio included, the same position in the three MRoPE streams, counting from 0 (text, the
  audio start mark, the audio's frames, its end mark, more text: each arange continues the last), which are
  the thinker's text positions; `position_id_per_seconds` only spaces video frames.
- The merge (get_placeholder_mask, masked_scatter): the token embeddings with the placeholders' rows zero
  (a gather of id -1 gives zeros), plus the encoder's rows gathered to the placeholders' positions (zeros
  elsewhere): two gathers and an add in one GPU step, exact.

The thinker's first activation with audio is its input embeddings after the merge,
`thinker.model.language_model.inputs_embeds` (the kwarg the text model receives); Transformers' own
`...language_model.embed_tokens` is the embedding before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..formats.audio_file import truncation
from ..gpu import Tensor, runtime
from ..ops import elementwise, embedding
from . import audio_encoder as enc
from .audio_encoder import AudioEncoder, AudioEncoderConfig
from .component import ModelInputError
from .config import DecoderConfig, Fields, sub_dict
from .thinker import LIVE, Qwen3OmniThinkerText

SAMPLE_RATE = 16000
INPUTS_EMBEDS = f"{LIVE}.inputs_embeds"


class AudioFileError(InputError):
    """An audio file we cannot take; the message names the file."""


def read_audio(path: str | Path) -> np.ndarray:
    """The file's samples as float32 mono at 16 kHz."""
    import soundfile as sf
    import soxr

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path}: the file is empty")
    cut = truncation(path)
    if cut:
        raise AudioFileError(f"{path}: {cut}")
    try:
        with sf.SoundFile(str(path)) as f:
            declared, rate = f.frames, f.samplerate
            samples = f.read(dtype="float32", always_2d=True)  # [N, channels]
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioFileError(f"{path}: not an audio file soundfile can read (wav, flac, ogg, ...): {e}") from None
    if samples.shape[0] < declared:  # a header that keeps its length (FLAC's STREAMINFO) and a cut body
        raise AudioFileError(f"{path}: the file is truncated: its header declares {declared} frames, "
                             f"{declared - samples.shape[0]} of them are missing")
    if samples.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds no samples")
    if not np.isfinite(samples).all():
        raise AudioFileError(f"{path}: samples hold NaN or inf")
    mono = samples.mean(axis=1)
    if not np.any(mono):
        raise AudioFileError(f"{path}: the audio is silent (every sample is 0)")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, np.float32)


def audio_features(model_dir: str | Path, waves: list[np.ndarray]) -> list[np.ndarray]:
    """[M, L] float32 log-mel features per 16 kHz wave, from the checkpoint's own feature extractor."""
    from transformers import AutoFeatureExtractor

    model_dir = Path(model_dir)
    if not (model_dir / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no preprocessor_config.json (the feature extractor audio needs)")
    fe = AutoFeatureExtractor.from_pretrained(model_dir, local_files_only=True)
    out = fe(list(waves), sampling_rate=SAMPLE_RATE, padding=True, truncation=False, return_attention_mask=True,
             return_tensors="np")
    lengths = out["attention_mask"].sum(-1)
    return [np.ascontiguousarray(f[:, :n], np.float32) for f, n in zip(out["input_features"], lengths)]


def load_audio_inputs(model_dir: str | Path, files, max_tokens: int) -> list[np.ndarray]:
    """Features of each file, refusing one whose encoder frames exceed `max_tokens` (named with the limit
    in seconds)."""
    waves = [read_audio(f) for f in files]
    feats = audio_features(model_dir, waves)
    for f, w, x in zip(files, waves, feats):
        n = enc.output_length(x.shape[1])
        if n > max_tokens:
            limit = max_tokens / enc.FRAMES_PER_CHUNK_OUT  # a second of audio is 13 encoder frames
            raise AudioFileError(f"{f}: {len(w) / SAMPLE_RATE:.1f} s of audio is {n} audio tokens; this model takes "
                                 f"at most {max_tokens} (about {limit:.0f} s; raise max_len)")
    return feats


def audio_prompt_ids(model_dir: str | Path, n_frames: list[int], text: str | None) -> np.ndarray:
    """The chat prompt of one user turn (the audios, then the text) with each audio's placeholder widened to
    its encoder frame count."""
    return chat_prompt_ids(model_dir, [("audio", enc.output_length(n)) for n in n_frames], text)


PLACEHOLDERS = {"audio": "<|audio_pad|>", "image": "<|image_pad|>"}


def chat_prompt_ids(model_dir: str | Path, parts: list[tuple[str, int]], text: str | None) -> np.ndarray:
    """The chat prompt of one user turn: the media parts ("audio" or "image", in order: audios first, then
    images, as Qwen3OmniMoeProcessor's chat template lists them), then the text, each part's placeholder
    widened to its token count (the processor's replace_audio_token / replace_image_token)."""
    from ..workbench import tokenizer_for

    tok = tokenizer_for(model_dir)
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"{model_dir}: the tokenizer has no chat template, which an audio or image prompt needs")
    content = [{"type": kind} for kind, _ in parts] + ([{"type": "text", "text": text}] if text else [])
    ids = tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    ids = np.asarray(ids, np.int64).reshape(-1)
    pads = {kind: tok.convert_tokens_to_ids(token) for kind, token in PLACEHOLDERS.items()}
    at = np.flatnonzero(np.isin(ids, list(pads.values())))
    if len(at) != len(parts) or any(ids[i] != pads[kind] for i, (kind, _) in zip(at, parts)):
        raise ValueError(f"{model_dir}: the chat template gave {len(at)} placeholders for {len(parts)} media parts "
                         f"({', '.join(k for k, _ in parts)})")
    pieces, last = [], 0
    for i, (kind, n) in zip(at, parts):
        pieces += [ids[last:i], np.full(n, pads[kind], np.int64)]
        last = i + 1
    return np.concatenate(pieces + [ids[last:]])


@dataclass(frozen=True)
class AudioThinkerConfig:
    encoder: AudioEncoderConfig
    thinker: DecoderConfig
    audio_token_id: int  # thinker_config.audio_token_id: the placeholder the encoder's rows replace


class ThinkerWithAudio:
    """The audio encoder and the thinker of one checkpoint: prompts whose audio placeholders (the config's
    `audio_token_id`, one per encoder frame, the audios in order) take the encoder's output. The thinker
    component of the registry for inputs (input_ids, input_features). `max_len` bounds both the prompt
    (the thinker's cache) and the encoder frames."""

    def __init__(self, cfg: AudioThinkerConfig, ckpt, max_len: int = 2048, progress: bool = False,
                 thinker: Qwen3OmniThinkerText | None = None):
        """`thinker`: one already loaded from `ckpt` (the speech pipeline's, whose exports the talker reads)."""
        self.cfg = cfg
        self.encoder = AudioEncoder(cfg.encoder, ckpt, max_len, progress)
        self.thinker = thinker or Qwen3OmniThinkerText(cfg.thinker, ckpt, max_len, progress)
        self.audio_token_id = cfg.audio_token_id
        self._merge_ids: dict[int, tuple[Tensor, ...]] = {}

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> AudioThinkerConfig:
        token = Fields(sub_dict(d, "thinker_config", source), source, "thinker_config.").int("audio_token_id", lo=0)
        return AudioThinkerConfig(AudioEncoder.config_from(d, source), Qwen3OmniThinkerText.config_from(d, source), token)

    @classmethod
    def load(cls, path, max_len: int = 2048, progress: bool = False) -> "ThinkerWithAudio":
        from .registry import open_checkpoint

        ckpt = open_checkpoint(path)
        return cls(cls.config_from(ckpt.config, str(path)), ckpt, max_len, progress)

    @classmethod
    def input_specs(cls, cfg: AudioThinkerConfig, ids, features) -> list:
        """Encoder activations, then the thinker's with its merged input in place of embed_tokens."""
        lengths = [np.shape(a)[1] for a in enc.as_features(cfg.encoder, features)]
        thinker = Qwen3OmniThinkerText.activation_specs(cfg.thinker, len(ids))
        first = thinker[0]
        return (AudioEncoder.activation_specs(cfg.encoder, lengths)
                + [type(first)(INPUTS_EMBEDS, first.shape, first.layout, first.kind)] + thinker[1:])

    @classmethod
    def input_length(cls, cfg: AudioThinkerConfig, ids, features) -> int:
        """What max_len must hold: the prompt's tokens and the encoder's frames."""
        return max(len(ids), AudioEncoder.input_length(cfg.encoder, features))

    def activations(self, ids, features) -> list:
        return self.input_specs(self.cfg, ids, features)

    def tap(self, ids, features, names) -> dict[str, np.ndarray]:
        """The named activations of one prefill over the prompt and its audios (what the workbench compares)."""
        out = self.forward(ids, features, taps=names)
        return {n: out[n] for n in names}

    def embeds(self, ids, features, taps=()) -> tuple[Tensor, dict[str, np.ndarray]]:
        """The thinker's input embeddings [T, D] on the GPU, and the tapped encoder activations."""
        ids = self.thinker.check_ids(ids)
        lay, feats = self.encoder.prepare(features)
        at = np.flatnonzero(ids == self.audio_token_id)
        if len(at) != lay.t:
            raise ModelInputError(f"the prompt has {len(at)} audio placeholders (id {self.audio_token_id}) but the "
                                  f"audios give {lay.t} encoder frames ({lay.per_audio})")
        t, d = len(ids), self.thinker.cfg.hidden_size
        rt = runtime()
        text_ids, audio_rows, text_rows, audio_placed, out = self._merge_buffers(t, d)
        text = ids.copy()
        text[at] = -1  # the placeholders' rows gather nothing: zeros
        rows = np.full(t, -1, np.int32)
        rows[at] = np.arange(lay.t, dtype=np.int32)  # encoder row of each placeholder, in order
        rt.write(text_ids, text)
        rt.write(audio_rows, rows)
        specs = self.encoder.check_taps(lay.lengths, taps)
        tapped = {n: self.encoder.tap_buffers(specs[n]) for n in taps if n != enc.OUTPUT}
        with rt.step() as step:
            audio = self.encoder.encode(lay, feats, tapped)
            emb = embedding.embedding(text_ids, self.thinker.embed_tokens, out=text_rows)
            placed = embedding.embedding(audio_rows, audio, out=audio_placed)
            elementwise.add(emb, placed, out=out)
            reads = self.encoder.read_taps(step, tapped)
            if enc.OUTPUT in taps:
                reads[enc.OUTPUT] = step.read(audio)
        return out, self.encoder.collect_reads(specs, reads)

    def _merge_buffers(self, t: int, d: int) -> tuple[Tensor, ...]:
        """(text ids, encoder row per token, their two gathers, the merged embeddings) of a prompt of t tokens."""
        if t not in self._merge_ids:
            rt = runtime()
            self._merge_ids[t] = (rt.empty((t,), "i32", label="audio_in.text_ids"),
                                  rt.empty((t,), "i32", label="audio_in.audio_rows"),
                                  rt.empty((t, d), label="audio_in.text_rows"),
                                  rt.empty((t, d), label="audio_in.audio_placed"),
                                  rt.empty((t, d), label="audio_in.inputs_embeds"))
        return self._merge_ids[t]

    def forward(self, ids, features, taps=(), all_logits: bool = True) -> dict[str, np.ndarray]:
        """Encoder and thinker activations of one prefill (names of `activations`), plus 'logits' ([T, V], or
        the last token's [1, V] with all_logits=False)."""
        encoder_names = {a.name for a in self.encoder.activations([1])}
        mine = [n for n in taps if n in encoder_names]
        thinker_taps = [f"{LIVE}.embed_tokens" if n == INPUTS_EMBEDS else n for n in taps if n not in encoder_names]
        embeds, got = self.embeds(ids, features, mine)
        out = self.thinker.forward(embeds=embeds, start=0, taps=thinker_taps, all_logits=all_logits)
        if f"{LIVE}.embed_tokens" in out:  # with embeddings as input, the decoder's first tap is that input
            out[INPUTS_EMBEDS] = out.pop(f"{LIVE}.embed_tokens")
        return {**got, **out}

    def generate(self, ids, features, max_new_tokens: int, sampler=None, stop_at_eos: bool = True) -> list[int]:
        embeds, _ = self.embeds(ids, features)
        return self.thinker.generate(ids, max_new_tokens, sampler, stop_at_eos, embeds=embeds)


# -- the HF side -------------------------------------------------------------------------------------

def hf_inputs(ids, features) -> dict:
    """The thinker's forward kwargs for a prompt with audio, as Qwen3OmniMoeProcessor hands them: features
    [audios, M, Lmax] padded with zeros and their mask."""
    import torch

    feats = [np.asarray(a, np.float32) for a in features]
    longest = max(a.shape[1] for a in feats)
    padded = np.zeros((len(feats), feats[0].shape[0], longest), np.float32)
    mask = np.zeros((len(feats), longest), np.int64)
    for i, a in enumerate(feats):
        padded[i, :, :a.shape[1]] = a
        mask[i, :a.shape[1]] = 1
    ids = torch.as_tensor(np.asarray(ids, np.int64)[None])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "input_features": torch.from_numpy(padded),
            "feature_attention_mask": torch.from_numpy(mask)}


def hf_activations(model, activation_names, ids, features) -> dict[str, np.ndarray]:
    """Our activation names (ThinkerWithAudio.activations) on a transformers Qwen3OmniMoeForConditionalGeneration,
    one thinker forward over the prompt with its audios."""
    from . import thinker as thinker_side

    names = list(activation_names)
    tower = model.thinker.model.audio_tower
    got: dict[str, np.ndarray] = {}
    handles = enc.tower_hooks(tower, names, got)
    if INPUTS_EMBEDS in names:
        def grab(module, args, kwargs):
            got[INPUTS_EMBEDS] = kwargs["inputs_embeds"][0].detach().float().numpy().copy()  # [1, T, D] -> [T, D]
        handles.append(model.thinker.model.language_model.register_forward_pre_hook(grab, with_kwargs=True))
    rest = [n for n in names if n not in enc.OWN_HOOKS and n != INPUTS_EMBEDS]
    try:
        acts = thinker_side.hf_activations(model, rest, ids, forward_kwargs=hf_inputs(ids, features))
    finally:
        for h in handles:
            h.remove()
    # In the order asked (ThinkerWithAudio.activations: execution order), not hooks' then capture's: the merged
    # embeddings come after the whole encoder, and a stored reference's order is what first divergence reads.
    merged = {**got, **acts}
    return {n: merged[n] for n in names}


def hf_generate(model, ids, features, max_new_tokens: int):
    """Transformers' greedy thinker.generate over the prompt with its audios (scores kept)."""
    return model.thinker.generate(**hf_inputs(ids, features), max_new_tokens=max_new_tokens,
                                  min_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                                  return_dict_in_generate=True)
