"""The HF Transformers side: load a local checkpoint and capture named activations with forward hooks.

An activation set maps a name (the module path that forward hooks see, `model.layers.3.mlp`) to a float32
array [tokens, features], in the order the modules ran. Our GPU side produces sets with the same names, and
compare/ joins the two on those names.

Shapes: a module output [1, T, ...] (batch of one) becomes [T, F] with the trailing dims flattened into F;
an output that is already 2-D (the packed [T, D] sequences of Qwen3-Omni's audio encoder) is kept as it is;
a 1-D output [N] becomes [N, 1]. A convolution's [1, C, T] becomes [C, T] by the same rule (layout "CT");
an activation typed as a flat signal (layout "N", the vocoder's waveform [1, 1, N]) becomes [N].
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..activations import as_specs
from ..errors import InputError, OmniLabError

TORCH_DTYPES = {"float32": torch.float32, "f32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class CaptureError(OmniLabError, RuntimeError):
    """A requested activation could not be captured (not a module, never ran, ran twice, not a tensor)."""


class UnsafeWeightsError(InputError):
    """A checkpoint directory offers only pickle weights, which can run code when loaded."""


def dense_qwen3_names(num_layers: int, norms: bool = False, prefix: str = "model") -> list[str]:
    """Activation names of Qwen3ForCausalLM in execution order.

    Inside a layer the hooks fire self_attn, then mlp, then the layer itself (its output is the residual
    stream after the layer). With `norms`, the two RMSNorms that feed attention and the MLP are included too,
    which helps to tell a norm bug from an attention bug.
    """
    names = [f"{prefix}.embed_tokens"]
    for i in range(num_layers):
        layer = f"{prefix}.layers.{i}"
        if norms:
            names.append(f"{layer}.input_layernorm")
        names.append(f"{layer}.self_attn")
        if norms:
            names.append(f"{layer}.post_attention_layernorm")
        names += [f"{layer}.mlp", layer]
    return names + [f"{prefix}.norm", "lm_head"]


def to_activation(name: str, output: Any, layout: str = "TF") -> np.ndarray:
    """One module output as a float32 [tokens, features] array, or [N] for layout "N" (a copy, so later
    in-place ops cannot alter it)."""
    if isinstance(output, Mapping):  # ModelOutput: its first field, as the tuple form would give
        output = next(iter(output.values()), None)
    elif isinstance(output, (tuple, list)):
        output = output[0] if output else None
    if not torch.is_tensor(output):
        raise CaptureError(f"{name}: module output is {type(output).__name__}, not a tensor")
    t = output.detach().to("cpu", torch.float32, copy=True)
    if layout == "N":
        if t.ndim and math.prod(t.shape[:-1]) != 1:
            raise CaptureError(f"{name}: a flat signal needs a batch of 1, got output shape {tuple(t.shape)}")
        return t.reshape(-1).numpy()
    if t.ndim >= 3:
        if t.shape[0] != 1:
            raise CaptureError(f"{name}: capture needs a batch of 1, got output shape {tuple(t.shape)}")
        t = t[0].reshape(t.shape[1], -1)  # [1, T, ...] -> [T, F]
    elif t.ndim == 1:
        t = t[:, None]  # [N] -> [N, 1]
    elif t.ndim == 0:
        t = t.reshape(1, 1)
    return t.numpy()


def capture(model: torch.nn.Module, module_names: Iterable[str], forward_kwargs: Mapping[str, Any],
            specs=None) -> dict[str, np.ndarray]:
    """Run one forward of `model(**forward_kwargs)` under no_grad and return the outputs of the named modules.

    `specs` ({name: Activation} or a list) gives each output's layout (see to_activation); untyped ones are [T, F].
    The result is ordered by when each module's forward hook fired (execution order), not by the order of
    `module_names`. Every named module must run exactly once: a module that never ran, or ran twice (so the
    capture would be ambiguous), raises CaptureError naming it. Hooks are removed even if the forward fails.
    """
    names = list(module_names)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CaptureError(f"names requested twice: {dupes}")
    modules = {}
    for name in names:
        try:
            modules[name] = model.get_submodule(name)
        except AttributeError as e:
            raise CaptureError(f"{name!r} is not a module of {type(model).__name__} ({e}); sub-steps that HF does "
                               "not expose as modules cannot be captured with a forward hook") from e

    layouts = {n: a.layout for n, a in as_specs(specs).items()}
    captured: dict[str, np.ndarray] = {}
    fired: dict[str, int] = dict.fromkeys(names, 0)

    def hook_for(name):
        def hook(module, args, output):
            fired[name] += 1
            if fired[name] == 1:
                captured[name] = to_activation(name, output, layouts.get(name, "TF"))
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            model(**forward_kwargs)
    finally:
        for h in handles:
            h.remove()

    never = [n for n in names if fired[n] == 0]
    if never:
        raise CaptureError(f"modules that did not run in this forward: {never}")
    twice = {n: k for n, k in fired.items() if k > 1}
    if twice:
        raise CaptureError(f"modules that ran more than once in one forward (ambiguous capture): {twice}")
    return captured


def _auto_class(model_type: str):
    import transformers
    from transformers.models.auto import modeling_auto as auto

    # Most specific first: Qwen3-Omni is not a causal LM to the auto classes, but a multimodal LM.
    for mapping, cls in (("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "AutoModelForCausalLM"),
                         ("MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES", "AutoModelForMultimodalLM"),
                         ("MODEL_FOR_TEXT_TO_WAVEFORM_MAPPING_NAMES", "AutoModelForTextToWaveform")):
        if model_type in getattr(auto, mapping, {}) and hasattr(transformers, cls):
            return getattr(transformers, cls)
    raise ValueError(f"no auto model class for model_type {model_type!r} in transformers {transformers.__version__}")


def check_safetensors_only(path: str | Path) -> list[Path]:
    """The checkpoint's safetensors files; refuses a directory whose only weights are pickle `.bin` files."""
    path = Path(path)
    st = sorted(path.glob("*.safetensors"))
    if st:
        return st
    pickles = sorted(path.glob("*.bin")) + sorted(path.glob("*.pt")) + sorted(path.glob("*.pth"))
    if pickles:
        raise UnsafeWeightsError(
            f"{path}: the only weights are pickle files ({pickles[0].name}"
            f"{f' and {len(pickles) - 1} more' if len(pickles) > 1 else ''}); omni_lab loads safetensors only, "
            "because unpickling can run arbitrary code. Convert the checkpoint to safetensors once, in a sandbox.")
    raise FileNotFoundError(f"{path}: no *.safetensors weights found")


def load_hf_model(path: str | Path, dtype: str | torch.dtype = "float32") -> torch.nn.Module:
    """A local HF checkpoint as an eval-mode model: eager attention, no remote code, safetensors only.

    `dtype` is float32 (the exact check of our f32 math on the checkpoint's BF16-rounded weights) or bfloat16
    (the model as people run it). The auto class follows config.json's model_type. Nothing is downloaded.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint directory (no config.json)")
    check_safetensors_only(path)
    if isinstance(dtype, str):
        if dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(TORCH_DTYPES)}, got {dtype!r}")
        dtype = TORCH_DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype}")
    from ..formats.safetensors_io import Checkpoint

    # Our checks of config.json and the safetensors headers first: Transformers' errors on a corrupt file name
    # neither the file nor the field
    model_type = Checkpoint(path).config.get("model_type")
    model = _auto_class(model_type).from_pretrained(
        path, dtype=dtype, attn_implementation="eager", trust_remote_code=False, use_safetensors=True,
        local_files_only=True)
    return model.eval()
