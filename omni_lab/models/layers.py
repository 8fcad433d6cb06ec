"""Layer objects that read like the model: `o = layer.self_attn(x, ctx, out)`, `m = layer.mlp(x, ctx, out)`.

Attributes mirror the checkpoint keys under a layer (`self_attn.q_proj`, `mlp.gate_proj`, `mlp.gate`,
`mlp.experts.gate_up_proj` as `mlp.gate_up_proj`); each layer records its dispatches into the open step.
A weight is a Tensor (f32/f16/bf16) or a Q8Weight; `linear` and `linears` pick the kernel for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..formats.q8_0 import Q8Weight
from ..gpu import Tensor
from ..ops import attention as attn_ops
from ..ops import elementwise
from ..ops import linear as linear_ops
from ..ops import moe, norm, rope
from .component import StepContext


def linear(x: Tensor, w, out: Tensor) -> Tensor:
    if isinstance(w, Tensor):
        return linear_ops.linear(x, w, out)
    from ..ops.q8_0 import q8_linear

    return q8_linear(x, w, out)


def linears(x: Tensor, ws: tuple, outs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Several projections of the same x: one dispatch at decode (one token) where the weights allow it,
    since decode time goes to dispatches more than to bytes; otherwise one linear each."""
    if x.shape[0] == 1 and linear_ops.multi_ok(x, ws):
        return linear_ops.matvec_multi(x, ws, outs)
    if all(isinstance(w, Q8Weight) for w in ws):
        from ..ops.q8_0 import q8_linears

        return q8_linears(x, ws, outs)
    return tuple(linear(x, w, out) for w, out in zip(ws, outs))


@dataclass
class Rotary:
    """A decoder's rotary embedding: positions [T] (plain RoPE) or [3, T] (interleaved MRoPE with
    `sections`), in the step's scratch, and the inverse frequencies."""
    positions: Tensor
    inv_freq: Tensor
    sections: tuple[int, int, int] | None = None


@dataclass
class Attention:
    """Qwen3's attention: projections, per-head QK RMSNorm (Qwen3, the thinker; code2wav's transformer has
    none: q_norm and k_norm None), rotary, KV-cache append, causal GQA over the cache (a sliding window when
    window > 0), output projection."""
    q_proj: object
    k_proj: object
    v_proj: object
    o_proj: object
    q_norm: Tensor | None
    k_norm: Tensor | None
    cache_k: Tensor
    cache_v: Tensor
    heads: tuple[int, int, int]   # (query heads, kv heads, head dim)
    eps: float
    window: int = 0

    def __call__(self, x: Tensor, ctx: StepContext, rotary: Rotary, out: Tensor) -> Tensor:
        """x [T, D] normed -> out [T, D]."""
        hq, hkv, dh = self.heads
        t, s = ctx.t, ctx.s
        q, k, v = linears(x, (self.q_proj, self.k_proj, self.v_proj), (s.q, s.k, s.v))
        q_heads = q.view((t, hq, dh))  # [T, Hq*Dh] -> [T, Hq, Dh]
        k_heads = k.view((t, hkv, dh))
        if self.q_norm is not None:
            rope.qk_norm_rope(q_heads, k_heads, self.q_norm, self.k_norm, self.eps, rotary.positions,
                              rotary.inv_freq, rotary.sections)
        else:  # code2wav's transformer: plain RoPE, in place
            for heads in (q_heads, k_heads):
                rope.rope(heads, rotary.positions, rotary.inv_freq, out=heads)
        attn_ops.kv_append(k_heads, v.view((t, hkv, dh)), self.cache_k, self.cache_v, ctx.step_buf)
        attn_ops.attention(q_heads, self.cache_k, self.cache_v, ctx.step_buf, scale=dh ** -0.5, window=self.window,
                           out=s.attn.view((t, hq, dh)))
        return linear(s.attn, self.o_proj, out)


@dataclass
class DenseMlp:
    """SwiGLU MLP: down(silu(gate(x)) * up(x)). `scratch` prefixes the names of its [T, F] buffers in the
    step's scratch ("shared_" for a MoE block's shared expert, whose F is its own)."""
    gate_proj: object
    up_proj: object
    down_proj: object
    scratch: str = ""

    def __call__(self, x: Tensor, ctx: StepContext, out: Tensor) -> Tensor:
        s, p = ctx.s, self.scratch
        gate, up = linears(x, (self.gate_proj, self.up_proj), (getattr(s, p + "gate"), getattr(s, p + "up")))
        return linear(elementwise.swiglu(gate, up, out=getattr(s, p + "act")), self.down_proj, out)


@dataclass
class MoeMlp:
    """Top-k routed experts (Qwen3-Omni's sparse MoE block): the router (`mlp.gate`) and its softmax,
    top-k and renormalisation on the GPU, then the selected experts' SwiGLU in two dispatches, per
    (token, slot) pair or, from `grouped_from` tokens, grouped by expert. `router_name` is the routing
    activation (`...mlp.router`) a caller may tap."""
    gate: object          # router [E, D]
    gate_up_proj: object  # [E, 2F, D]: per expert F gate_proj rows, then F up_proj rows
    down_proj: object     # [E, D, F]
    top_k: int
    norm_topk_prob: bool
    router_name: str
    grouped_from: int | None = None  # None: moe.grouped_from, by the experts' storage
    # The talker's blocks add a shared expert, gated per token: + sigmoid(x . shared_expert_gate) * shared(x)
    shared_expert: DenseMlp | None = None
    shared_expert_gate: object = None  # [1, D]

    @property
    def num_experts(self) -> int:
        return self.gate.shape[0]

    def __call__(self, x: Tensor, ctx: StepContext, out: Tensor) -> Tensor:
        s, t = ctx.s, ctx.t
        w_buf, e_buf = ctx.taps.get(self.router_name) or (s.route_w, s.route_e)
        logits = linear(x, self.gate, s.router_logits)  # [T, E]
        weights, experts = moe.route(logits, self.top_k, self.norm_topk_prob, out_weights=w_buf, out_experts=e_buf)
        grouped = t >= (self.grouped_from or moe.grouped_from(self.gate_up_proj))
        groups = moe.group_pairs(experts, self.num_experts) if grouped else None
        act = moe.experts_gate_up(x, self.gate_up_proj, experts, out=s.e_act, groups=groups)  # [T, k, F]
        out = moe.experts_down(act, self.down_proj, experts, weights, out=out, groups=groups)
        if groups:
            groups.release()  # the next layer's dispatches run after these: its groups can reuse the buffers
        if self.shared_expert is not None:
            shared = self.shared_expert(x, ctx, s.shared_out)
            logit = linear(x, self.shared_expert_gate, s.shared_logit)  # [T, 1]
            gated = elementwise.gate(shared, logit.view((t,)), out=shared)
            out = elementwise.add(out, gated, out=out)
        return out


@dataclass
class DecoderLayer:
    """A pre-norm decoder layer. Its residual adds are fused with the norm that follows them; the fusion
    lives in Decoder.layers_forward, the one place that knows which norm comes next. LayerScale (code2wav's
    transformer): the attention's and the MLP's outputs times a learnt vector before their residual add."""
    input_layernorm: Tensor
    self_attn: Attention
    post_attention_layernorm: Tensor
    mlp: DenseMlp | MoeMlp
    self_attn_layer_scale: Tensor | None = None
    mlp_layer_scale: Tensor | None = None


class LayerHook:
    """Work added to the residual stream after a layer, before the next layer's norm reads it (DeepStack
    adds vision features into the thinker's first layers). `__call__(h, ctx)` records it and returns the
    stream the next layer reads: h itself, changed in place (the layer's activation then includes the work),
    or another buffer (the layer's activation stays the layer's own output, which is where Transformers'
    DeepStack adds: after the decoder layer returns)."""

    def __call__(self, h: Tensor, ctx: StepContext) -> Tensor:
        raise NotImplementedError


def residual_norm(h: Tensor, delta: Tensor, weight: Tensor, eps: float, out_h: Tensor, out: Tensor,
                  hook: LayerHook | None = None, ctx: StepContext | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """h + delta, then RMSNorm with the next norm's weight: one dispatch, or, with a hook between the
    add and the norm, an add, the hook and the norm. Returns (the layer's output h + delta, the stream the
    next layer reads, the norm's output)."""
    if hook is None:
        h, x = norm.add_rmsnorm(h, delta, weight, eps, out_h=out_h, out=out)
        return h, h, x
    layer_out = elementwise.add(h, delta, out=out_h)
    stream = hook(layer_out, ctx)
    return layer_out, stream, norm.rmsnorm(stream, weight, eps, out=out)
