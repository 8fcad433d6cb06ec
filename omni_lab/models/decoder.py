"""What every decoder-only language model here shares: input checks, per-length scratch buffers, one
forward as one step with tapped activations, and generation that reads back only the next token.

A model subclasses DecoderLM, names its `config_class` (with `from_dict`) and `scratch_class` (buffers for
one length), and provides `write_positions`, `_encode` and `activation_shapes` (and `tap_buffers` /
`collect` for activations that are not one [T, F] tensor).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..gpu import Tensor, runtime
from ..ops import rope, select
from .sampling import Sampler, sample_from_topk


# Greedy decode steps submitted before the host reads a token: two keep the GPU busy while the host
# encodes the next step (one more only adds steps to throw away after an EOS).
RUN_AHEAD = 2


class ModelInputError(ValueError):
    """Input a model cannot take (token id outside the vocabulary, sequence past the cache)."""


class DecoderLM:
    cfg: object          # has vocab_size and eos_ids
    max_len: int
    step_buf: Tensor     # u32 [4]: the first position of the current step, written once per step

    def _init_decoder(self) -> None:
        """After the weights: rotary frequencies, the per-step buffer, caches."""
        cfg = self.cfg
        self.inv_freq = runtime().upload(rope.rope_inv_freq(cfg.head_dim, cfg.rope_theta), "f32", label="inv_freq")
        self.step_buf = runtime().empty((4,), "u32", label="step")
        self._scratch: dict[tuple[int, int], object] = {}
        self._plans: dict[tuple, list] = {}  # recorded decode steps, replayed every token
        self.length = 0  # tokens in the KV cache

    config_class: type
    scratch_class: type

    @classmethod
    def load(cls, path, max_len: int = 2048, progress: bool = True):
        """The model of the checkpoint directory or .gguf file at `path`."""
        from .qwen3 import open_checkpoint

        ckpt = open_checkpoint(path)
        return cls(cls.config_class.from_dict(ckpt.config, source=str(path)), ckpt, max_len, progress)

    # -- provided by each model ----------------------------------------------------------------
    def write_positions(self, s, start: int, t: int) -> None:
        raise NotImplementedError

    def _encode(self, s, t: int, taps: dict, all_logits: bool) -> Tensor:
        raise NotImplementedError

    def activation_shapes(self, t: int) -> dict[str, tuple[int, int]]:
        raise NotImplementedError

    def tap_buffers(self, name: str, shape: tuple[int, int]):
        """The GPU buffer(s) a tapped activation is written to."""
        return runtime().empty(shape, label=name)

    def collect(self, name: str, values) -> np.ndarray:
        """The host array of a tapped activation from what tap_buffers' buffers read back."""
        return values

    # -- shared --------------------------------------------------------------------------------
    def scratch(self, t: int, logits_rows: int):
        key = (t, logits_rows)
        if key not in self._scratch:
            self._scratch[key] = self.scratch_class(self.cfg, t, logits_rows)
        return self._scratch[key]

    def check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ModelInputError("empty prompt: give at least one token")
        bad = ids[(ids < 0) | (ids >= self.cfg.vocab_size)]
        if bad.size:
            raise ModelInputError(f"token id {int(bad[0])} is outside the vocabulary [0, {self.cfg.vocab_size})")
        return ids.astype(np.int32)

    def _prepare(self, ids: np.ndarray, start: int, all_logits: bool):
        t = len(ids)
        if start + t > self.max_len:
            raise ModelInputError(f"{start + t} tokens exceed the KV cache of {self.max_len} (max_len)")
        rt = runtime()
        s = self.scratch(t, t if all_logits else 1)
        rt.write(s.ids, ids)
        self.write_positions(s, start, t)
        rt.write(self.step_buf, np.array([start, 0, 0, 0], np.uint32))
        return s

    def last_row(self, x: Tensor, t: int) -> Tensor:
        """The last token's row, for the LM head when only it is needed (where alignment allows binding it)."""
        row_bytes = x.nbytes // t
        if ((t - 1) * row_bytes) % runtime().gpu.offset_alignment == 0:
            return x.rows(t - 1, 1)
        return x

    def forward(self, ids, start: int | None = None, taps=(), all_logits: bool = True) -> dict[str, np.ndarray]:
        """Run tokens `ids` at positions start.. (default: after what is cached) and return the tapped
        activations (name -> [T, F] float32) plus 'logits' ([T, V], or [1, V] with all_logits=False)."""
        ids = self.check_ids(ids)
        t = len(ids)
        start = self.length if start is None else start
        shapes = self.activation_shapes(t)
        unknown = [n for n in taps if n not in shapes]
        if unknown:
            raise ModelInputError(f"no activation named {unknown[0]!r}; names are like {list(shapes)[:3]}")
        s = self._prepare(ids, start, all_logits)
        rt = runtime()
        lm_head = list(shapes)[-1]
        tapped = {n: self.tap_buffers(n, shapes[n]) for n in taps if n != lm_head or all_logits}
        with rt.step() as step:
            logits = self._encode(s, t, tapped, all_logits)
            reads = {n: (tuple(step.read(b) for b in v) if isinstance(v, tuple) else step.read(v))
                     for n, v in tapped.items()}
            reads["logits"] = step.read(logits)
        self.length = start + t
        value = lambda rb: tuple(r.value for r in rb) if isinstance(rb, tuple) else rb.value  # noqa: E731
        return {n: self.collect(n, value(rb)) for n, rb in reads.items()}

    def _plan_key(self, t: int, reads: tuple[Tensor, ...]) -> tuple:
        return (t,) + tuple(r.buffer.uid for r in reads)  # buffer uids are never reused, unlike id()

    def _next_token(self, s, t: int, sampler: Sampler | None, feed: Tensor) -> int:
        """Record a forward and pick the next token on the GPU, writing it into `feed` (the next step's
        ids buffer); only the token id (or the top-k candidates when sampling) is read back. A decode
        step (t = 1) is the same every token, since positions live in GPU buffers: it is recorded once
        and replayed."""
        rt = runtime()
        reads = (feed,) if sampler is None else (sampler.values, sampler.indices)
        key = self._plan_key(t, reads)
        plan = self._plans.get(key)
        if plan is None:
            with rt.step() as step:
                logits = self._encode(s, t, {}, all_logits=False)
                if sampler is None:
                    select.argmax(logits, out=feed)
                else:
                    select.topk(logits, sampler.top_k, out_values=sampler.values, out_indices=sampler.indices)
                plan = list(step.dispatches)
                values = [step.read(r) for r in reads]
            values = [v.value for v in values]
            if t == 1:  # a prefill's length varies, so only decode plans are kept
                self._plans[key] = plan
        else:
            values = rt.replay(plan, reads)
        if sampler is None:
            return int(values[0][0])
        token = sample_from_topk(values[0][0], values[1][0], sampler)
        rt.write(feed, np.array([token], np.int32))
        return token

    def _queue_decode(self, s, pos: int):
        """Submit a recorded greedy decode step at position `pos` without waiting for it (see generate)."""
        rt = runtime()
        self.write_positions(s, pos, 1)
        rt.write(self.step_buf, np.array([pos, 0, 0, 0], np.uint32))
        return rt.replay_async(self._plans[self._plan_key(1, (s.ids,))], (s.ids,))

    def generate(self, prompt_ids, max_new_tokens: int, sampler: Sampler | None = None,
                 stop_at_eos: bool = True) -> list[int]:
        """Greedy (sampler=None) or sampled continuation of prompt_ids; the KV cache starts empty.

        Greedy decoding runs RUN_AHEAD steps ahead: the next token never leaves the GPU (argmax writes it
        into the next step's ids), so the host submits the following step before reading this one's token,
        and the GPU is not idle while the host encodes. After an EOS the steps already submitted are
        discarded (their cache rows lie past `length`)."""
        ids = self.check_ids(prompt_ids)
        if len(ids) + max_new_tokens > self.max_len:
            raise ModelInputError(f"prompt {len(ids)} + {max_new_tokens} new tokens exceed max_len {self.max_len}")
        rt = runtime()
        if sampler is not None:
            sampler.bind(rt)
        decode = self.scratch(1, 1)
        prefill = self._prepare(ids, 0, all_logits=False)
        out: list[int] = []
        token = self._next_token(prefill, len(ids), sampler, decode.ids)
        pos = len(ids)
        eos = set(self.cfg.eos_ids) if stop_at_eos else set()
        in_flight: deque = deque()
        while True:
            out.append(token)
            if len(out) >= max_new_tokens or token in eos:
                break
            if sampler is None and self._plan_key(1, (decode.ids,)) in self._plans:
                while len(in_flight) < RUN_AHEAD and len(out) + len(in_flight) < max_new_tokens:
                    in_flight.append(self._queue_decode(decode, pos + len(in_flight)))
                token = int(in_flight.popleft().values()[0][0])
            else:
                # The token is already in decode.ids (written on the GPU, or by the sampler); only positions change.
                self.write_positions(decode, pos, 1)
                rt.write(self.step_buf, np.array([pos, 0, 0, 0], np.uint32))
                token = self._next_token(decode, 1, sampler, decode.ids)
            pos += 1
        for step in in_flight:  # past an EOS: wait, so their staging buffers return to the pool
            step.values()
        self.length = pos
        return out
