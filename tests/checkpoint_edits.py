"""Bad-checkpoint fixtures: a copy of a good checkpoint with tensors or config.json edited."""

import json
import shutil
from pathlib import Path


def edited_copy(src: Path, dst: Path, edit_tensors=None, edit_config=None) -> Path:
    """Copy checkpoint `src` to `dst`, then apply edit_tensors(dict of torch tensors) to its
    model.safetensors and edit_config(dict) to its config.json, each in place."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    if edit_tensors:
        tensors = load_file(dst / "model.safetensors")
        edit_tensors(tensors)
        save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    if edit_config:
        cfg = json.loads((dst / "config.json").read_text())
        edit_config(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst
