"""Text to speech on our kernels: the thinker answers, the talker speaks the answer one 80 ms frame at a time
(codebook 0), the code predictor fills codebooks 1..15, code2wav makes the waveform. Matched to
Transformers' `Qwen3OmniMoeForConditionalGeneration.generate(..., return_audio=True)`.

The talker's prompt is built on the GPU from the thinker's exported embeddings (`generate`'s user and
assistant parts: the user turns through `text_projection`, then the assistant's first three tokens, four
pads and a BOS over the codec specials and the speaker, then the first answer token over the codec BOS);
the rest of the answer trails, one row per frame. A frame is one recorded GPU submission, replayed: the
code predictor's 15 steps, the sum of the 16 code embeddings and the trailing text row, the talker's step
with its repetition penalty and suppressed ids, the next codebook 0. Only the frame's 16 codes and the next
codebook 0 come back to the host.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..formats.gguf_io import open_checkpoint
from ..gpu import Tensor, runtime
from ..ops import copy, elementwise, embedding
from ..ops import logits as logits_ops
from .code2wav import Code2Wav
from .code_predictor import CodePredictor, pick
from .component import ModelInputError, StepContext, gather_rows
from .decoder import RUN_AHEAD
from .config import ConfigError, sub_dict
from .sampling import Sampler
from .talker import Talker
from .thinker import Qwen3OmniThinkerText

# Transformers' generate(return_audio=True) defaults for the talker, and the code predictor's sampling.
TALKER_SAMPLING = dict(temperature=0.9, top_k=50, top_p=1.0)
TALKER_REPETITION_PENALTY = 1.05
CODE_PREDICTOR_SAMPLING = dict(temperature=1.0, top_k=50, top_p=0.8)
SUPPRESSED_TOP = 1024  # generate() suppresses the top 1024 talker ids but the codec EOS
CHUNK_SIZE, LEFT_CONTEXT = 300, 25  # generate()'s code2wav.chunked_decode


@dataclass(frozen=True)
class SpeechConfig:
    """The ids the speech path reads from config.json (top level and talker_config)."""
    im_start: int
    user: int
    assistant: int
    tts_bos: int
    tts_eos: int
    tts_pad: int
    codec_pad: int
    codec_bos: int
    codec_eos: int
    codec_nothink: int
    codec_think_bos: int
    codec_think_eos: int
    speakers: dict
    multimodal: tuple[int, ...]  # audio, image and video placeholders of the thinker
    audio: int | None            # the audio placeholder
    accept_hidden_layer: int     # the thinker hidden state whose rows the talker reads at placeholders

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "SpeechConfig":
        if not d.get("talker_config"):
            raise ConfigError(f"{source}: this checkpoint has no talker (no talker_config): it cannot speak")
        talker, thinker = sub_dict(d, "talker_config", source), d.get("thinker_config") or {}
        try:
            return cls(
                im_start=d["im_start_token_id"], user=d["user_token_id"], assistant=d["assistant_token_id"],
                tts_bos=d["tts_bos_token_id"], tts_eos=d["tts_eos_token_id"], tts_pad=d["tts_pad_token_id"],
                codec_pad=talker["codec_pad_id"], codec_bos=talker["codec_bos_id"], codec_eos=talker["codec_eos_token_id"],
                codec_nothink=talker["codec_nothink_id"], codec_think_bos=talker["codec_think_bos_id"],
                codec_think_eos=talker["codec_think_eos_id"], speakers=dict(talker["speaker_id"]),
                multimodal=tuple(thinker[k] for k in ("audio_token_id", "image_token_id", "video_token_id") if k in thinker),
                audio=thinker.get("audio_token_id"), accept_hidden_layer=int(talker.get("accept_hidden_layer", 0)))
        except KeyError as e:
            where = "" if e.args[0].endswith("_token_id") and not e.args[0].startswith("codec") else "talker_config."
            raise ConfigError(f"{source}: missing field {where}{e.args[0]}") from None

    def speaker_id(self, name: str) -> int:
        sid = self.speakers.get(name.lower())
        if sid is None:
            raise ModelInputError(f"unknown speaker '{name}'; this checkpoint has: {', '.join(sorted(self.speakers))}")
        return int(sid)


@dataclass
class GpuSampler:
    """Sampling parameters of one generator (talker, code predictor) and its GPU buffers: the top-k
    candidates and the counter the draw hashes (the talker's step buffer: its position, new every frame)."""
    temperature: float
    top_k: int
    top_p: float
    seed: int = 0
    values: Tensor = field(init=False, default=None)
    indices: Tensor = field(init=False, default=None)
    counter: Tensor = field(init=False, default=None)

    def __post_init__(self):
        Sampler(self.temperature, self.top_k, self.top_p)  # the same argument checks as the thinker's sampler

    def bind(self, counter: Tensor, vocab: int) -> "GpuSampler":
        """Buffers for the candidates; top-k of a vocabulary smaller than k is all of it (TopKLogitsWarper)."""
        rt = runtime()
        self.top_k = min(self.top_k, vocab)
        self.values = rt.empty((1, self.top_k), "f32", label="sample.values")
        self.indices = rt.empty((1, self.top_k), "i32", label="sample.indices")
        self.counter = counter
        return self


@dataclass
class SpeechResult:
    text_ids: list[int]       # the thinker's answer (its EOS included when it stopped there)
    codes: np.ndarray         # [frames, 16] codec codes
    talker_prompt: int        # rows of the talker's prompt
    first_frame_s: float      # seconds from the start to the first frame's codes on the host


def talker_rows(ids: np.ndarray, cfg: SpeechConfig) -> tuple[np.ndarray, int]:
    """Transformers' split of a prompt: the positions of the user turns (from an <|im_start|> whose next
    token is the user role, up to the next <|im_start|>) and the index of the last assistant turn's
    <|im_start|>."""
    n = len(ids)
    starts = np.where(ids == cfg.im_start, np.arange(n), -1)
    previous = np.maximum.accumulate(starts).clip(0)
    role = ids[np.minimum(previous + 1, n - 1)]
    user = np.flatnonzero(role == cfg.user)
    heads = np.flatnonzero((ids[:-1] == cfg.im_start) & (ids[1:] == cfg.assistant))
    if not heads.size:
        raise ModelInputError("the prompt has no assistant turn (<|im_start|>assistant): build it with the chat "
                              "template (--chat)")
    return user, int(heads[-1])


def talker_prompt_rows(ids: np.ndarray, cfg: SpeechConfig) -> int:
    """Rows of the talker's prompt for the prompt `ids` (Speech.talker_prompt builds them): the user turns,
    the assistant's first three tokens, then six rows over the codec specials (nothink, think bos, think eos,
    the speaker, pad, bos), the last of them the answer's first token."""
    user, _ = talker_rows(np.asarray(ids), cfg)
    return len(user) + 3 + 6


def cache_length(prompt: int, max_new_tokens: int, max_frames: int) -> int:
    """The max_len that speaking a prompt of `prompt` tokens needs: the thinker's prompt and answer, and the
    talker's prompt (at most the prompt's tokens plus 9 rows) and frames."""
    return prompt + max_new_tokens + max_frames + 16


class Speech:
    """The four parts of a Qwen3-Omni checkpoint that speak, on our kernels."""

    def __init__(self, path, max_len: int = 2048, progress: bool = True):
        """`path`: a checkpoint directory or .gguf file, or a checkpoint reader already open (a benchmark's
        weights in memory)."""
        ckpt = open_checkpoint(path) if isinstance(path, (str, Path)) else path
        source = str(path if isinstance(path, (str, Path)) else ckpt.path)
        self.cfg = SpeechConfig.from_dict(ckpt.config, source)
        parts = {}
        for name, cls in (("thinker", Qwen3OmniThinkerText), ("talker", Talker), ("code_predictor", CodePredictor),
                          ("code2wav", Code2Wav)):
            # code2wav's length is a chunk's, whatever the text's
            length = CHUNK_SIZE + LEFT_CONTEXT if cls is Code2Wav else max_len
            parts[name] = cls(cls.config_from(ckpt.config, source=source), ckpt, length, progress)
        self.thinker, self.talker, self.code_predictor, self.code2wav = (parts[k] for k in parts)
        if self.talker.cfg.hidden_size != self.code_predictor.cfg.hidden_size:
            raise ConfigError(f"{source}: the code predictor's hidden_size {self.code_predictor.cfg.hidden_size} is not "
                              f"the talker's {self.talker.cfg.hidden_size}: it reads the talker's hidden state")
        if self.code_predictor.groups != self.code2wav.cfg.num_quantizers:
            raise ConfigError(f"{source}: num_code_groups {self.code_predictor.groups} != code2wav's num_quantizers "
                              f"{self.code2wav.cfg.num_quantizers}")
        rt = runtime()
        th, tk, d = self.thinker, self.talker, self.talker.cfg.hidden_size
        self.thinker_embeds = th.export(f"{th.prefix}.{th.embed_name}")  # [max_len, thinker D]
        # Transformers' hidden_states[accept_hidden_layer]: index 0 is the input, i the output of layer i - 1,
        # the last the final norm (generate ties it to last_hidden_state). The talker reads it at placeholders.
        accept, layers = self.cfg.accept_hidden_layer, th.cfg.num_hidden_layers
        if not 1 <= accept <= layers:
            raise ConfigError(f"{source}: talker_config.accept_hidden_layer must be in [1, {layers}], got {accept}")
        # Exported only once an audio prompt comes (hearing): a text prompt's thinker steps copy nothing for it.
        self._hidden_name = f"{th.prefix}.norm" if accept == layers else f"{th.prefix}.layers.{accept - 1}"
        self.thinker_hidden = None
        self._ckpt, self._max_len, self._progress, self._hearing = ckpt, max_len, progress, None
        self.talker_hidden = tk.export(f"{tk.prefix}.norm")               # [max_len, D]: code predictor's input
        # The talker's text rows: the prompt's user and assistant rows, the trailing answer, tts eos / pad / bos.
        self.text_table = rt.empty((max_len + 3, d), label="speech.text_table")
        v = tk.cfg.vocab_size
        self.seen = rt.empty((v,), "u32", label="speech.seen")  # codec ids generated so far (repetition penalty)
        self.suppress = (max(v - SUPPRESSED_TOP, 0), v)
        groups = self.code_predictor.groups
        # A frame's codes, read back together: code g > 0 is picked straight into row g (rows a binding
        # offset apart, so each is bindable); codes[0], which the talker's step overwrites with the next
        # frame's code 0, is copied into row 0.
        row = rt.gpu.offset_alignment // 4
        self.frame_codes = rt.empty((groups, row), "i32", label="speech.frame_codes")
        self.codes = [rt.empty((1,), "i32", label="speech.code0")] + [
            self.frame_codes.view((1,), offset=4 * row * g) for g in range(1, groups)]
        self.code0_embed = rt.empty((1, d), label="speech.code0_embed")
        self.hidden_row = rt.empty((1, d), label="speech.hidden_row")
        self.text_row = rt.empty((1, d), label="speech.text_row")
        self.frame_sum = rt.empty((1, d), label="speech.frame_sum")
        self.last_row = rt.empty((1,), "i32", label="speech.last_row")  # talker position of the previous row
        self.trail_row = rt.empty((1,), "i32", label="speech.trail_row")  # text_table row of this frame
        self._samplers: dict[int, tuple[GpuSampler, GpuSampler]] = {}  # seed -> (talker's, code predictor's)

    @property
    def speakers(self) -> list[str]:
        return sorted(self.cfg.speakers)

    @property
    def hearing(self):
        """The audio encoder beside this thinker (models/audio_in.py), loaded at the first audio prompt."""
        if self._hearing is None:
            from .audio_in import ThinkerWithAudio

            ckpt = self._ckpt
            self._hearing = ThinkerWithAudio(ThinkerWithAudio.config_from(ckpt.config, str(ckpt.path)), ckpt,
                                             self._max_len, self._progress, thinker=self.thinker)
            self.thinker_hidden = self.thinker.export(self._hidden_name)
        return self._hearing

    # -- the talker's prompt ------------------------------------------------------------------------
    def talker_prompt(self, ids: np.ndarray, answer: int, speaker: int) -> tuple[Tensor, int, int]:
        """Build the talker's prompt embeddings [P, D] on the GPU from the thinker's exported embeddings of
        the prompt `ids` and `answer` generated tokens (all but the last were fed back, so they have
        embeddings); fill text_table. Returns (prompt, trailing start row, trailing rows)."""
        cfg = self.cfg
        user, a = talker_rows(ids, cfg)
        fed = len(ids) + answer - 1  # thinker rows with an embedding
        if fed - a < 4:
            raise ModelInputError(f"the thinker's answer has {answer} token(s): the talker needs at least one "
                                  "answer token before the end of the turn (nothing to speak)")
        # A user row at a placeholder takes the thinker's hidden state through hidden_projection, every other
        # row its embedding through text_projection (generate's _get_talker_user_parts).
        placeholder = np.isin(ids[user], cfg.multimodal)
        heard, said = user[placeholder], user[~placeholder]
        if len(heard) and self.thinker_hidden is None:
            raise ModelInputError("the prompt has placeholders but the thinker heard no audio (give features)")
        assistant = np.arange(a, fed)
        # text_table rows: the user turns' text, the assistant's first 4, the trailing answer, then eos, pad, bos.
        thinker_rows = np.concatenate([said, assistant, [-1, -1, -1]]).astype(np.int32)
        special = np.full(len(thinker_rows), -1, np.int32)
        special[-3:] = (cfg.tts_eos, cfg.tts_pad, cfg.tts_bos)
        u, r = len(said), len(thinker_rows)
        trail_start, trailing = u + 4, len(assistant) - 4 + 1  # the answer after its first token, and tts eos
        pad_row, bos_row = r - 2, r - 1
        rt = runtime()
        th, tk, d = self.thinker, self.talker, self.talker.cfg.hidden_size
        x = rt.empty((r, th.cfg.hidden_size), label="speech.text_in")
        special_x = rt.empty((r, th.cfg.hidden_size), label="speech.special_in")
        heard_table = rt.empty((max(len(heard), 1), d), label="speech.heard_rows")
        with rt.step():
            gather_rows(rt.upload(thinker_rows), self.thinker_embeds, rt.upload(special), th.embed_tokens, x, special_x)
            tk.text_projection(x, out=self.text_table.rows(0, r))
            if len(heard):
                hidden = embedding.embedding(rt.upload(heard.astype(np.int32)), self.thinker_hidden)
                tk.hidden_projection(hidden, out=heard_table)
        c = self.cfg
        # The prompt's rows: user rows from the text table or the heard rows (-1: the other), then the assistant's.
        user_text = np.full(len(user), -1)
        user_text[~placeholder] = np.arange(u)
        user_heard = np.full(len(user), -1)
        user_heard[placeholder] = np.arange(len(heard))
        text = np.concatenate([user_text, u + np.arange(3), [pad_row] * 4, [bos_row], [u + 3]]).astype(np.int32)
        heard_select = np.concatenate([user_heard, np.full(9, -1)]).astype(np.int32)
        codec = np.concatenate([np.full(len(user) + 3, -1), [c.codec_nothink, c.codec_think_bos, c.codec_think_eos,
                                                             speaker, c.codec_pad, c.codec_bos]]).astype(np.int32)
        p = len(text)
        prompt = rt.empty((p, d), label="speech.talker_prompt")
        scratch = rt.empty((p, d), label="speech.prompt_scratch")
        with rt.step():
            gather_rows(rt.upload(text), self.text_table, rt.upload(heard_select), heard_table, prompt, scratch)
            elementwise.add(prompt, embedding.embedding(rt.upload(codec), tk.embed_tokens, out=scratch), out=prompt)
        return prompt, trail_start, trailing

    def first_frame_input(self, prompt_rows: int, code0: int) -> Tensor:
        """The code predictor's first prefill input [2, D] on the GPU, as generate hands it over: the talker's
        last prompt row (its final norm, from the talker_hidden export) and code 0's codec embedding."""
        rt = runtime()
        cp = self.code_predictor
        x = rt.empty((2, self.talker.cfg.hidden_size), label="speech.first_frame")
        rt.write(self.last_row, np.array([prompt_rows - 1], np.int32))
        rt.write(self.codes[0], np.array([code0], np.int32))
        with rt.step():
            embedding.embedding(self.last_row, self.talker_hidden, out=self.hidden_row)
            embedding.embedding(self.codes[0], self.talker.embed_tokens, out=self.code0_embed)
            copy.rows_at_step(self.hidden_row, x, cp.step_bufs[0])  # row 0 (step_bufs[p] holds p)
            copy.rows_at_step(self.code0_embed, x, cp.step_bufs[1])
        return x

    # -- one frame ------------------------------------------------------------------------------------
    def _record_frame(self, talker_sampler: GpuSampler | None, cp_sampler: GpuSampler | None) -> None:
        tk, cp = self.talker, self.code_predictor
        cp.frame((self.last_row, self.talker_hidden), tk.embed_tokens, self.codes, self.frame_sum, cp_sampler)
        words = self.frame_codes.view((self.frame_codes.numel, 1))  # word 0 is row 0's code (step_bufs[0] holds 0)
        copy.rows_at_step(self.codes[0].view((1, 1)), words, cp.step_bufs[0])
        embedding.embedding(self.trail_row, self.text_table, out=self.text_row)
        elementwise.add(self.frame_sum, self.text_row, out=self.frame_sum)
        self._talker_step(tk.scratch(1, 1), 1, self.frame_sum, talker_sampler)

    def _talker_step(self, s, t: int, embeds: Tensor, sampler: GpuSampler | None) -> None:
        """The talker over t rows of embeds, then its processors and the next code 0 into codes[0]."""
        tk = self.talker
        logits = tk._encode(s, StepContext(t, s, tk.step_buf, tk._exported_taps(t)), embeds, all_logits=False)
        logits_ops.process(logits, self.seen, TALKER_REPETITION_PENALTY, self.suppress, keep=self.cfg.codec_eos)
        pick(logits, self.codes[0], sampler, stream=0)
        logits_ops.mark(self.seen, self.codes[0])

    def _write_frame_inputs(self, position: int, trail: int) -> None:
        rt = runtime()
        tk = self.talker
        s = tk.scratch(1, 1)
        tk.write_positions(s, position, 1)
        rt.write(tk.step_buf, np.array([position, 0, 0, 0], np.uint32))
        rt.write(self.last_row, np.array([position - 1], np.int32))
        rt.write(self.trail_row, np.array([trail], np.int32))

    # -- speaking -------------------------------------------------------------------------------------
    def frames(self, prompt_ids, speaker: str = "Ethan", max_new_tokens: int = 64, max_frames: int = 512,
               greedy: bool = True, seed: int = 0, thinker_sampler: Sampler | None = None,
               features=None) -> Iterator[np.ndarray]:
        """The codec frames ([16] codes each) of the spoken answer to `prompt_ids` (a chat prompt ending in
        the assistant's turn; with `features`, the mel features of the audios its placeholders stand for),
        yielded as each is made: the thinker answers (greedy unless `thinker_sampler`; the answer is then in
        `self.answer`), the talker and code predictor speak it, greedy or sampled as Transformers' defaults
        are (seeded), until the codec EOS or `max_frames`."""
        cfg = self.cfg
        speaker_id = cfg.speaker_id(speaker)
        ids = self.thinker.check_ids(prompt_ids)
        if features:
            embeds, _ = self.hearing.embeds(ids, features)
        elif np.isin(ids, cfg.multimodal).any():
            raise ModelInputError("the prompt has audio, image or video placeholders but no features were given "
                                  "(--audio FILE)")
        else:
            embeds = None
        self.answer = self.thinker.generate(ids, max_new_tokens, sampler=thinker_sampler, embeds=embeds)
        prompt, trail_start, trailing = self.talker_prompt(ids.astype(np.int64), len(self.answer), speaker_id)
        p = self.prompt_rows = prompt.shape[0]
        if p + max_frames > self.talker.max_len:
            raise ModelInputError(f"the talker's prompt ({p} rows) + {max_frames} frames exceed its cache of "
                                  f"{self.talker.max_len} (max_len)")
        rt = runtime()
        tk = self.talker
        tk_sampler = cp_sampler = None
        if not greedy:
            # Kept per seed: a recorded frame holds its sampler's buffers and seed (the plan key says which).
            if seed not in self._samplers:
                self._samplers[seed] = (
                    GpuSampler(**TALKER_SAMPLING, seed=seed).bind(tk.step_buf, tk.cfg.vocab_size),
                    GpuSampler(**CODE_PREDICTOR_SAMPLING, seed=seed + 1).bind(tk.step_buf, self.code_predictor.cfg.vocab_size))
            tk_sampler, cp_sampler = self._samplers[seed]
        rt.write(self.seen, np.zeros(tk.cfg.vocab_size, np.uint32))
        s = tk._prepare(None, p, 0, all_logits=False)
        with rt.step() as step:
            self._talker_step(s, p, prompt, tk_sampler)
            first = step.read(self.codes[0])
        code0 = int(first.value[0])
        key = ("frame", None if greedy else seed)
        reads = (self.frame_codes, self.codes[0])
        in_flight: deque = deque()

        def submit(j: int):
            self._write_frame_inputs(p + j, trail_start + min(j, trailing))
            return rt.replay_async(tk._plans[key], reads)
        try:
            for k in range(max_frames):
                if code0 == cfg.codec_eos:
                    break
                if key in tk._plans:
                    # A frame's inputs are positions, known ahead; its codes stay on the GPU. So the next
                    # frames are submitted before this one is read (the thinker's RUN_AHEAD): the GPU is
                    # not idle while the host reads and writes. Frames past the EOS are dropped.
                    while len(in_flight) < RUN_AHEAD and k + len(in_flight) < max_frames:
                        in_flight.append(submit(k + len(in_flight)))
                    codes, nxt = in_flight.popleft().values()
                else:
                    self._write_frame_inputs(p + k, trail_start + min(k, trailing))
                    codes, nxt = tk.plan(key, lambda: self._record_frame(tk_sampler, cp_sampler), reads)
                tk.length = p + k + 1
                yield codes[:, 0].astype(np.int64)
                code0 = int(nxt[0])
        finally:
            for step in in_flight:  # submitted past the EOS (or the caller stopped): wait, so staging returns
                step.values()

    def speak(self, prompt_ids, speaker: str = "Ethan", max_new_tokens: int = 64, max_frames: int = 512,
              greedy: bool = True, seed: int = 0, thinker_sampler: Sampler | None = None,
              features=None) -> SpeechResult:
        """All of `frames` at once, timed to the first frame."""
        start = time.perf_counter()
        frames, first = [], 0.0
        for frame in self.frames(prompt_ids, speaker, max_new_tokens, max_frames, greedy, seed, thinker_sampler,
                                 features):
            first = first or time.perf_counter() - start
            frames.append(frame)
        return SpeechResult(self.answer, np.array(frames, np.int64).reshape(-1, self.code_predictor.groups),
                            self.prompt_rows, first)

    def vocode(self, codes: np.ndarray, chunk_size: int = CHUNK_SIZE, left_context: int = LEFT_CONTEXT) -> np.ndarray:
        """The waveform of codes [frames, 16], decoded as Transformers' generate does (chunked_decode)."""
        return self.code2wav.chunked_decode(np.asarray(codes).T, chunk_size, left_context)


# -- the HF side -------------------------------------------------------------------------------------

def hf_speak(model, prompt_ids, speaker: str = "Ethan", max_new_tokens: int = 64, max_frames: int = 512,
             greedy: bool = True, features=None) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Transformers' generate(return_audio=True): (answer ids, codes [frames, 16], waveform [samples]),
    with the audios' `features` as the processor hands them when given. The codes are what generate hands
    code2wav (caught at its chunked_decode)."""
    import torch

    from .audio_in import hf_inputs

    caught = {}
    code2wav = model.code2wav
    original = code2wav.chunked_decode

    def catch(codes, *args, **kwargs):
        caught["codes"] = codes[0].T.detach().numpy().astype(np.int64)
        return original(codes, *args, **kwargs)

    code2wav.chunked_decode = catch
    ids = torch.as_tensor(np.asarray(prompt_ids, np.int64))[None]
    inputs = hf_inputs(prompt_ids, features) if features else {"input_ids": ids}
    try:
        with torch.no_grad():
            sequences, wav = model.generate(
                **inputs, speaker=speaker, thinker_max_new_tokens=max_new_tokens,
                thinker_eos_token_id=model.config.im_end_token_id, thinker_do_sample=not greedy,
                talker_max_new_tokens=max_frames + 1, talker_do_sample=not greedy)
    finally:
        del code2wav.chunked_decode
    answer = sequences[0, ids.shape[1]:].tolist()
    return answer, caught["codes"], wav.reshape(-1).float().numpy()
