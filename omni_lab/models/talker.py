"""Qwen3-Omni's talker on our kernels: thinker-space vectors in, the first codebook of each 80 ms frame out.

A MoE decoder like the thinker's text model (QK-norm attention, interleaved MRoPE; every layer a sparse
block with the sigmoid-gated shared expert) that only ever reads embeddings: `text_projection` and
`hidden_projection` (two-layer MLPs with bias, Transformers' `Qwen3OmniMoeTalkerResizeMLP`) bring thinker
embeddings and hidden states into its width, and the codec embedding adds the codec tokens. Its head is
`codec_head`. The prompt it reads, and the frame loop around it, are models/speech.py's.

Activations are named by transformers' live module paths (`talker.model.layers.{i}...`, `talker.model.norm`,
`talker.codec_head`); the input is `talker.model.inputs_embeds`, the embeddings `talker.model` is called
with (captured by a pre-hook on the HF side: there is no embedding module in that call).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats import omni_names as names
from ..gpu import Tensor, runtime
from ..ops import elementwise
from .config import ConfigError, DecoderConfig, omni_sub_dict, sub_dict
from .layers import linear
from .loaders import Keys, load_layers, progress_bar, upload_f32, upload_weight
from .thinker import Qwen3OmniThinkerText

PREFIX = "talker"


@dataclass
class ResizeMlp:
    """linear_fc2(silu(linear_fc1(x))), both with bias: [T, thinker D] -> [T, talker D]."""
    fc1: object
    fc1_bias: Tensor
    fc2: object
    fc2_bias: Tensor

    @classmethod
    def load(cls, ckpt, name: str, d_in: int, f: int, d_out: int) -> "ResizeMlp":
        return cls(upload_weight(ckpt, f"{name}.linear_fc1.weight", (f, d_in)), upload_f32(ckpt, f"{name}.linear_fc1.bias", (f,)),
                   upload_weight(ckpt, f"{name}.linear_fc2.weight", (d_out, f)), upload_f32(ckpt, f"{name}.linear_fc2.bias", (d_out,)))

    def __call__(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        rt = runtime()
        t = x.shape[0]
        hidden = rt.empty((t, self.fc1.shape[0]), label="resize.fc1")
        h = elementwise.add(linear(x, self.fc1, hidden), self.fc1_bias, out=hidden)
        h = elementwise.silu(h, out=h)
        out = out if out is not None else rt.empty((t, self.fc2.shape[0]), label="resize.fc2")
        return elementwise.add(linear(h, self.fc2, out), self.fc2_bias, out=out)


class Talker(Qwen3OmniThinkerText):
    """The thinker's text decoder with the talker's weights: the same layers (every one a MoE block with a
    shared expert here), the same MRoPE; positions of a text-only prompt are text positions in all three
    streams, as Transformers' compute_3d_position_ids gives them without multimodal data."""
    prefix = f"{PREFIX}.model"
    lm_head_name = f"{PREFIX}.codec_head"
    embed_name = "inputs_embeds"

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> DecoderConfig:
        talker = omni_sub_dict(d, "talker_config", source)
        text = sub_dict(d, "talker_config.text_config", source)
        # Every talker layer is a sparse block (Qwen3OmniMoeTalkerDecoderLayer replaces the MLP it built by
        # the thinker's rule), so the rule's fields are fixed here, whatever the config says.
        return DecoderConfig.from_dict(
            text, source, where="talker_config.text_config.", mrope=True, moe=True,
            mlp_only_layers=[], decoder_sparse_step=1, tie_word_embeddings=False,
            eos_token_id=talker.get("codec_eos_token_id"))

    def __init__(self, cfg: DecoderConfig, ckpt, max_len: int = 2048, progress: bool = False):
        self.cfg = cfg
        self.max_len = max_len
        talker = sub_dict(ckpt.config, "talker_config", str(ckpt.path))
        if "thinker_hidden_size" not in talker:
            raise ConfigError(f"{ckpt.path}: missing field talker_config.thinker_hidden_size")
        d_in, d, f = talker["thinker_hidden_size"], cfg.hidden_size, cfg.intermediate_size
        bar = progress_bar(ckpt, cfg.num_hidden_layers + 3, progress, " (talker)")
        keys = Keys(f"{self.prefix}.", names.layout_of(ckpt.names))
        self.embed_tokens = upload_weight(ckpt, keys("codec_embedding.weight"), (cfg.vocab_size, d))
        self.lm_head = upload_weight(ckpt, f"{self.lm_head_name}.weight", (cfg.vocab_size, d))
        self.text_projection = ResizeMlp.load(ckpt, f"{PREFIX}.text_projection", d_in, f, d)
        self.hidden_projection = ResizeMlp.load(ckpt, f"{PREFIX}.hidden_projection", d_in, f, d)
        bar.update(2)
        load_layers(self, ckpt, keys, max_len, bar)
        bar.close()
        self._init_decoder(ckpt)


# -- the HF side -------------------------------------------------------------------------------------

def hf_activations(model, activation_names, embeds) -> dict[str, np.ndarray]:
    """Our activation names on a transformers Qwen3OmniMoeForConditionalGeneration's talker, for one forward
    of `embeds` [T, D] (its prompt, as models/speech.py builds it) from position 0."""
    import torch

    talker = model.talker
    x = torch.as_tensor(np.asarray(embeds, np.float32))[None].to(talker.dtype)
    return capture_by_name(talker, PREFIX, activation_names, lambda: talker(inputs_embeds=x, use_cache=False))


def capture_by_name(root, prefix: str, activation_names, run) -> dict[str, np.ndarray]:
    """Run `run()` with hooks that record, under our names, the activations of `root` (the HF module at
    live path `prefix`; "" for the whole model): `<prefix>.<path>.inputs_embeds` by a pre-hook on that
    module (the talker's `model`, its `code_predictor.model`), a MoE block's `...mlp.router` from its
    router's outputs (thinker.py's layout), every other name by its module's output. The first call of
    each module is kept (the prefill, when `run` generates)."""
    import torch

    got: dict[str, np.ndarray] = {}
    handles = []
    as_np = lambda t: (t[0] if t.dim() == 3 else t).detach().float().numpy()  # noqa: E731

    def keep(name, value):
        got.setdefault(name, value)
    try:
        for n in activation_names:
            rel = n.removeprefix(f"{prefix}.")
            if rel.endswith("model.inputs_embeds"):
                handles.append(root.get_submodule(rel.removesuffix(".inputs_embeds")).register_forward_pre_hook(
                    lambda m, args, kwargs, name=n: keep(name, as_np(kwargs["inputs_embeds"])), with_kwargs=True))
            elif rel.endswith(".mlp.router"):
                def router(module, args, output, name=n):
                    _, scores, idx = output
                    keep(name, torch.cat([idx.float(), scores.float()], dim=-1).detach().numpy())
                handles.append(root.get_submodule(rel.removesuffix(".router") + ".gate").register_forward_hook(router))
            else:
                def module_out(module, args, output, name=n):
                    keep(name, as_np(output[0] if isinstance(output, tuple) else output))
                handles.append(root.get_submodule(rel).register_forward_hook(module_out))
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in activation_names if n not in got]
    if missing:
        raise KeyError(f"transformers never computed {missing[0]!r}")
    return got
