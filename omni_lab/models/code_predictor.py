"""Qwen3-Omni's code predictor on our kernels: the talker's last hidden state and codebook 0 in, codebooks
1..15 of the frame out.

A dense Qwen3 decoder (QK-norm attention, plain RoPE) with one codec embedding and one head per residual
codebook: per frame it reads [talker hidden, talker codec_embedding(code 0)] at positions 0 and 1, then
codec_embedding[g - 1](code g) at position g + 1 for g = 1..14; head g - 1 at the row of position g gives
code g. Its KV cache restarts every frame (every frame writes positions 0.. again).

Transformers runs the first two positions as one prefill (`generate` with two input embeddings). Here every
position is its own one-row step, so that the whole frame, 16 steps and their heads, is one recorded GPU
submission: positions and step buffers are 16 constant buffers, one per position. A causal prefill of two
rows is the same as two one-row steps, up to the order of float sums.

Activations (`talker.code_predictor.model...`, `talker.code_predictor.lm_head.{t - 2}`) are those of a
forward from position 0 as Transformers' prefill runs it: t rows, head t - 2 (a frame's first call: t = 2,
head 0).
"""

from __future__ import annotations

import numpy as np

from ..formats import omni_names as names
from ..gpu import Tensor, runtime
from ..ops import elementwise, embedding, select
from ..ops import logits as logits_ops
from .component import ModelInputError, StepContext, embeddings_input
from .config import ConfigError, DecoderConfig, omni_sub_dict, sub_dict
from .decoder import Decoder
from .layers import Rotary, linear
from .loaders import Keys, load_layers, progress_bar, upload_weight
from .talker import capture_by_name

PREFIX = "talker.code_predictor"


class CodePredictor(Decoder):
    prefix = f"{PREFIX}.model"
    lm_head_name = f"{PREFIX}.lm_head"
    embed_name = "inputs_embeds"

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> DecoderConfig:
        sub = omni_sub_dict(d, "talker_config.code_predictor_config", source)
        return DecoderConfig.from_dict(sub, source, where="talker_config.code_predictor_config.")

    @classmethod
    def head_name(cls, t: int) -> str:
        return f"{cls.lm_head_name}.{max(t - 2, 0)}"

    def __init__(self, cfg: DecoderConfig, ckpt, max_len: int = 2048, progress: bool = False):
        sub = sub_dict(ckpt.config, "talker_config.code_predictor_config", str(ckpt.path))
        self.groups = int(sub.get("num_code_groups", 16))
        if self.groups < 2:
            raise ConfigError(f"{ckpt.path}: talker_config.code_predictor_config.num_code_groups must be >= 2")
        self.cfg = cfg
        self.max_len = self.groups  # a frame's positions: the cache never holds more
        v, d = cfg.vocab_size, cfg.hidden_size
        bar = progress_bar(ckpt, cfg.num_hidden_layers + 2, progress, " (code predictor)")
        keys = Keys(f"{self.prefix}.", names.layout_of(ckpt.names))
        # One table and one head per residual codebook g = 1..groups-1: embeddings[g - 1] and heads[g - 1].
        self.embeddings = [upload_weight(ckpt, keys(f"codec_embedding.{g}.weight"), (v, d)) for g in range(self.groups - 1)]
        self.heads = [upload_weight(ckpt, f"{self.lm_head_name}.{g}.weight", (v, d)) for g in range(self.groups - 1)]
        self.embed_tokens, self.lm_head = None, self.heads[0]
        bar.update()
        load_layers(self, ckpt, keys, self.max_len, bar)
        bar.close()
        self._init_decoder(ckpt)
        rt = runtime()
        self.position_bufs = [rt.upload(np.array([p], np.int32), label=f"cp.position{p}") for p in range(self.groups)]
        self.step_bufs = [rt.upload(np.array([p, 0, 0, 0], np.uint32), label=f"cp.step{p}") for p in range(self.groups)]

    def scratch_shapes(self, t: int, rows: int) -> dict:
        shapes = super().scratch_shapes(t, rows)
        del shapes["ids"]
        return {**shapes, "positions": ((t,), "i32")}

    def write_positions(self, s, start: int, t: int) -> None:
        runtime().write(s.positions, np.arange(start, start + t, dtype=np.int32))

    def rotary(self, s) -> Rotary:
        return Rotary(s.positions, self.inv_freq)

    def forward(self, ids=None, start: int | None = None, taps=(), all_logits: bool = True,
                embeds: Tensor | None = None) -> dict[str, np.ndarray]:
        """Transformers' prefill: t rows of embeddings from position 0, head t - 2 on every row."""
        if ids is not None or embeds is None:
            raise ModelInputError("the code predictor reads embeddings only (the talker's hidden state and codec embeddings)")
        t = embeds.shape[0]
        if not 2 <= t <= self.groups:
            raise ModelInputError(f"the code predictor's prefill reads 2..{self.groups} rows, got {t}")
        self.lm_head = self.heads[t - 2]
        return super().forward(start=0, taps=taps, all_logits=all_logits, embeds=embeds)

    # -- one frame, recorded into the open step ------------------------------------------------------
    def _row(self, position: int) -> Tensor:
        """One row at `position` of the frame over the input embedding gathered into the one-row scratch's
        h (no copy: the residual stream starts there); returns the final norm's output [1, D]."""
        s = self.scratch(1, 1)
        ctx = StepContext(1, s, self.step_bufs[position], self._exported_taps(1))
        return self.layers_forward(s.h, ctx, Rotary(self.position_bufs[position], self.inv_freq))

    def frame(self, hidden: tuple[Tensor, Tensor], code0_table, codes: list[Tensor], frame_sum: Tensor,
              sampler=None) -> None:
        """Record the frame's residual codebooks. Row 0 reads the talker's hidden state, `hidden` = (row id
        [1] i32, the table of talker rows it indexes); row 1 code 0's embedding (codes[0] in `code0_table`,
        the talker's codec embedding), row g > 1 code g - 1's in the code predictor's table. codes[g] ([1]
        i32) is written for g = 1..groups-1; frame_sum [1, D] = the sum of the 16 codes' embeddings (the
        talker's next input, with the text row)."""
        s = self.scratch(1, 1)
        embedding.embedding(*hidden, out=s.h)
        self._row(0)
        embedding.embedding(codes[0], code0_table, out=s.h)
        embedding.embedding(codes[0], code0_table, out=frame_sum)
        for g in range(1, self.groups):
            x = self._row(g)
            pick(linear(x, self.heads[g - 1], s.logits), codes[g], sampler, stream=g)
            embed = embedding.embedding(codes[g], self.embeddings[g - 1], out=s.h)  # the next row's input
            elementwise.add(frame_sum, embed, out=frame_sum)


def pick(logits: Tensor, out: Tensor, sampler, stream: int) -> None:
    """The next token into out [1] i32 on the GPU: argmax (sampler None), or a draw from the top-k
    (models/speech.py's GpuSampler; `stream` keeps the draws of the frame's 16 tokens apart)."""
    if sampler is None:
        select.argmax(logits, out=out)
        return
    select.topk(logits, sampler.top_k, out_values=sampler.values, out_indices=sampler.indices)
    logits_ops.sample(sampler.values, sampler.indices, sampler.counter, out, sampler.temperature, sampler.top_p,
                      sampler.seed, stream)


# -- the HF side -------------------------------------------------------------------------------------

def hf_activations(model, activation_names, embeds) -> dict[str, np.ndarray]:
    """Our activation names on a transformers model's code predictor, for its prefill over `embeds`
    [t, D] (t = 2: the talker's last hidden state and code 0's embedding), head t - 2."""
    import torch

    cp = model.talker.code_predictor
    x = torch.as_tensor(np.asarray(embeds, np.float32))[None].to(cp.dtype)
    return capture_by_name(cp, PREFIX, activation_names, lambda: cp(inputs_embeds=x, use_cache=False))
