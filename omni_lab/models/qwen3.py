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
from ..ops import elementwise, embedding, linear, norm, rope
from .config import Qwen3Config
from .decoder import DecoderLM, ModelInputError  # noqa: F401  (ModelInputError is part of this module's API)


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


def load_embedding_and_head(ckpt, embed_name: str, head_name: str, shape: tuple[int, int], tied: bool):
    """(the table the embedding gather reads, the LM head). The head keeps its stored format; a tied head
    is the embedding's weight. A Q8_0 table serves as the head (matvec), but the gather reads an f32 copy:
    the dequantized values (f16 scale x int8) are exact in f32 and not in bf16 or f16."""
    table = upload_weight(ckpt, embed_name, shape)
    head = table if tied and head_name not in ckpt else upload_weight(ckpt, head_name, shape)
    if not isinstance(table, Tensor):
        table = runtime().upload(ckpt.get_f32(embed_name), "f32", label=embed_name)
    return table, head


def apply_linear(x: Tensor, w, out: Tensor) -> Tensor:
    if isinstance(w, Tensor):
        return linear.linear(x, w, out)
    from ..ops.q8_0 import q8_linear

    return q8_linear(x, w, out)


def apply_linears(x: Tensor, ws: tuple, outs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Several projections of the same x: one dispatch at decode (one token) where the weights allow it,
    since decode time goes to dispatches more than to bytes; otherwise one linear each."""
    if x.shape[0] == 1 and linear.multi_ok(x, ws):
        return linear.matvec_multi(x, ws, outs)
    from ..formats.q8_0 import Q8Weight

    if all(isinstance(w, Q8Weight) for w in ws):
        from ..ops.q8_0 import q8_linears

        return q8_linears(x, ws, outs)
    return tuple(apply_linear(x, w, out) for w, out in zip(ws, outs))


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


def self_attention(L, x: Tensor, s, t: int, heads: tuple[int, int, int], eps: float, rotary, step_buf: Tensor,
                   window: int, out: Tensor) -> Tensor:
    """Qwen3's attention block (projections, per-head QK RMSNorm, rotary, KV-cache append, causal GQA,
    output projection) for t tokens of normed input x [T, D] -> out [T, D]. L holds ATTENTION_WEIGHTS and
    cache_k/cache_v; s holds the q, k, v, attn buffers; rotary is (positions, inv_freq, mrope sections or
    None): [T] positions for plain RoPE, [3, T] for interleaved MRoPE."""
    hq, hkv, dh = heads
    q, k, v = apply_linears(x, (L.q_proj, L.k_proj, L.v_proj), (s.q, s.k, s.v))
    q_heads = q.view((t, hq, dh))  # [T, Hq*Dh] -> [T, Hq, Dh]
    k_heads = k.view((t, hkv, dh))
    positions, inv_freq, sections = rotary
    rope.qk_norm_rope(q_heads, k_heads, L.q_norm, L.k_norm, eps, positions, inv_freq, sections)
    attn_ops.kv_append(k_heads, v.view((t, hkv, dh)), L.cache_k, L.cache_v, step_buf)
    attn_ops.attention(q_heads, L.cache_k, L.cache_v, step_buf, scale=dh ** -0.5, window=window,
                       out=s.attn.view((t, hq, dh)))
    return apply_linear(s.attn, L.o_proj, out)


def encode_decoder(model, s, t: int, taps: dict[str, Tensor], all_logits: bool, prefix: str, lm_head_name: str,
                   rotary, window, mlp) -> Tensor:
    """Record one forward of a Qwen3-style decoder (embedding, layers of attention and MLP with
    pre-norms, final norm, LM head) for t tokens into the current step; returns the logits.

    The dense model and the Omni thinker differ only in `prefix` (their HF module path), `rotary`
    (self_attention's), `window(i)` and `mlp(i, layer, x, out)`. Each residual add is fused with the
    norm that follows it. A tapped activation is written to its own buffer from `taps`."""
    cfg, eps = model.cfg, model.cfg.rms_norm_eps
    heads = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)
    out = lambda name, default: taps.get(name, default)  # noqa: E731
    layers = model.layers

    h = embedding.embedding(s.ids, model.embed_tokens, out=out(f"{prefix}.embed_tokens", s.h))
    x = norm.rmsnorm(h, layers[0].input_layernorm, eps, out=s.x)
    for i, L in enumerate(layers):
        p = f"{prefix}.layers.{i}"
        o = self_attention(L, x, s, t, heads, eps, rotary, model.step_buf, window(i), out(f"{p}.self_attn", s.o))
        h, x = norm.add_rmsnorm(h, o, L.post_attention_layernorm, eps, out_h=s.h, out=s.x)
        m = mlp(i, L, x, out(f"{p}.mlp", s.mlp))
        last = i + 1 == len(layers)
        h, x = norm.add_rmsnorm(h, m, model.norm if last else layers[i + 1].input_layernorm, eps,
                                out_h=out(p, s.h), out=out(f"{prefix}.norm", s.x) if last else s.x)
    if not all_logits:  # only the last token's logits are needed to continue
        x = model.last_row(x, t)
    rows = x.shape[0]
    return apply_linear(x, model.lm_head, out(lm_head_name, s.logits if s.logits.shape[0] == rows else
                                                   runtime().empty((rows, cfg.vocab_size))))


@dataclass
class AttentionLayer:
    """What self_attention and encode_decoder read from a layer: ATTENTION_WEIGHTS, the two norms, the KV cache."""
    q_proj: object
    k_proj: object
    v_proj: object
    o_proj: object
    q_norm: Tensor
    k_norm: Tensor
    input_layernorm: Tensor
    post_attention_layernorm: Tensor
    cache_k: Tensor
    cache_v: Tensor


@dataclass
class Layer(AttentionLayer):
    gate_proj: object
    up_proj: object
    down_proj: object


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


class Qwen3(DecoderLM):
    config_class = Qwen3Config
    scratch_class = Scratch

    def __init__(self, cfg: Qwen3Config, ckpt, max_len: int = 2048, progress: bool = True):
        self.cfg = cfg
        self.max_len = max_len
        rt = runtime()
        d, hq, hkv, dh, f, v = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                                cfg.head_dim, cfg.intermediate_size, cfg.vocab_size)
        norm_f32 = lambda name, n: (ckpt.expect(name, (n,)), rt.upload(ckpt.get_f32(name), "f32", label=name))[1]  # noqa: E731
        bar = tqdm(total=cfg.num_hidden_layers + 2, desc=f"loading {Path(str(getattr(ckpt, 'path', ''))).name}",
                   disable=not progress, unit="part")
        self.embed_tokens, self.lm_head = load_embedding_and_head(
            ckpt, "model.embed_tokens.weight", "lm_head.weight", (v, d), cfg.tie_word_embeddings)
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
        bar.update()
        bar.close()
        self._init_decoder()

    # -- one step ------------------------------------------------------------------------------
    def write_positions(self, s: Scratch, start: int, t: int) -> None:
        runtime().write(s.positions, np.arange(start, start + t, dtype=np.int32))

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

    def _encode(self, s: Scratch, t: int, taps: dict[str, Tensor], all_logits: bool) -> Tensor:
        def mlp(i: int, L: Layer, x: Tensor, out: Tensor) -> Tensor:
            gate, up = apply_linears(x, (L.gate_proj, L.up_proj), (s.gate, s.up))
            return apply_linear(elementwise.swiglu(gate, up, out=s.act), L.down_proj, out)

        return encode_decoder(self, s, t, taps, all_logits, "model", "lm_head", (s.positions, self.inv_freq, None),
                              self.cfg.window, mlp)
