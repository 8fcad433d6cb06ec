"""The tables between Qwen3-Omni checkpoint keys and the live module paths our components are named by.

Released checkpoints, and transformers 5.23's own `save_pretrained`, store the thinker's parts under
other prefixes than the live transformers 5 model has: the text model under `thinker.model.layers...`
(live `thinker.model.language_model.layers...`), the towers under `thinker.audio_tower.*` and
`thinker.visual.*` (live `thinker.model.audio_tower.*`, `thinker.model.visual.*`). They store one tensor
per expert (`mlp.experts.{e}.gate_proj.weight`, `up_proj`, `down_proj`) where the live model fuses them
into `mlp.experts.gate_up_proj` [E, 2F, D] and `mlp.experts.down_proj` [E, D, F]; that holds for the
thinker's and the talker's MoE layers alike. A checkpoint saved from the live layout is read too.

So a checkpoint layout is a prefix table plus the expert stacking rule, and every name translation goes
through `stored_key` / `live_key` here, nowhere else.
"""

from __future__ import annotations

import re

LIVE_TEXT = "thinker.model.language_model."  # module paths of the live HF model (activation names)
CKPT_TEXT = "thinker.model."                 # released / save_pretrained checkpoint prefix
LM_HEAD = "thinker.lm_head.weight"

# (live prefix, stored prefix): a live key takes the stored prefix of its first matching row. The tower
# rows come before the text row, whose live prefix does not overlap them but whose stored one would.
RELEASED = (
    ("thinker.model.audio_tower.", "thinker.audio_tower."),
    ("thinker.model.visual.", "thinker.visual."),
    (LIVE_TEXT, CKPT_TEXT),
)
LIVE_LAYOUT: tuple = ()  # saved from a live transformers 5 model: keys are the module paths

# Fused live expert tensor -> the per-expert projections stacked into it, in row order (gate_up_proj
# holds gate in rows [0, F) and up in [F, 2F) of each expert).
EXPERT_PARTS = {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}

_EXPERT_KEY = re.compile(r"^(?P<layer>.+\.layers\.(?P<i>\d+))\.mlp\.experts\.(?P<e>\d+)\.(?P<which>\w+)\.weight$")


def layout_of(names) -> tuple:
    """The prefix table of a checkpoint: the live layout when it stores the thinker text model under
    its live path, the released one otherwise."""
    return LIVE_LAYOUT if any(n.startswith(LIVE_TEXT) for n in names) else RELEASED


def stored_key(live: str, layout: tuple = RELEASED) -> str:
    for live_prefix, stored_prefix in layout:
        if live.startswith(live_prefix):
            return stored_prefix + live[len(live_prefix):]
    return live


def live_key(stored: str, layout: tuple = RELEASED) -> str:
    for live_prefix, stored_prefix in layout:
        if stored.startswith(stored_prefix) and not stored.startswith(live_prefix):
            return live_prefix + stored[len(stored_prefix):]
    return stored


def text_key(live: str, layer: int | None = None, fused: bool = False) -> str:
    """Checkpoint key of a thinker text tensor named by its live path relative to LIVE_TEXT
    (`layers.{i}.self_attn.q_proj.weight` with layer=i, or `norm.weight`)."""
    return stored_key(LIVE_TEXT + live.format(i=layer), LIVE_LAYOUT if fused else RELEASED)


def expert_key(which: str, layer: int, expert: int, live_prefix: str = LIVE_TEXT) -> str:
    """Per-expert checkpoint key of `gate_proj`, `up_proj` or `down_proj` of a released checkpoint."""
    return stored_key(f"{live_prefix}layers.{layer}.mlp.experts.{expert}.{which}.weight")


def fused_expert_key(which: str, layer: int, live_prefix: str = LIVE_TEXT) -> str:
    """Checkpoint key of `gate_up_proj` or `down_proj` in the live (fused) layout."""
    return f"{live_prefix}layers.{layer}.mlp.experts.{which}"


def live_name(checkpoint_key: str) -> str:
    """Live name of a checkpoint key (reports): `thinker.model.layers.3.mlp.experts.7.up_proj.weight` ->
    `thinker.model.language_model.layers.3.mlp.experts.up_proj[7]`."""
    key = live_key(checkpoint_key)
    m = _EXPERT_KEY.match(key)
    if m:
        return f"{m['layer']}.mlp.experts.{m['which']}[{m['e']}]"
    return key


def is_fused(names) -> bool:
    """Whether a checkpoint stores the thinker text model in the live (fused-expert) layout."""
    return layout_of(names) is LIVE_LAYOUT


def experts_in_checkpoint(names, layer: int, live_prefix: str = LIVE_TEXT) -> list[int]:
    """Expert indices a per-expert checkpoint holds for one layer (sorted)."""
    want = stored_key(f"{live_prefix}layers.{layer}")
    found = set()
    for n in names:
        m = _EXPERT_KEY.match(n)
        if m and m["layer"] == want:
            found.add(int(m["e"]))
    return sorted(found)
