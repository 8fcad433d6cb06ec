"""The Qwen3-Omni thinker's text model (MoE decoder) on our kernels: text in, logits out.

The decoder of models/decoder.py with the thinker's checkpoint layout (formats/omni_names.py: the text
model stored under `thinker.model.`, live under `thinker.model.language_model.`; per-expert tensors
stacked) and interleaved MRoPE. Activations are named by transformers 5.23's live module paths:
`thinker.model.language_model.embed_tokens`, `...layers.{i}.self_attn`, `...layers.{i}.mlp`,
`...layers.{i}`, `...language_model.norm`, `thinker.lm_head`, plus the routing `...layers.{i}.mlp.router`
on MoE layers ([T, 2k]: the selected expert ids, then their routing weights).
"""

from __future__ import annotations

import numpy as np

from ..formats import omni_names as names
from ..gpu import runtime
from .config import DecoderConfig, omni_sub_dict
from .decoder import Decoder, ModelInputError  # noqa: F401  (ModelInputError is part of this module's API)
from .layers import Rotary
from .loaders import Keys, load_decoder

LIVE = names.LIVE_TEXT.rstrip(".")  # "thinker.model.language_model"
LM_HEAD = "thinker.lm_head"


class Qwen3OmniThinkerText(Decoder):
    prefix = LIVE
    lm_head_name = LM_HEAD

    @classmethod
    def config_from(cls, d: dict, source: str = "config.json") -> DecoderConfig:
        text = omni_sub_dict(d, "thinker_config.text_config", source)
        return DecoderConfig.from_dict(
            text, source, where="thinker_config.text_config.", mrope=True, moe=True,
            tie_word_embeddings=bool(d["thinker_config"].get("tie_word_embeddings", False)),
            eos_token_id=d.get("im_end_token_id", text.get("eos_token_id")))

    def __init__(self, cfg: DecoderConfig, ckpt, max_len: int = 2048, progress: bool = False):
        self.cfg = cfg
        self.max_len = max_len
        load_decoder(self, ckpt, Keys(names.LIVE_TEXT, names.layout_of(ckpt.names)), names.LM_HEAD, max_len,
                     progress, what=" (thinker)")
        self._init_decoder(ckpt)

    @property
    def grouped_min_tokens(self) -> int | None:
        """From this many tokens on, the experts run grouped by expert (prefill); fewer run per pair.
        None: moe.grouped_from, by the experts' storage."""
        return next((L.mlp.grouped_from for L in self.layers if hasattr(L.mlp, "grouped_from")), None)

    @grouped_min_tokens.setter
    def grouped_min_tokens(self, tokens: int | None) -> None:
        for L in self.layers:
            if hasattr(L.mlp, "grouped_from"):
                L.mlp.grouped_from = tokens

    def scratch_shapes(self, t: int, rows: int) -> dict:
        return {**super().scratch_shapes(t, rows), "positions3": ((3, t), "i32")}

    # A prompt with images: its [3, T] MRoPE positions (get_rope_index) and the delta that text after it
    # adds to its cache position (HF's rope_deltas); None: text positions. Set by models/image_in.py for
    # the prefill and the decode steps that follow it.
    prompt_positions: tuple[np.ndarray, int] | None = None

    def write_positions(self, s, start: int, t: int) -> None:
        if self.prompt_positions is None:
            runtime().write(s.positions3, self.text_positions(start, t))
            return
        positions, delta = self.prompt_positions
        if start == 0 and t == positions.shape[1]:
            runtime().write(s.positions3, positions)
        else:
            runtime().write(s.positions3, self.text_positions(start + delta, t))

    def rotary(self, s) -> Rotary:
        return Rotary(s.positions3, self.inv_freq, self.cfg.mrope_section)

    @staticmethod
    def text_positions(start: int, t: int) -> np.ndarray:
        """[3, T] mrope positions of text tokens: transformers' get_rope_index gives text the same position
        in all three streams (temporal, height, width), counting on from the cache."""
        return np.broadcast_to(np.arange(start, start + t, dtype=np.int32), (3, t)).copy()


# -- the HF side -------------------------------------------------------------------------------------

def hf_activations(model, activation_names, input_ids, forward_kwargs: dict | None = None) -> dict[str, np.ndarray]:
    """Capture our activation names on a transformers Qwen3OmniMoeForConditionalGeneration (run through
    its thinker). `...mlp.router` is not a module: it is built from the router (`...mlp.gate`) outputs,
    (logits, scores [T, k], indices [T, k]), in the layout above. `forward_kwargs` replace the thinker's
    inputs (a prompt with audio: ids, mask and features; models/audio_in.py)."""
    import torch

    from ..reference import capture

    thinker = model.thinker
    modules = [n.removeprefix("thinker.") for n in activation_names if not n.endswith(".mlp.router")]
    routers = [n for n in activation_names if n.endswith(".mlp.router")]
    got: dict[str, np.ndarray] = {}
    handles = []
    for n in routers:
        gate = thinker.get_submodule(n.removeprefix("thinker.").removesuffix(".router") + ".gate")

        def hook(module, args, output, name=n):
            _, scores, idx = output
            got[name] = torch.cat([idx.float(), scores.float()], dim=-1).detach().numpy()
        handles.append(gate.register_forward_hook(hook))
    try:
        acts = capture(thinker, modules, forward_kwargs or {"input_ids": torch.as_tensor(np.asarray(input_ids)[None])})
    finally:
        for h in handles:
            h.remove()
    return {**{f"thinker.{n}": a for n, a in acts.items()}, **got}
