"""The workbench's steps as plain functions, shared by the CLI and the notebooks: tokenize a prompt,
extract named activations from Transformers or from our kernels, capture a stored reference, compare."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .compare import Bounds, compare_sets
from .reference import load_hf_model, load_reference, save_reference


def model_type(path: str | Path) -> str:
    from .models.registry import open_checkpoint

    return open_checkpoint(path).config.get("model_type", "")


def load_ours(path: str | Path, max_len: int = 2048, progress: bool = True, component: str | None = None,
              inputs=None):
    """Our implementation of the checkpoint at `path` (directory or .gguf), chosen by the model registry (the
    component's entry for `inputs`, their names, when given)."""
    from .models import registry

    return registry.load(path, component, max_len, progress, inputs)


def activation_specs(path: str | Path, t: int = 1, component: str | None = None):
    """The typed activations of a model for an input of length t, in execution order."""
    from .models import registry

    return registry.activation_specs(path, t, component)


def activation_names(path: str | Path, component: str | None = None) -> list[str]:
    """The named activations of a model, in execution order."""
    return [a.name for a in activation_specs(path, 1, component)]


def model_config(path: str | Path) -> dict:
    from .models.registry import open_checkpoint

    return open_checkpoint(path).config


def tokenizer_for(path: str | Path):
    """The checkpoint's tokenizer. The checkpoint is checked first (open_checkpoint), so a wrong path or a folder
    that is not a checkpoint is named as such, not as Transformers' hub repo-id or sentencepiece error."""
    from transformers import AutoTokenizer

    from .errors import CheckpointError
    from .formats.gguf_io import open_checkpoint

    path = Path(path)
    open_checkpoint(path)
    if path.suffix == ".gguf":
        from .formats.gguf_io import GGUFCheckpoint

        text = GGUFCheckpoint(path).tokenizer_json
        if text is None:
            raise ValueError(f"{path}: this GGUF carries no tokenizer; give --prompt-ids")
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(text))
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise CheckpointError(f"{path}: no tokenizer files (tokenizer.json); give --prompt-ids, or copy the model's "
                              "tokenizer files here")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:  # a corrupt tokenizer.json or tokenizer_config.json
        raise CheckpointError(f"{path}: Transformers cannot load its tokenizer: {type(e).__name__}: "
                              f"{str(e)[:200]}") from None


def prompt_ids(path: str | Path, prompt: str | None = None, ids: str | list[int] | None = None,
               chat: bool = False) -> np.ndarray:
    """Token ids from a text prompt (chat template applied when asked and present) or a list '1,2,3'."""
    if (prompt is None) == (ids is None):
        raise ValueError("give exactly one of a text prompt or prompt ids")
    if ids is not None:
        if isinstance(ids, str):
            try:
                ids = [int(s) for s in ids.replace(" ", "").split(",") if s]
            except ValueError:
                raise ValueError(f"prompt ids must be integers separated by commas, got {ids!r}") from None
        return np.asarray(ids, dtype=np.int64)
    tok = tokenizer_for(path)
    if chat:
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"{path}: the tokenizer has no chat template; drop --chat")
        out = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return np.asarray(out, dtype=np.int64).reshape(-1)
    return np.asarray(tok(prompt)["input_ids"], dtype=np.int64)


def extract(path: str | Path, inputs, backend: str, dtype: str = "float32",
            names: list[str] | None = None, component: str | None = None) -> dict[str, np.ndarray]:
    """The named activations (float32, shaped as their specs say) of one forward of a component over its
    inputs (model_inputs: token ids for a decoder, codec codes [16, frames] for code2wav, mel features per
    audio for the audio encoder, token ids and mel features for the thinker with audio)."""
    from .models import registry

    inputs = model_inputs(path, inputs, component)
    entry = registry.entry_for(model_config(path), component, str(path), inputs)
    names = names or [a.name for a in registry.input_specs(path, inputs, component)]
    if backend == "hf":
        if Path(path).suffix == ".gguf":
            raise ValueError(f"{path}: Transformers cannot run our GGUF files; capture from the source checkpoint")
        return entry.hf_activations(load_hf_model(path, dtype), names, inputs)
    if backend == "wgpu":
        length = registry.input_length(path, inputs, component)
        model = load_ours(path, max_len=max(length, 16), progress=False, component=component, inputs=inputs)
        return model.tap(*entry.args(inputs), names)
    raise ValueError(f"backend must be 'hf' or 'wgpu', got {backend!r}")


def _checked_input(name: str, value, config: dict, source: str):
    """One input in the type its component takes, checked as the component checks it (by the input's name;
    a spoken prompt's speaker and limits here by type, by the speech parts for what they mean)."""
    if name == "speaker":
        return str(value)
    if name in ("max_new_tokens", "max_frames"):
        if isinstance(value, bool) or int(value) != value or int(value) < 1:
            raise ValueError(f"{name} must be an integer of at least 1, got {value!r}")
        return int(value)
    if name == "codes":
        from .models.code2wav import Code2Wav, as_codes

        return as_codes(Code2Wav.config_from(config, source), value)
    if name == "input_features":  # [M, L] per audio (one [M, L] array: one audio)
        from .models.audio_encoder import AudioEncoder, as_features

        return as_features(AudioEncoder.config_from(config, source), value)
    if name in ("pixel_values", "image_grid_thw"):  # checked together by the vision encoder (as_images)
        return np.asarray(value, np.float32 if name == "pixel_values" else np.int64)
    return np.asarray(value, np.int64).reshape(-1)


def model_inputs(path: str | Path, inputs, component: str | None = None) -> dict:
    """The inputs as a reference's manifest records them (its key for them, with the model and dtype):
    {name: value} in the order the component takes them, e.g. {"input_ids": ids}, {"codes": [Q, T]},
    {"input_features": [[M, L] per audio]}, {"input_ids": ids, "input_features": [...]} for the thinker with
    audio. `inputs` is such a dict, or the one input of the component's first entry."""
    from .models import registry

    config = model_config(path)
    if not isinstance(inputs, dict):
        inputs = {registry.entry_for(config, component, str(path)).inputs[0]: inputs}
    entry = registry.entry_for(config, component, str(path), inputs)
    return {k: _checked_input(k, inputs[k], config, str(path)) for k in entry.inputs}


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write an .npz atomically (omni_lab/atomic.py)."""
    from .atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{n: np.asarray(a, np.float32) for n, a in arrays.items()})
    return Path(path)


def reference_name(path: str | Path, inputs: dict, dtype: str, component: str | None = None) -> str:
    """<model>-[<component>-]<dtype>-<digest of every input>: ids and codes by their int64 bytes, features by
    their float32 bytes, in order (a single input's digest is that of its bytes alone)."""
    import hashlib

    h = hashlib.sha256()
    for value in inputs.values():  # ids and codes as int64, features as float32; a speaker or a limit as text
        for array in (value if isinstance(value, list) else [value]):
            a = np.asarray(array)
            h.update(str(array).encode() if a.dtype.kind not in "iuf" or a.ndim == 0 else
                     a.astype(np.int64 if a.dtype.kind in "iu" else np.float32).tobytes())
    return f"{Path(path).name}-{component + '-' if component else ''}{dtype}-{h.hexdigest()[:10]}"


def capture_reference(path: str | Path, inputs, dtype: str = "float32", name: str | None = None,
                      root: str | Path | None = None, component: str | None = None):
    """Run Transformers on a component's inputs (model_inputs), store its activations under
    reference_data/<name>/, keyed by every input, and return the Reference."""
    from .models.registry import input_specs

    recorded = model_inputs(path, inputs, component)
    acts = extract(path, recorded, "hf", dtype, component=component)
    kw = {"root": root} if root is not None else {}
    specs = [a for a in input_specs(path, recorded, component) if a.name in acts]
    where = save_reference(name or reference_name(path, recorded, dtype, component), acts, model_path=path,
                           inputs=recorded, dtype=dtype, specs=specs, **kw)
    return load_reference(where)


def compare_model(path: str | Path, inputs, out_dir: str | Path, reference: str | Path | None = None,
                  dtype: str = "float32", bounds: Bounds | None = None, root: str | Path | None = None,
                  ours: dict[str, np.ndarray] | None = None, component: str | None = None):
    """Capture (or load and verify) the HF reference of a component over its inputs (model_inputs), run
    ours, compare, and write the report.

    A stored reference made from another model or other inputs is refused (ReferenceMismatch)."""
    from .models.registry import input_specs
    from .report import write_report

    kw = {"root": root} if root is not None else {}
    recorded = model_inputs(path, inputs, component)
    t0 = time.perf_counter()
    if reference is None:
        ref = capture_reference(path, recorded, dtype, component=component, **kw)
    else:
        expect_model = None if Path(path).suffix == ".gguf" else path
        ref = load_reference(reference, expect_model=expect_model, expect_inputs=recorded, **kw)
    t1 = time.perf_counter()
    if ours is None:
        ours = extract(path, recorded, "wgpu", names=ref.names, component=component)
    t2 = time.perf_counter()
    # Our model's types, not only the reference's: a reference stored before activations were typed
    # would otherwise compare the router's expert ids as floats.
    comparison = compare_sets(ours, ref, bounds, specs=input_specs(path, recorded, component))
    t3 = time.perf_counter()
    timing = {"reference_s": t1 - t0, "ours_s": t2 - t1, "compare_s": t3 - t2}
    index = write_report(comparison, out_dir, extra={"timing": timing, "model": str(path)})
    timing["report_s"] = time.perf_counter() - t3
    return comparison, index, timing
