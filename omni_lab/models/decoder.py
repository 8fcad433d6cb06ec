"""A Qwen3-style decoder as a component: embedding (or embeddings from another component), pre-norm
layers of attention and MLP, final norm, LM head; prefill and decode over a GPU KV cache, generation
that reads back only the next token.

Dense Qwen3 and the thinker's text model are this class with their own checkpoint names and positions
(models/qwen3.py, models/thinker.py); the talker and the code predictor will be too. A subclass gives
`prefix` (its HF module path), `lm_head_name`, `write_positions` and a loader that builds `layers`.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..activations import Activation
from ..errors import warn_non_finite
from ..gpu import Tensor, runtime
from ..ops import elementwise, embedding, rope, select
from .component import Component, ModelInputError, StepContext, embeddings_input
from .config import DecoderConfig
from .layers import DecoderLayer, LayerHook, Normed, Rotary, linear, residual_norm
from .sampling import Sampler, sample_from_topk

__all__ = ["Decoder", "ModelInputError"]

# Greedy decode steps submitted before the host reads a token: two keep the GPU busy while the host
# encodes the next step (one more only adds steps to throw away after an EOS).
RUN_AHEAD = 2


def router_name(prefix: str, layer: int) -> str:
    """The routing activation of a MoE layer: not a module of its own in HF (its router is `mlp.gate`)."""
    return f"{prefix}.layers.{layer}.mlp.router"


class Decoder(Component):
    cfg: DecoderConfig
    prefix: str          # "model", "thinker.model.language_model"
    lm_head_name: str    # "lm_head", "thinker.lm_head"
    # The input activation: the embedding's output, or (the talker, the code predictor, which only ever take
    # embeddings other parts made) the model's `inputs_embeds`.
    embed_name: str = "embed_tokens"
    embed_tokens: object  # Tensor, or a Q8Weight (gathered from its blocks)
    lm_head: object
    layers: list[DecoderLayer]
    norm: Tensor
    source: object = None  # the checkpoint's path, named by a non-finite warning (load_decoder sets it)
    _top_value: Tensor | None = None
    _warned = False  # this generate has warned of non-finite logits already

    def _init_decoder(self, ckpt) -> None:
        """After the weights: rotary frequencies, the per-step buffer, caches, layer hooks."""
        cfg = self.cfg
        self.inv_freq = runtime().upload(rope.rope_inv_freq(cfg.head_dim, cfg.rope_theta), "f32", label="inv_freq")
        self.hooks: dict[int, LayerHook] = {}  # layer index -> work after that layer (DeepStack)
        self._init_component(ckpt)

    # -- provided by each decoder --------------------------------------------------------------
    def write_positions(self, s, start: int, t: int) -> None:
        raise NotImplementedError

    def rotary(self, s) -> Rotary:
        raise NotImplementedError

    # -- the component -------------------------------------------------------------------------
    def activations(self, t: int) -> list[Activation]:
        return self.activation_specs(self.cfg, t)

    @classmethod
    def activation_specs(cls, cfg: DecoderConfig, t: int) -> list[Activation]:
        """Every named activation in execution order: [T, hidden] floats, the routing of MoE layers
        ([T, 2k]: expert ids, then their weights, slots in descending probability, torch.topk's order),
        the logits [T, vocab]."""
        d, p = cfg.hidden_size, cls.prefix
        out = [Activation(f"{p}.{cls.embed_name}", (t, d))]
        for i in range(cfg.num_hidden_layers):
            out.append(Activation(f"{p}.layers.{i}.self_attn", (t, d)))
            if cfg.is_moe(i):
                out.append(Activation(router_name(p, i), (t, 2 * cfg.num_experts_per_tok), kind="routing"))
            out += [Activation(f"{p}.layers.{i}.mlp", (t, d)), Activation(f"{p}.layers.{i}", (t, d))]
        return out + [Activation(f"{p}.norm", (t, d)), Activation(cls.head_name(t), (t, cfg.vocab_size))]

    @classmethod
    def head_name(cls, t: int) -> str:
        """The logits' activation name for a forward of t rows (the code predictor's head depends on t)."""
        return cls.lm_head_name

    def scratch_shapes(self, t: int, rows: int) -> dict:
        cfg = self.cfg
        d, hq, hkv, dh, f = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size
        shapes = {
            "ids": ((t,), "i32"), "h": ((t, d), "f32"), "h2": ((t, d), "f32"), "x": ((t, d), "f32"),
            "q": ((t, hq * dh), "f32"), "k": ((t, hkv * dh), "f32"), "v": ((t, hkv * dh), "f32"),
            "attn": ((t, hq * dh), "f32"), "o": ((t, d), "f32"), "scaled": ((t, d), "f32"),
            "gate": ((t, f), "f32"), "up": ((t, f), "f32"), "act": ((t, f), "f32"), "mlp": ((t, d), "f32"),
            "logits": ((rows, cfg.vocab_size), "f32"),
        }
        if cfg.num_experts:
            e, k, fe = cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size
            shapes.update(router_logits=((t, e), "f32"), route_w=((t, k), "f32"), route_e=((t, k), "i32"),
                          e_act=((t, k, fe), "f32"))
        if cfg.shared_expert_intermediate_size:
            fs = cfg.shared_expert_intermediate_size
            shapes.update(shared_gate=((t, fs), "f32"), shared_up=((t, fs), "f32"), shared_act=((t, fs), "f32"),
                          shared_out=((t, d), "f32"), shared_logit=((t, 1), "f32"))
        return shapes

    def _encode(self, s, ctx: StepContext, embeds: Tensor | None = None, all_logits: bool = True) -> Tensor:
        """Record one forward of t tokens into the current step; returns the logits."""
        cfg, p, t = self.cfg, self.prefix, ctx.t
        if embeds is None:
            h = embedding.embedding(s.ids, self.embed_tokens, out=ctx.out(f"{p}.{self.embed_name}", s.h))
        else:
            h = embeddings_input(embeds, t, cfg.hidden_size, ctx.out(f"{p}.{self.embed_name}", s.h))
        self._export_rows(ctx, f"{p}.{self.embed_name}", h)
        x = self.layers_forward(h, ctx)
        if not all_logits:  # only the last token's logits are needed to continue
            x = self.last_row(x, t)
        rows = x.shape[0]
        logits = ctx.out(self.head_name(t), s.logits if s.logits.shape[0] == rows else
                         runtime().empty((rows, cfg.vocab_size)))
        return linear(x, self.lm_head, logits)

    def layers_forward(self, h: Tensor, ctx: StepContext, rotary: Rotary | None = None) -> Tensor:
        """The layers over the residual stream h [T, D]; returns the final norm's output.

        Each residual add goes with the norm that reads its result (the layer's post-attention norm, the
        next layer's input norm, or the final norm) as a Normed: one add_rmsnorm, or at decode no dispatch at
        all, inside the projections that read it. The stream alternates between two buffers (the fused form
        reads one while writing the other). After the last layer, a layer with a hook (whose work sits
        between the add and the norm) or an exported layer, the add and the norm are recorded there.
        `rotary`: the step's positions where they are not the scratch's (the code predictor's 16 steps in
        one submission)."""
        eps, p, s = self.cfg.rms_norm_eps, self.prefix, ctx.s
        rotary = rotary or self.rotary(s)
        layers = self.layers

        def other(h: Tensor) -> Tensor:
            return s.h2 if h.buffer is s.h.buffer and h.offset == s.h.offset else s.h

        x = Normed(h, None, layers[0].input_layernorm, eps, None, s.x)
        for i, layer in enumerate(layers):
            name = f"{p}.layers.{i}"
            o = layer.self_attn(x, ctx, rotary, ctx.out(f"{name}.self_attn", s.o))
            if layer.self_attn_layer_scale is not None:
                o = elementwise.mul(o, layer.self_attn_layer_scale, out=s.scaled)
            x = Normed(h, o, layer.post_attention_layernorm, eps, other(h), s.x)
            h = x.h_out
            m = layer.mlp(x, ctx, ctx.out(f"{name}.mlp", s.mlp))
            if layer.mlp_layer_scale is not None:
                m = elementwise.mul(m, layer.mlp_layer_scale, out=s.scaled)
            last, hook = i + 1 == len(layers), self.hooks.get(i)
            out_h = ctx.out(name, other(h))
            if last or hook is not None or name in self.exports:
                layer_out, h, x = residual_norm(h, m, self.norm if last else layers[i + 1].input_layernorm, eps,
                                                out_h=out_h, out=ctx.out(f"{p}.norm", s.x) if last else s.x,
                                                hook=hook, ctx=ctx)
                self._export_rows(ctx, name, layer_out)  # a layer's hidden state, as HF's output_hidden_states
            else:
                x = Normed(h, m, layers[i + 1].input_layernorm, eps, out_h, s.x)
                h = out_h
        self._export_rows(ctx, f"{p}.norm", x)
        return x

    # -- running -------------------------------------------------------------------------------
    input_name = "input_ids"

    @classmethod
    def input_length(cls, cfg: DecoderConfig, ids) -> int:
        return int(np.asarray(ids).size)

    def tap(self, ids, names) -> dict[str, np.ndarray]:
        """The named activations of one forward over ids from position 0 (what the workbench compares)."""
        out = self.forward(ids, start=0, taps=names)
        return {n: out[n] for n in names}

    def check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ModelInputError("empty prompt: give at least one token")
        bad = ids[(ids < 0) | (ids >= self.cfg.vocab_size)]
        if bad.size:
            raise ModelInputError(f"token id {int(bad[0])} is outside the vocabulary [0, {self.cfg.vocab_size})")
        return ids.astype(np.int32)

    def _prepare(self, ids: np.ndarray | None, t: int, start: int, all_logits: bool):
        if start + t > self.max_len:
            raise ModelInputError(f"{start + t} tokens exceed the KV cache of {self.max_len} (max_len)")
        rt = runtime()
        s = self.scratch(t, t if all_logits else 1)
        if ids is not None:
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

    def forward(self, ids=None, start: int | None = None, taps=(), all_logits: bool = True,
                embeds: Tensor | None = None) -> dict[str, np.ndarray]:
        """Run tokens `ids`, or embeddings another component made on the GPU (`embeds` [T, D]), at
        positions start.. (default: after what is cached); return the tapped activations (name -> array
        of its declared shape) plus 'logits' ([T, V], or [1, V] with all_logits=False)."""
        if (ids is None) == (embeds is None):
            raise ModelInputError("give token ids or embeddings, not both or neither")
        if ids is not None:
            ids = self.check_ids(ids)
        t = len(ids) if ids is not None else embeds.shape[0]
        start = self.length if start is None else start
        specs = self.check_taps(t, taps)
        s = self._prepare(ids, t, start, all_logits)
        rt = runtime()
        tapped = {n: self.tap_buffers(specs[n]) for n in taps if n != self.head_name(t) or all_logits}
        with rt.step(flush=True) as step:  # the inputs were written by _prepare, before any dispatch
            taps_all = {**self._exported_taps(t), **tapped}
            logits = self._encode(s, StepContext(t, s, self.step_buf, taps_all), embeds, all_logits)
            reads = self.read_taps(step, tapped)
            reads["logits"] = step.read(logits)
        self.length = start + t
        out = self.collect_reads(specs, reads)
        if not np.isfinite(out["logits"]).all():
            warn_non_finite(self.source, "the logits")
        return out

    def _top(self) -> Tensor:
        """[1] f32: the greedy argmax's top logit, read with the id (NaN or inf: non-finite logits)."""
        if self._top_value is None:
            self._top_value = runtime().empty((1,), "f32", label="next_token.top")
        return self._top_value

    def _next_token(self, s, t: int, sampler: Sampler | None, feed: Tensor, embeds: Tensor | None = None) -> int:
        """Record a forward and pick the next token on the GPU, writing it into `feed` (the next step's
        ids buffer); only the token id and its logit (or the top-k candidates when sampling) are read back.
        A decode step (t = 1) is the same every token, since positions live in GPU buffers: it is recorded
        once and replayed under its plan key. The read-back logits warn when non-finite (`finite`)."""
        reads = (feed, self._top()) if sampler is None else (sampler.values, sampler.indices)

        def record() -> None:
            ctx = StepContext(t, s, self.step_buf, self._exported_taps(t))
            logits = self._encode(s, ctx, embeds, all_logits=False)
            if sampler is None:
                select.argmax(logits, out=feed, top=self._top())
            else:
                select.topk(logits, sampler.top_k, out_values=sampler.values, out_indices=sampler.indices)

        key = self.decode_key(t, reads)
        values = self.plan(key, record, reads, flush=t != 1)  # a prefill's inputs are written before it
        if t != 1:  # a prefill's length varies, so only decode plans are kept
            del self._plans[key]
        self.finite(values[1] if sampler is None else values[0])
        if sampler is None:
            return int(values[0][0])
        token = sample_from_topk(values[0][0], values[1][0], sampler)
        runtime().write(feed, np.array([token], np.int32))
        return token

    @staticmethod
    def decode_key(t: int, reads: tuple[Tensor, ...]) -> tuple:
        """The plan key of a forward of t tokens that ends in `reads` (argmax into the next ids, or the
        sampler's top-k): buffer uids are never reused, unlike id()."""
        return ("next_token", t) + tuple(r.buffer.uid for r in reads)

    def finite(self, top: np.ndarray) -> None:
        """Warn, once a generate, when a next token's top logit (the argmax's, or the first of the top-k
        values: NaN ranks above everything, so one NaN logit makes it NaN) is NaN or inf."""
        if not self._warned and not np.isfinite(top.flat[0]):
            self._warned = True
            warn_non_finite(self.source, "the logits of a generated token")

    def _queue_decode(self, s, pos: int):
        """Submit a recorded greedy decode step at position `pos` without waiting for it (see generate)."""
        rt = runtime()
        self.write_positions(s, pos, 1)
        rt.write(self.step_buf, np.array([pos, 0, 0, 0], np.uint32))
        reads = (s.ids, self._top())
        return rt.replay_async(self._plans[self.decode_key(1, reads)], reads)

    def generate(self, prompt_ids, max_new_tokens: int, sampler: Sampler | None = None,
                 stop_at_eos: bool = True, embeds: Tensor | None = None) -> list[int]:
        """Greedy (sampler=None) or sampled continuation of prompt_ids; the KV cache starts empty. `embeds`
        ([T, D] on the GPU, another component's) is the prefill's input in place of the ids' embeddings
        (an audio prompt's merged embeddings); the ids still bound the length.

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
        self._warned = False
        prefill = self._prepare(ids, len(ids), 0, all_logits=False)
        out: list[int] = []
        token = self._next_token(prefill, len(ids), sampler, decode.ids, embeds)
        pos = len(ids)
        eos = set(self.cfg.eos_ids) if stop_at_eos else set()
        in_flight: deque = deque()
        while True:
            out.append(token)
            if len(out) >= max_new_tokens or token in eos:
                break
            if sampler is None and self.decode_key(1, (decode.ids, self._top())) in self._plans:
                while len(in_flight) < RUN_AHEAD and len(out) + len(in_flight) < max_new_tokens:
                    in_flight.append(self._queue_decode(decode, pos + len(in_flight)))
                values = in_flight.popleft().values()
                self.finite(values[1])
                token = int(values[0][0])
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
