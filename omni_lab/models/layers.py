"""Layer objects that read like the model: `o = layer.self_attn(x, ctx, out)`, `m = layer.mlp(x, ctx, out)`.

Attributes mirror the checkpoint keys under a layer (`self_attn.q_proj`, `mlp.gate_proj`, `mlp.gate`,
`mlp.experts.gate_up_proj` as `mlp.gate_up_proj`); each layer records its dispatches into the open step.
A weight is a Tensor (f32/f16/bf16) or a Q8Weight; `linear` and `linears` pick the kernel for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..formats.q8_0 import QK, Q8Weight
from ..gpu import Tensor, runtime
from ..ops import attention as attn_ops
from ..ops import elementwise
from ..ops import linear as linear_ops
from ..ops import moe, norm, rope
from ..ops.q8_0 import (fuses_quantization, q8_decode_path, q8_linear, q8_linears, q8_matmul, q8_matvec_multi_norm,
                         q8_matvec_multi_quantized, q8_matvec_quantized, q8_matvec_swiglu, q8_multi_quantized_ok,
                         q8_norm_multi_ok, q8_prefill_path)
from .component import StepContext


@dataclass
class Normed:
    """x = rmsnorm(h + delta) * weight (delta None: rmsnorm(h)), not computed yet. A decode projection that is
    x's one reader forms it in its own workgroups (ops.linear.matvec_multi_norm: the residual add and the
    norm cost no dispatch); any other reader calls `value()`, one add_rmsnorm (or rmsnorm) into `out`.
    h + delta goes to `h_out`, which is not h: in the fused form every workgroup reads h while one of them
    writes h_out."""
    h: Tensor
    delta: Tensor | None
    weight: Tensor
    eps: float
    h_out: Tensor | None
    out: Tensor
    state: str = "pending"  # "pending", "value" (in out), "fused" (read by one projection, out never written)

    def value(self) -> Tensor:
        if self.state == "fused":
            raise RuntimeError("Normed.value: x was formed inside the projection that read it, not in out")
        if self.state == "pending":
            if self.delta is None:
                norm.rmsnorm(self.h, self.weight, self.eps, out=self.out)
            else:
                norm.add_rmsnorm(self.h, self.delta, self.weight, self.eps, out_h=self.h_out, out=self.out)
            self.state = "value"
        return self.out

    def quantized(self) -> tuple[Tensor, Tensor] | None:
        """x's value and its Q8_0 int8 blocks in one dispatch (ops.norm.add_rmsnorm_q8), for Q8_0 readers of
        x that take int8 activations: at one token the router and the experts, where the tuning table keeps
        the separate quantize pass; over several tokens (prefill on the dot4 q8_prefill_path) every Q8_0
        projection of x. Scratch (xq, xd) the caller releases ([K/4], [K/32] at one token, [T, K/4], [T, K/32]
        over T). None where that does not apply (x is then pending)."""
        t, k = self.h.shape[0], self.h.shape[-1]
        if self.state != "pending" or self.delta is None or k % 32 or not t:
            return None
        if t == 1 and (q8_decode_path() != "dot4" or fuses_quantization(k)):
            return None
        if t > 1 and q8_prefill_path() != "dot4":
            return None
        rt = runtime()
        lead = () if t == 1 else (t,)
        xq, xd = rt.scratch(lead + (k // 4,), "u32"), rt.scratch(lead + (k // 32,), "f32")
        norm.add_rmsnorm_q8(self.h, self.delta, self.weight, self.eps, self.h_out, self.out, (xq, xd))
        self.state = "value"
        return xq, xd

    def project(self, ws: tuple, outs: tuple[Tensor, ...], keep: bool = False) -> tuple[Tensor, ...] | None:
        """The projections of x in one fused dispatch, or None where they do not qualify. keep: x is read
        by others after them (a MoE block's experts after its router): the dispatch writes it to out too."""
        if self.state != "pending" or self.h.shape[0] != 1:
            return None
        if linear_ops.norm_multi_ok(self.h, ws):
            if keep:
                self.state = "value"
                return linear_ops.matvec_multi_norm(self.h, self.delta, self.weight, self.eps, ws, outs,
                                                    out_h=self.h_out, out_x=self.out)
            fused = linear_ops.matvec_multi_norm
        elif keep:
            return None
        elif all(isinstance(w, Q8Weight) for w in ws) and q8_decode_path() == "dot4" and q8_norm_multi_ok(self.h, ws):
            fused = q8_matvec_multi_norm
        elif all(isinstance(w, Q8Weight) for w in ws) and q8_multi_quantized_ok(self.h, ws):
            # x quantized by the norm's own dispatch where the table keeps the separate pass (x is in out too)
            xq = self.quantized()
            if xq is None:
                return None
            ys = q8_matvec_multi_quantized(*xq, ws, outs)
            for scratch in xq:
                scratch.release()  # later dispatches run after this one: the scratch is free again
            return ys
        else:
            return None
        self.state = "fused"
        return fused(self.h, self.delta, self.weight, self.eps, ws, outs, out_h=self.h_out)


def value(x) -> Tensor:
    """x itself, or a Normed's value."""
    return x.value() if isinstance(x, Normed) else x


def linear(x: Tensor, w, out: Tensor) -> Tensor:
    x = value(x)
    if isinstance(w, Tensor):
        return linear_ops.linear(x, w, out)
    return q8_linear(x, w, out)


def linears(x: Tensor, ws: tuple, outs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Several projections of the same x: one dispatch at decode (one token) where the weights allow it,
    since decode time goes to dispatches more than to bytes; otherwise one linear each. x may be a Normed:
    at decode its norm then joins the same dispatch."""
    if isinstance(x, Normed):
        fused = x.project(ws, outs)
        if fused is not None:
            return fused
        if x.h.shape[0] > 1 and all(isinstance(w, Q8Weight) for w in ws):
            xq = x.quantized()  # prefill on the dot4 path: the norm quantizes x for all the projections
            if xq is not None:
                ys = q8_linears(x.value(), ws, outs, quantized=xq)
                for scratch in xq:
                    scratch.release()  # later dispatches run after these: the scratch is free again
                return ys
        x = x.value()
    if x.shape[0] == 1 and linear_ops.multi_ok(x, ws):
        return linear_ops.matvec_multi(x, ws, outs)
    if all(isinstance(w, Q8Weight) for w in ws):
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

    def __call__(self, x: "Tensor | Normed", ctx: StepContext, rotary: Rotary, out: Tensor) -> Tensor:
        """x [T, D] normed -> out [T, D]."""
        hq, hkv, dh = self.heads
        t, s = ctx.t, ctx.s
        q, k, v = linears(x, (self.q_proj, self.k_proj, self.v_proj), (s.q, s.k, s.v))
        q_heads = q.view((t, hq, dh))  # [T, Hq*Dh] -> [T, Hq, Dh]
        k_heads = k.view((t, hkv, dh))
        v_heads = v.view((t, hkv, dh))
        attn = s.attn.view((t, hq, dh))
        if self.q_norm is not None and attn_ops.fuses_norm_rope(t, self.cache_k):
            # Decode: the norms, the rotation and the cache append inside the attention's one dispatch, which
            # also quantizes its output for an int8 o_proj (no quantize pass before it).
            xq = self._o_proj_input(hq * dh, dh)
            attn_ops.attention_norm_rope(q_heads, k_heads, v_heads, self.q_norm, self.k_norm, self.eps,
                                         rotary.positions, rotary.inv_freq, rotary.sections, self.cache_k,
                                         self.cache_v, ctx.step_buf, dh ** -0.5, self.window, out=attn, quantized=xq)
            if xq is None:
                return linear(s.attn, self.o_proj, out)
            y = q8_matvec_quantized(*xq, self.o_proj, out, vector_shape=s.attn.shape)
            for scratch in xq:
                scratch.release()  # later dispatches run after this one: the scratch is free again
            return y
        if self.q_norm is not None:  # the norms, the rotation and the cache append in one dispatch
            rope.qk_norm_rope(q_heads, k_heads, self.q_norm, self.k_norm, self.eps, rotary.positions,
                              rotary.inv_freq, rotary.sections, append=(v_heads, self.cache_k, self.cache_v, ctx.step_buf))
        else:  # code2wav's transformer: plain RoPE, in place
            for heads in (q_heads, k_heads):
                rope.rope(heads, rotary.positions, rotary.inv_freq, out=heads)
            attn_ops.kv_append(k_heads, v_heads, self.cache_k, self.cache_v, ctx.step_buf)
        attn_ops.attention(q_heads, self.cache_k, self.cache_v, ctx.step_buf, scale=dh ** -0.5, window=self.window,
                           out=attn)
        return linear(s.attn, self.o_proj, out)

    def _o_proj_input(self, k: int, dh: int) -> tuple[Tensor, Tensor] | None:
        """Scratch for the decode attention's Q8_0 output ([K/4] u32, [K/32] f32), which o_proj's int8 matvec
        reads as they are: where o_proj is Q8_0 on the dot4 decode path and a head holds whole blocks. They
        are the int8 values q8_matvec makes of the f32 output (both by quantize_act's code), so the projection
        is the same, one quantize dispatch fewer where the tuning table keeps the separate pass (and no
        staging of x in every workgroup where it does not); None elsewhere."""
        if not isinstance(self.o_proj, Q8Weight) or dh % 32 or q8_decode_path() != "dot4":
            return None
        rt = runtime()
        return rt.scratch((k // 4,), "u32"), rt.scratch((k // 32,), "f32")


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
        return self.down(gate, up, ctx, out)

    def down(self, gate: Tensor, up: Tensor, ctx: StepContext, out: Tensor) -> Tensor:
        """down_proj(silu(gate) * up); at decode the product is formed inside the matvec (one dispatch)."""
        if ctx.t == 1 and linear_ops.swiglu_ok(gate, up, self.down_proj):
            return linear_ops.matvec_swiglu(gate, up, self.down_proj, out)
        if ctx.t == 1 and isinstance(self.down_proj, Q8Weight):
            return q8_matvec_swiglu(gate, up, self.down_proj, out)
        return linear(elementwise.swiglu(gate, up, out=getattr(ctx.s, self.scratch + "act")), self.down_proj, out)


@dataclass
class MoeMlp:
    """Top-k routed experts (Qwen3-Omni's sparse MoE block): the router (`mlp.gate`) and its softmax,
    top-k and renormalisation on the GPU, then the selected experts' SwiGLU in two dispatches, per
    (token, slot) pair or, from `grouped_from` tokens, grouped by expert. At decode (moe.routed_ok) the
    softmax and top-k run inside the experts' gate_up dispatch. `router_name` is the routing activation
    (`...mlp.router`) a caller may tap."""
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
        # The router, the experts and the shared expert all read x; Q8_0 router and experts read one
        # quantization of it, made with the norm.
        q8 = isinstance(self.gate, Q8Weight) and isinstance(self.gate_up_proj, Q8Weight)
        xq = x.quantized() if q8 and isinstance(x, Normed) else None
        # 16-bit: the router's matvec forms x itself, and writes it for the experts
        routed = None if xq or not isinstance(x, Normed) else x.project((self.gate,), (s.router_logits,), keep=True)
        x = value(x)
        w_buf, e_buf = ctx.taps.get(self.router_name) or (s.route_w, s.route_e)
        if routed is not None:
            (logits,) = routed
        elif xq is None:
            logits = linear(x, self.gate, s.router_logits)  # [T, E]
        elif t == 1:
            logits = q8_matvec_quantized(*xq, self.gate, s.router_logits, vector_shape=x.shape)
        else:
            logits = q8_matmul(x, self.gate, s.router_logits, quantized=xq)
        grouped = t >= (self.grouped_from or moe.grouped_from(self.gate_up_proj))
        groups = act_blocks = None
        if not grouped and moe.routed_ok(t, self.gate_up_proj, self.down_proj):
            # Decode: gate_up routes the token itself (no route dispatch) and, Q8_0, writes down's int8 input
            # (no quantize dispatch); it writes the route to w_buf / e_buf for down and the taps.
            if isinstance(self.gate_up_proj, Q8Weight):
                f, rt = self.gate_up_proj.shape[1] // 2, runtime()
                act_blocks = (rt.scratch((self.top_k, f // 4), "u32"), rt.scratch((self.top_k, f // QK), "f32"))
            act, weights, experts = moe.experts_gate_up_routed(
                x, self.gate_up_proj, logits, self.top_k, self.norm_topk_prob, out_weights=w_buf, out_experts=e_buf,
                out=act_blocks or s.e_act, quantized=xq)
        else:
            weights, experts = moe.route(logits, self.top_k, self.norm_topk_prob, out_weights=w_buf, out_experts=e_buf)
            groups = moe.group_pairs(experts, self.num_experts) if grouped else None
            act = moe.experts_gate_up(x, self.gate_up_proj, experts, out=s.e_act, groups=groups, quantized=xq)  # [T, k, F]
        out = moe.experts_down(act, self.down_proj, experts, weights, out=out, groups=groups)
        for scratch in (groups, *(xq or ()), *(act_blocks or ())):
            if scratch:
                scratch.release()  # the next layer's dispatches run after these: it can reuse the buffers
        if self.shared_expert is not None:
            # The shared expert's gate and up projections and its gate logit read the same x: one matvec
            # at decode; the gated output joins the routed sum in one dispatch.
            se = self.shared_expert
            gate, up, logit = linears(x, (se.gate_proj, se.up_proj, self.shared_expert_gate),
                                      (s.shared_gate, s.shared_up, s.shared_logit))  # logit [T, 1]
            shared = se.down(gate, up, ctx, s.shared_out)
            out = elementwise.gate_add(out, shared, logit.view((t,)))
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
