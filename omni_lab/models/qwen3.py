"""Dense Qwen3 (Qwen3ForCausalLM) on our kernels: prefill, decode with a GPU KV cache, generation.

Attributes mirror the checkpoint keys; activations are named by the HF module paths that forward hooks
see (`model.embed_tokens`, `model.layers.{i}.self_attn`, `model.layers.{i}.mlp`, `model.layers.{i}`,
`model.norm`, `lm_head`). A forward is one step: every dispatch goes into one command encoder, and only
the next token id, or the activations a caller taps, are read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..formats.safetensors_io import Checkpoint
from ..gpu import Tensor, runtime
from ..ops import attention as attn_ops
from ..ops import elementwise, embedding, linear, norm, rope, select
from .config import Qwen3Config
from .sampling import Sampler, sample_from_topk


class ModelInputError(ValueError):
    """Input a model cannot take (token id outside the vocabulary, sequence past the cache)."""


def open_checkpoint(path: str | Path):
    """A safetensors checkpoint directory or a GGUF file, behind the same reader interface."""
    path = Path(path)
    if path.suffix == ".gguf":
        from ..formats.gguf_io import GGUFCheckpoint

        return GGUFCheckpoint(path)
    return Checkpoint(path)


def upload_weight(ckpt, name: str, shape: tuple[int, ...]):
    """One linear weight to the GPU in its stored format (bf16/f16/f32 as is; Q8_0 as int8 blocks)."""
    ckpt.expect(name, shape)
    array, dtype = ckpt.get(name)
    if dtype == "q8_0":
        from ..formats.q8_0 import upload_q8_0

        return upload_q8_0(array, shape)
    if dtype not in linear.WEIGHT_DTYPES:
        array, dtype = ckpt.get_f32(name), "f32"
    return runtime().upload(array, dtype, label=name)


def apply_linear(x: Tensor, w, out: Tensor) -> Tensor:
    if isinstance(w, Tensor):
        return linear.linear(x, w, out)
    from ..ops.q8_0 import q8_linear

    return q8_linear(x, w, out)


ATTENTION_WEIGHTS = ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm")


def load_attention(ckpt, key, d: int, hq: int, hkv: int, dh: int) -> dict:
    """The QK-norm attention weights of one layer, by attribute name. `key(attr)` is the checkpoint key of
    `self_attn.<attr>.weight` (the dense model and the Omni thinker store them under different prefixes)."""
    rt = runtime()
    shapes = {"q_proj": (hq * dh, d), "k_proj": (hkv * dh, d), "v_proj": (hkv * dh, d), "o_proj": (d, hq * dh)}
    out = {a: upload_weight(ckpt, key(a), shape) for a, shape in shapes.items()}
    for a in ("q_norm", "k_norm"):
        ckpt.expect(key(a), (dh,))
        out[a] = rt.upload(ckpt.get_f32(key(a)), "f32", label=key(a))
    return out


def self_attention(L, x: Tensor, s, t: int, heads: tuple[int, int, int], eps: float, rotate, step_buf: Tensor,
                   window: int, out: Tensor) -> Tensor:
    """Qwen3's attention block (projections, per-head QK RMSNorm, rotary, KV-cache append, causal GQA,
    output projection) for t tokens of normed input x [T, D] -> out [T, D]. L holds ATTENTION_WEIGHTS and
    cache_k/cache_v; s holds the q, k, v, attn buffers; rotate(heads [T, H, Dh]) rotates in place."""
    hq, hkv, dh = heads
    q = apply_linear(x, L.q_proj, s.q)
    k = apply_linear(x, L.k_proj, s.k)
    v = apply_linear(x, L.v_proj, s.v)
    q_heads = q.view((t, hq, dh))  # [T, Hq*Dh] -> [T, Hq, Dh]
    k_heads = k.view((t, hkv, dh))
    norm.rmsnorm(q.view((t * hq, dh)), L.q_norm, eps, out=q.view((t * hq, dh)))
    norm.rmsnorm(k.view((t * hkv, dh)), L.k_norm, eps, out=k.view((t * hkv, dh)))
    rotate(q_heads)
    rotate(k_heads)
    attn_ops.kv_append(k_heads, v.view((t, hkv, dh)), L.cache_k, L.cache_v, step_buf)
    attn_ops.attention(q_heads, L.cache_k, L.cache_v, step_buf, scale=dh ** -0.5, window=window,
                       out=s.attn.view((t, hq, dh)))
    return apply_linear(s.attn, L.o_proj, out)


@dataclass
class Layer:
    q_proj: object
    k_proj: object
    v_proj: object
    o_proj: object
    q_norm: Tensor
    k_norm: Tensor
    input_layernorm: Tensor
    post_attention_layernorm: Tensor
    gate_proj: object
    up_proj: object
    down_proj: object
    cache_k: Tensor
    cache_v: Tensor


class Scratch:
    """Activation buffers for one sequence length T, allocated once and reused every step."""

    def __init__(self, cfg: Qwen3Config, t: int, logits_rows: int):
        rt = runtime()
        d, hq, hkv, dh, f = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.intermediate_size
        self.ids = rt.empty((t,), "i32", "ids")
        self.positions = rt.empty((t,), "i32", "positions")
        self.h = rt.empty((t, d), label="residual")
        self.x = rt.empty((t, d), label="normed")
        self.q = rt.empty((t, hq * dh), label="q")
        self.k = rt.empty((t, hkv * dh), label="k")
        self.v = rt.empty((t, hkv * dh), label="v")
        self.attn = rt.empty((t, hq * dh), label="attn")
        self.o = rt.empty((t, d), label="attn_out")
        self.gate = rt.empty((t, f), label="gate")
        self.up = rt.empty((t, f), label="up")
        self.act = rt.empty((t, f), label="act")
        self.mlp = rt.empty((t, d), label="mlp_out")
        self.logits = rt.empty((logits_rows, cfg.vocab_size), label="logits")


class Qwen3:
    def __init__(self, cfg: Qwen3Config, ckpt, max_len: int = 2048, progress: bool = True):
        self.cfg = cfg
        self.max_len = max_len
        rt = runtime()
        d, hq, hkv, dh, f, v = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                                cfg.head_dim, cfg.intermediate_size, cfg.vocab_size)
        norm_f32 = lambda name, n: (ckpt.expect(name, (n,)), rt.upload(ckpt.get_f32(name), "f32", label=name))[1]  # noqa: E731
        bar = tqdm(total=cfg.num_hidden_layers + 2, desc=f"loading {Path(str(getattr(ckpt, 'path', ''))).name}",
                   disable=not progress, unit="part")
        self.embed_tokens = upload_weight(ckpt, "model.embed_tokens.weight", (v, d))
        tied_head = self.embed_tokens
        if not isinstance(self.embed_tokens, Tensor):
            # A Q8_0 table serves as the tied LM head (matvec), but the gather reads an f32 copy: the
            # dequantized values (f16 scale x int8) are exact in f32 and not in bf16 or f16.
            self.embed_tokens = rt.upload(ckpt.get_f32("model.embed_tokens.weight"), "f32", label="embed_tokens")
        bar.update()
        self.layers: list[Layer] = []
        for i in range(cfg.num_hidden_layers):
            p = f"model.layers.{i}."
            ck, cv = attn_ops.kv_cache(max_len, hkv, dh, label=f"layers.{i}")
            self.layers.append(Layer(
                **load_attention(ckpt, lambda a: f"{p}self_attn.{a}.weight", d, hq, hkv, dh),
                input_layernorm=norm_f32(p + "input_layernorm.weight", d),
                post_attention_layernorm=norm_f32(p + "post_attention_layernorm.weight", d),
                gate_proj=upload_weight(ckpt, p + "mlp.gate_proj.weight", (f, d)),
                up_proj=upload_weight(ckpt, p + "mlp.up_proj.weight", (f, d)),
                down_proj=upload_weight(ckpt, p + "mlp.down_proj.weight", (d, f)),
                cache_k=ck, cache_v=cv,
            ))
            bar.update()
        self.norm = norm_f32("model.norm.weight", d)
        if cfg.tie_word_embeddings and "lm_head.weight" not in ckpt:
            self.lm_head = tied_head
        else:
            self.lm_head = upload_weight(ckpt, "lm_head.weight", (v, d))
        bar.update()
        bar.close()
        self.inv_freq = rt.upload(rope.rope_inv_freq(dh, cfg.rope_theta), "f32", label="inv_freq")
        self.step_buf = rt.empty((4,), "u32", label="step")
        self._scratch: dict[tuple[int, int], Scratch] = {}
        self._plans: dict[tuple, list] = {}  # recorded decode steps, replayed every token
        self.length = 0  # tokens in the KV cache

    @classmethod
    def load(cls, path: str | Path, max_len: int = 2048, progress: bool = True) -> "Qwen3":
        ckpt = open_checkpoint(path)
        return cls(Qwen3Config.from_dict(ckpt.config, source=f"{path}"), ckpt, max_len, progress)

    # -- one step ------------------------------------------------------------------------------
    def scratch(self, t: int, logits_rows: int) -> Scratch:
        key = (t, logits_rows)
        if key not in self._scratch:
            self._scratch[key] = Scratch(self.cfg, t, logits_rows)
        return self._scratch[key]

    def activation_shapes(self, t: int) -> dict[str, tuple[int, int]]:
        """Every named activation in execution order, with its [tokens, features] shape."""
        d = self.cfg.hidden_size
        shapes = {"model.embed_tokens": (t, d)}
        for i in range(self.cfg.num_hidden_layers):
            shapes[f"model.layers.{i}.self_attn"] = (t, d)
            shapes[f"model.layers.{i}.mlp"] = (t, d)
            shapes[f"model.layers.{i}"] = (t, d)
        shapes["model.norm"] = (t, d)
        shapes["lm_head"] = (t, self.cfg.vocab_size)
        return shapes

    def check_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ModelInputError("empty prompt: give at least one token")
        bad = ids[(ids < 0) | (ids >= self.cfg.vocab_size)]
        if bad.size:
            raise ModelInputError(f"token id {int(bad[0])} is outside the vocabulary [0, {self.cfg.vocab_size})")
        return ids.astype(np.int32)

    def _encode(self, s: Scratch, t: int, start: int, taps: dict[str, Tensor], all_logits: bool) -> Tensor:
        """Record one forward of t tokens at positions start.. into the current step; returns the logits."""
        cfg = self.cfg
        hq, hkv, dh, eps = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, cfg.rms_norm_eps
        out = lambda name, default: taps.get(name, default)  # noqa: E731  a tapped activation gets its own buffer
        rotate = lambda heads: rope.rope(heads, s.positions, self.inv_freq, out=heads)  # noqa: E731

        h = embedding.embedding(s.ids, self.embed_tokens, out=out("model.embed_tokens", s.h))
        for i, L in enumerate(self.layers):
            p = f"model.layers.{i}"
            x = norm.rmsnorm(h, L.input_layernorm, eps, out=s.x)
            o = self_attention(L, x, s, t, (hq, hkv, dh), eps, rotate, self.step_buf, cfg.window(i),
                               out(f"{p}.self_attn", s.o))
            h = elementwise.add(h, o, out=s.h)
            x = norm.rmsnorm(h, L.post_attention_layernorm, eps, out=s.x)
            gate = apply_linear(x, L.gate_proj, s.gate)
            up = apply_linear(x, L.up_proj, s.up)
            act = elementwise.swiglu(gate, up, out=s.act)
            m = apply_linear(act, L.down_proj, out(f"{p}.mlp", s.mlp))
            h = elementwise.add(h, m, out=out(p, s.h))
        x = norm.rmsnorm(h, self.norm, eps, out=out("model.norm", s.x))
        if not all_logits:
            # Only the last token's logits are needed to continue; bind its row where alignment allows.
            row_bytes = x.nbytes // t
            if ((t - 1) * row_bytes) % runtime().gpu.offset_alignment == 0:
                x = x.rows(t - 1, 1)
        return apply_linear(x, self.lm_head, out("lm_head", s.logits if s.logits.shape[0] == x.shape[0] else
                                                       runtime().empty((x.shape[0], cfg.vocab_size))))

    def forward(self, ids, start: int | None = None, taps: tuple[str, ...] | list[str] = (),
                all_logits: bool = True) -> dict[str, np.ndarray]:
        """Run tokens `ids` at positions start.. (default: after what is cached) and return the tapped
        activations (name -> [T, F] float32) plus 'logits' ([T, V], or [1, V] with all_logits=False)."""
        ids = self.check_ids(ids)
        t = len(ids)
        start = self.length if start is None else start
        if start + t > self.max_len:
            raise ModelInputError(f"{start + t} tokens exceed the KV cache of {self.max_len} (max_len)")
        shapes = self.activation_shapes(t)
        unknown = [n for n in taps if n not in shapes]
        if unknown:
            raise ModelInputError(f"no activation named {unknown[0]!r}; names are like {list(shapes)[:3]}")
        rt = runtime()
        s = self.scratch(t, t if all_logits else 1)
        rt.write(s.ids, ids)
        rt.write(s.positions, np.arange(start, start + t, dtype=np.int32))
        rt.write(self.step_buf, np.array([start, 0, 0, 0], np.uint32))
        tapped = {n: rt.empty(shapes[n], label=n) for n in taps if n != "lm_head" or all_logits}
        with rt.step() as step:
            logits = self._encode(s, t, start, tapped, all_logits)
            reads = {n: step.read(tensor) for n, tensor in tapped.items()}
            reads["logits"] = step.read(logits)
        self.length = start + t
        return {n: rb.value for n, rb in reads.items()}

    # -- generation ----------------------------------------------------------------------------
    def _next_token(self, s: Scratch, t: int, start: int, sampler: Sampler | None, feed: Tensor) -> int:
        """Record a forward and pick the next token on the GPU, writing it into `feed` (the next step's
        ids buffer); only the token id (or the top-k candidates when sampling) is read back."""
        rt = runtime()
        reads = (feed,) if sampler is None else (sampler.values, sampler.indices)
        key = (t,) + tuple(r.buffer.uid for r in reads)  # buffer uids are never reused, unlike id()
        plan = self._plans.get(key)
        if plan is None:
            with rt.step() as step:
                logits = self._encode(s, t, start, {}, all_logits=False)
                if sampler is None:
                    select.argmax(logits, out=feed)
                else:
                    select.topk(logits, sampler.top_k, out_values=sampler.values, out_indices=sampler.indices)
                plan = list(step.dispatches)
                values = [step.read(r) for r in reads]
            values = [v.value for v in values]
            if t == 1:  # decode steps repeat exactly; a prefill's length varies, so it is not kept
                self._plans[key] = plan
        else:
            values = rt.replay(plan, reads)
        if sampler is None:
            return int(values[0][0])
        token = sample_from_topk(values[0][0], values[1][0], sampler)
        rt.write(feed, np.array([token], np.int32))
        return token

    def generate(self, prompt_ids, max_new_tokens: int, sampler: Sampler | None = None,
                 stop_at_eos: bool = True) -> list[int]:
        """Greedy (sampler=None) or sampled continuation of prompt_ids; the KV cache starts empty."""
        ids = self.check_ids(prompt_ids)
        if len(ids) + max_new_tokens > self.max_len:
            raise ModelInputError(f"prompt {len(ids)} + {max_new_tokens} new tokens exceed max_len {self.max_len}")
        rt = runtime()
        if sampler is not None:
            sampler.bind(runtime())
        decode = self.scratch(1, 1)
        prefill = self.scratch(len(ids), 1)
        rt.write(prefill.ids, ids)
        rt.write(prefill.positions, np.arange(len(ids), dtype=np.int32))
        rt.write(self.step_buf, np.array([0, 0, 0, 0], np.uint32))
        out: list[int] = []
        token = self._next_token(prefill, len(ids), 0, sampler, decode.ids)
        pos = len(ids)
        eos = set(self.cfg.eos_ids) if stop_at_eos else set()
        while True:
            out.append(token)
            if len(out) >= max_new_tokens or token in eos:
                break
            # The token is already in decode.ids (written by argmax on the GPU); only positions change.
            rt.write(decode.positions, np.array([pos], np.int32))
            rt.write(self.step_buf, np.array([pos, 0, 0, 0], np.uint32))
            token = self._next_token(decode, 1, pos, sampler, decode.ids)
            pos += 1
        self.length = pos
        return out
