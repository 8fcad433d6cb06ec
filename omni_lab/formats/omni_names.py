"""The one table between Qwen3-Omni checkpoint keys and the names our thinker text model uses.

Released checkpoints, and transformers 5.23's own `save_pretrained`, store the thinker text model under
`thinker.model.layers.{i}...` with one tensor per expert (`mlp.experts.{e}.gate_proj.weight`, `up_proj`,
`down_proj`). The live transformers 5 model puts it under `thinker.model.language_model.layers.{i}...`
(the module paths its hooks see, which name our activations) with the experts fused into
`mlp.experts.gate_up_proj` [E, 2F, D] and `mlp.experts.down_proj` [E, D, F]. A checkpoint in that fused
layout is read too.

Our weights are named by the live module path plus the parameter (`...layers.3.self_attn.q_proj.weight`);
expert weights are stacked in the live layout, `...layers.3.mlp.experts.gate_up_proj` and `.down_proj`.
"""

from __future__ import annotations

import re

LIVE_TEXT = "thinker.model.language_model."  # module paths of the live HF model (activation names)
CKPT_TEXT = "thinker.model."                 # released / save_pretrained checkpoint prefix
LM_HEAD = "thinker.lm_head.weight"

# Live parameter (relative to LIVE_TEXT, `{i}` a layer) -> checkpoint key (relative to CKPT_TEXT).
TEXT_TENSORS = {
    "embed_tokens.weight": "embed_tokens.weight",
    "norm.weight": "norm.weight",
    **{f"layers.{{i}}.{n}.weight": f"layers.{{i}}.{n}.weight" for n in (
        "input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
        "self_attn.o_proj", "self_attn.q_norm", "self_attn.k_norm",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",  # dense layers (mlp_only_layers, decoder_sparse_step)
        "mlp.gate")},  # the router
}
# Per-expert checkpoint key (`{e}` the expert) of each projection; the fused live tensors (gate_up_proj
# holds gate in rows [0, F) and up in [F, 2F) of each expert).
EXPERT_TENSORS = {"gate_proj": "layers.{i}.mlp.experts.{e}.gate_proj.weight",
                  "up_proj": "layers.{i}.mlp.experts.{e}.up_proj.weight",
                  "down_proj": "layers.{i}.mlp.experts.{e}.down_proj.weight"}
FUSED_EXPERT_TENSORS = {"gate_up_proj": "layers.{i}.mlp.experts.gate_up_proj",
                        "down_proj": "layers.{i}.mlp.experts.down_proj"}

_EXPERT_KEY = re.compile(r"^thinker\.model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.")


def text_key(live: str, layer: int | None = None, fused: bool = False) -> str:
    """Checkpoint key of a thinker text tensor named by its live parameter path relative to LIVE_TEXT
    (`layers.{i}.self_attn.q_proj.weight` with layer=i, or `norm.weight`)."""
    if live not in TEXT_TENSORS:
        raise KeyError(f"formats/omni_names.py has no row for thinker text tensor '{live}'")
    rel = TEXT_TENSORS[live].format(i=layer)
    return (LIVE_TEXT if fused else CKPT_TEXT) + rel


def expert_key(which: str, layer: int, expert: int) -> str:
    """Per-expert checkpoint key of `gate_proj`, `up_proj` or `down_proj`."""
    return CKPT_TEXT + EXPERT_TENSORS[which].format(i=layer, e=expert)


def fused_expert_key(which: str, layer: int) -> str:
    """Checkpoint key of `gate_up_proj` or `down_proj` in the fused layout."""
    return LIVE_TEXT + FUSED_EXPERT_TENSORS[which].format(i=layer)


def live_name(checkpoint_key: str) -> str:
    """Live name of a checkpoint key (reports): `thinker.model.layers.3.mlp.experts.7.up_proj.weight` ->
    `thinker.model.language_model.layers.3.mlp.experts.up_proj[7]`."""
    m = _EXPERT_KEY.match(checkpoint_key)
    if m:
        which = checkpoint_key[m.end():].removesuffix(".weight")
        return f"{LIVE_TEXT}layers.{m[1]}.mlp.experts.{which}[{m[2]}]"
    if checkpoint_key.startswith(CKPT_TEXT) and not checkpoint_key.startswith(LIVE_TEXT):
        rest = checkpoint_key[len(CKPT_TEXT):]
        if rest.split(".")[0] in ("embed_tokens", "norm", "layers"):
            return LIVE_TEXT + rest
    return checkpoint_key


def is_fused(names) -> bool:
    """Whether a checkpoint stores the thinker text model in the live (fused-expert) layout."""
    return any(n.startswith(LIVE_TEXT) for n in names)


def experts_in_checkpoint(names, layer: int) -> list[int]:
    """Expert indices a per-expert checkpoint holds for one layer (sorted)."""
    found = set()
    for n in names:
        m = _EXPERT_KEY.match(n)
        if m and int(m[1]) == layer:
            found.add(int(m[2]))
    return sorted(found)
