"""Captured activation sets on disk: `reference_data/<name>/activations.npz` + `manifest.json`.

The manifest says what the activations are a reference *for*: the model (path, and hashes of its config and
weights), the inputs (token ids; large arrays such as audio by hash), the dtype HF ran in, library versions,
the capture date, the activation names in execution order, their shapes, and (when the capture gave them)
their types, "activations": {name: Activation.to_json()}, which compare_sets reads. `load_reference` refuses a
reference whose model or inputs differ from the ones given, naming each field that differs, and one whose
arrays do not have the shapes its manifest lists.

Weight hashes (`hash_mode`):
- "full": sha256 over, for each weight file in name order, its name, its size and all its bytes, read in
  8 MiB chunks (never the whole file in memory). About 1-2 s per GB.
- "fast": the same but over only the first and last MiB of each file. It catches a different checkpoint
  or a re-quantized file, not a flipped byte in the middle; meant for the 66 GB Omni checkpoint.
A reference is always checked in the mode it was written with.

Writes go to a hidden temporary directory next to the target, renamed into place when complete, so a crashed
capture never leaves a half-written reference under the real name.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..activations import Activation, as_specs, routing_parts
from ..errors import InputError, ReferenceFileError

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "reference_data"
FORMAT = "omni_lab.reference/1"
MiB = 1 << 20
# Integer inputs up to this many elements are stored as lists (readable diffs); anything else by hash.
MAX_LISTED = 4096


class ReferenceMismatch(InputError):
    """A stored reference is not for the model / inputs / dtype it is being compared with."""

    def __init__(self, path, differences: list[tuple[str, Any, Any]]):
        self.path = Path(path)
        self.differences = differences
        lines = [f"  {f}: stored {_short(s)}, given {_short(g)}" for f, s, g in differences]
        super().__init__(f"reference {self.path} does not match what it is compared with:\n" + "\n".join(lines))


def _short(v: Any, limit: int = 120) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 5] + " ...]"


# ---------------------------------------------------------------------------------------------- hashing

def _hash_files(files: list[Path], mode: str) -> str:
    if mode not in ("full", "fast"):
        raise ValueError(f"hash mode must be 'full' or 'fast', got {mode!r}")
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f.name.encode() + b"\0" + size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            if mode == "full" or size <= 2 * MiB:
                while chunk := fh.read(8 * MiB):
                    h.update(chunk)
            else:
                h.update(fh.read(MiB))
                fh.seek(size - MiB)
                h.update(fh.read(MiB))
    return h.hexdigest()


def hash_model(path: str | Path, mode: str = "full") -> dict:
    """Identity of a checkpoint: a directory of safetensors (+ config.json), or a single .gguf file."""
    path = Path(path).resolve()
    if path.is_file() and path.suffix == ".gguf":
        files, config = [path], None
    elif path.is_dir():
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.gguf"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.safetensors or *.gguf weights to hash")
        config = path / "config.json"
    else:
        raise FileNotFoundError(f"{path}: not a checkpoint directory or .gguf file")
    return {
        "path": str(path),
        "config_sha256": hashlib.sha256(config.read_bytes()).hexdigest() if config and config.is_file() else None,
        "weights_sha256": _hash_files(files, mode),
        "hash_mode": mode,
        "weight_files": [[f.name, f.stat().st_size] for f in files],
    }


def hash_array(a) -> str:
    """sha256 of an array's dtype, shape and bytes (e.g. an audio clip or mel features)."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def describe_inputs(inputs: Mapping[str, Any]) -> dict:
    """Inputs in the JSON form stored in the manifest (and compared against it).

    Arrays and tensors lose a leading batch of 1 (like activations do); small integer arrays (token ids,
    positions) become lists, anything else becomes {"sha256", "shape", "dtype"}.
    """
    out = {}
    for k, v in inputs.items():
        if hasattr(v, "detach"):  # torch tensor; bf16 has no numpy dtype
            v = v.detach().cpu()
            v = v.float().numpy() if v.is_floating_point() else v.numpy()
        if isinstance(v, (bytes, bytearray)):
            out[k] = {"sha256": hashlib.sha256(v).hexdigest(), "bytes": len(v)}
            continue
        if isinstance(v, (list, tuple)) and not all(isinstance(x, (int, float, str, bool)) for x in v):
            v = np.asarray(v)
        if isinstance(v, np.ndarray):
            if v.ndim >= 2 and v.shape[0] == 1:
                v = v[0]
            if v.dtype.kind in "iub" and v.size <= MAX_LISTED:
                out[k] = v.tolist()
            else:
                out[k] = {"sha256": hash_array(v), "shape": list(v.shape), "dtype": str(v.dtype)}
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            out[k] = v
    return json.loads(json.dumps(out))  # exactly what a round trip through the manifest gives


def library_versions() -> dict:
    import importlib.metadata as md

    import omni_lab

    versions = {"python": platform.python_version(), "numpy": np.__version__, "omni_lab": omni_lab.__version__}
    for pkg in ("torch", "transformers", "safetensors", "gguf"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


# ---------------------------------------------------------------------------------------------- npz i/o

def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    # Written member by member rather than with np.savez(**arrays), whose keyword form would collide with an
    # activation named "file"; zip member order is the execution order.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(a, dtype=np.float32), allow_pickle=False)


def _as_set(activations: Mapping[str, Any], specs: Mapping[str, Activation]) -> dict[str, np.ndarray]:
    """The arrays as float32, checked against their types (an untyped one must be [tokens, features])."""
    unknown = [n for n in specs if n not in activations]
    if unknown:
        raise ValueError(f"types given for activations that are not in the set: {unknown}")
    out = {}
    for name, a in activations.items():
        spec = specs.get(name)
        a32 = np.asarray(a, dtype=np.float32)
        if spec is None and a32.ndim != 2:
            raise ValueError(f"activation {name!r} must be [tokens, features], got shape {a32.shape}")
        if spec is not None and a32.shape != spec.shape:
            raise ValueError(f"activation {name!r} has shape {a32.shape}, its type says {spec.shape}")
        if spec is not None and spec.kind in ("ids", "routing"):
            ids, ids32 = (routing_parts(a)[0], routing_parts(a32)[0]) if spec.kind == "routing" else (a, a32)
            if not np.array_equal(np.asarray(ids), ids32):  # compared exactly later: float32 must hold them
                raise ValueError(f"activation {name!r}: its ids are not exact in float32 (beyond 2**24?)")
        out[name] = a32
    return out


# ---------------------------------------------------------------------------------------------- save / load

@dataclass
class Reference:
    """A loaded reference: its directory, manifest and activations (float32, in order)."""

    path: Path
    manifest: dict
    activations: dict[str, np.ndarray] = field(repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.activations)

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def specs(self) -> dict[str, Activation]:
        """The stored types, {name: Activation}; empty for a reference captured without them."""
        return {n: Activation.from_json(n, d) for n, d in self.manifest.get("activations", {}).items()}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.activations[name]


def save_reference(name: str, activations: Mapping[str, Any], *, model_path: str | Path | None = None,
                   model: dict | None = None, inputs: Mapping[str, Any], dtype: str,
                   root: str | Path = DEFAULT_ROOT, hash_mode: str = "full", extra: dict | None = None,
                   overwrite: bool = True, specs=None) -> Path:
    """Write `root/<name>/` atomically and return its path.

    The model is identified by `model_path` (hashed here, in `hash_mode`) or by a `model` dict from
    `hash_model`. `inputs` is what the forward saw, e.g. {"input_ids": ids} (see `describe_inputs`).
    `specs` ({name: Activation} or a list) types the activations; each must match its array's shape, and an
    activation with no type must be [tokens, features].
    """
    if (model_path is None) == (model is None):
        raise ValueError("give exactly one of model_path (to hash) or model (a hash_model() dict)")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype is the dtype HF ran in, 'float32' or 'bfloat16', got {dtype!r}")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad reference name {name!r}")
    root = Path(root)
    final = root / name
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists (pass overwrite=True to replace it)")
    specs = as_specs(specs)
    acts = _as_set(activations, specs)
    manifest = {
        "format": FORMAT,
        "name": name,
        "model": model if model is not None else hash_model(model_path, hash_mode),
        "inputs": describe_inputs(inputs),
        "dtype": dtype,
        "versions": library_versions(),
        "captured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "names": list(acts),
        "shapes": {n: list(a.shape) for n, a in acts.items()},
        "activations": {n: specs[n].to_json() for n in acts if n in specs},
        "extra": extra or {},
    }
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_npz(tmp / "activations.npz", acts)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        if final.exists():
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = root / f".{name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
        else:
            os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def _resolve(path: str | Path, root: Path) -> Path:
    p = Path(path)
    if not p.exists() and not p.is_absolute() and (root / p).exists():
        p = root / p
    if not (p / "manifest.json").is_file():
        raise FileNotFoundError(f"{p}: no manifest.json (not a reference directory)")
    return p


def _diff_value(field_name: str, stored: Any, given: Any) -> tuple[str, Any, Any] | None:
    if stored == given:
        return None
    if isinstance(stored, list) and isinstance(given, list):
        first = next((i for i, (a, b) in enumerate(zip(stored, given)) if a != b), min(len(stored), len(given)))
        where = f"{field_name} (length {len(stored)} vs {len(given)}, first difference at index {first})"
        return where, stored, given
    return field_name, stored, given


def check_model(manifest: dict, expect_model: str | Path | dict) -> list[tuple[str, Any, Any]]:
    stored = manifest["model"]
    if not isinstance(expect_model, dict):
        expect_model = hash_model(expect_model, stored.get("hash_mode", "full"))
    if expect_model.get("hash_mode") != stored.get("hash_mode"):
        return [("model.hash_mode", stored.get("hash_mode"), expect_model.get("hash_mode"))]
    diffs = [_diff_value(f"model.{k}", stored.get(k), expect_model.get(k)) for k in ("config_sha256", "weights_sha256")]
    return [d for d in diffs if d]


def check_inputs(manifest: dict, expect_inputs: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    stored, given = manifest["inputs"], describe_inputs(expect_inputs)
    diffs = []
    for k in list(stored) + [k for k in given if k not in stored]:
        if k not in given:
            diffs.append((f"inputs.{k}", stored[k], "(not given)"))
        elif k not in stored:
            diffs.append((f"inputs.{k}", "(not stored)", given[k]))
        elif d := _diff_value(f"inputs.{k}", stored[k], given[k]):
            diffs.append(d)
    return diffs


def load_reference(path: str | Path, expect_model: str | Path | dict | None = None,
                   expect_inputs: Mapping[str, Any] | None = None, expect_dtype: str | None = None,
                   root: str | Path = DEFAULT_ROOT) -> Reference:
    """Load a reference, refusing (ReferenceMismatch) one that is not for the given model / inputs / dtype.

    `path` is the reference directory, or its name under `root`. `expect_model` is a checkpoint path (hashed
    here in the reference's own hash mode) or a `hash_model` dict; `expect_inputs` a mapping like the one
    saved (all keys are compared: a key on one side only is a difference). None skips that check.
    """
    p = _resolve(path, Path(root))
    manifest = json.loads((p / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise ReferenceMismatch(p, [("format", manifest.get("format"), FORMAT)])
    diffs = []
    if expect_model is not None:
        diffs += check_model(manifest, expect_model)
    if expect_inputs is not None:
        diffs += check_inputs(manifest, expect_inputs)
    if expect_dtype is not None and manifest["dtype"] != expect_dtype:
        diffs.append(("dtype", manifest["dtype"], expect_dtype))
    if diffs:
        raise ReferenceMismatch(p, diffs)
    with np.load(p / "activations.npz", allow_pickle=False) as z:
        stored = set(z.files)
        if stored != set(manifest["names"]):
            raise ValueError(f"{p}: activations.npz and manifest.json list different names: "
                             f"only in npz {sorted(stored - set(manifest['names']))}, "
                             f"only in manifest {sorted(set(manifest['names']) - stored)}")
        acts = {n: z[n] for n in manifest["names"]}
    _check_shapes(p, manifest, acts)
    return Reference(path=p, manifest=manifest, activations=acts)


def _check_shapes(p: Path, manifest: dict, acts: Mapping[str, np.ndarray]) -> None:
    """The arrays must have the shapes the manifest lists (in "shapes", and in "activations" where typed): an
    npz replaced or edited apart from its manifest is not the reference the manifest describes."""
    listed = [("shapes", n, s) for n, s in manifest.get("shapes", {}).items()]
    listed += [("activations", n, d["shape"]) for n, d in manifest.get("activations", {}).items()]
    for where, name, shape in listed:
        if name not in acts:
            raise ValueError(f"{p}: manifest.json {where} lists {name!r}, which activations.npz lacks")
        if list(acts[name].shape) != list(shape):
            raise ValueError(f"{p}: activation {name!r} is {list(acts[name].shape)} in activations.npz but "
                             f"{list(shape)} in manifest.json {where}")
