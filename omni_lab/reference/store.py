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

Writes go to a hidden temporary directory next to the target that takes its place when complete
(omni_lab/atomic.py), so a crashed capture never leaves a half-written reference under the real name, and the
old one is replaced only by a complete new one.

Loading checks before it trusts: manifest.json must be a JSON object with fields of the right types; the npz
must be a zip of uncompressed float32 .npy members whose headers declare exactly the bytes they hold (a header
declaring 10^9 rows is refused, not allocated), read without pickles, CRCs checked; and the arrays must have
the shapes the manifest lists. Every failure is a ReferenceFileError naming the file and the field or member.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import platform
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..activations import Activation, as_specs, routing_parts
from ..atomic import atomic_dir, clean_leftovers
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
    positions) become lists, anything else becomes {"sha256", "shape", "dtype"}. A list of arrays (the
    features of several audios, each of its own length) is described array by array.
    """
    out = {}
    for k, v in inputs.items():
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, np.ndarray) or hasattr(x, "detach") for x in v):
            out[k] = [describe_inputs({k: x})[k] for x in v]
            continue
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
    with atomic_dir(final) as tmp:
        _write_npz(tmp / "activations.npz", acts)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return final


def _resolve(path: str | Path, root: Path) -> Path:
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        clean_leftovers(root / p)  # puts back a reference a killed replacement left renamed aside
        if (root / p).exists():
            p = root / p
    clean_leftovers(p)
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
    manifest = read_manifest(p / "manifest.json")
    diffs = []
    if expect_model is not None:
        diffs += check_model(manifest, expect_model)
    if expect_inputs is not None:
        diffs += check_inputs(manifest, expect_inputs)
    if expect_dtype is not None and manifest["dtype"] != expect_dtype:
        diffs.append(("dtype", manifest["dtype"], expect_dtype))
    if diffs:
        raise ReferenceMismatch(p, diffs)
    acts = read_npz(p / "activations.npz", manifest["names"])
    _check_shapes(p, manifest, acts)
    return Reference(path=p, manifest=manifest, activations=acts)


def read_manifest(path: Path) -> dict:
    """manifest.json, its fields checked for the types load_reference and compare read."""
    def bad(message: str, field: str | None = None) -> ReferenceFileError:
        return ReferenceFileError(message, path=path, field=field)

    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise bad(f"not JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(m, dict):
        raise bad(f"is a JSON {type(m).__name__}, not an object")
    if m.get("format") != FORMAT:
        raise ReferenceMismatch(path.parent, [("format", m.get("format"), FORMAT)])
    names = m.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise bad("must be a list of distinct activation names", "names")
    if m.get("dtype") not in ("float32", "bfloat16"):
        raise bad(f"must be 'float32' or 'bfloat16', got {m.get('dtype')!r:.40}", "dtype")
    model = m.get("model")
    if not isinstance(model, dict) or model.get("hash_mode", "full") not in ("full", "fast"):
        raise bad("must be an object with hash_mode 'full' or 'fast'", "model")
    for key in ("inputs", "shapes", "activations", "extra"):
        if not isinstance(m.get(key, {}), dict):
            raise bad(f"must be an object, got {type(m[key]).__name__}", key)
    shape_ok = lambda s: isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s)  # noqa: E731
    for n, s in m.get("shapes", {}).items():
        if not shape_ok(s):
            raise bad(f"must be a list of non-negative ints, got {s!r:.60}", f"shapes.{n}")
    for n, d in m.get("activations", {}).items():
        if not isinstance(d, dict) or not shape_ok(d.get("shape")):
            raise bad("must be an object with a shape", f"activations.{n}")
    return m


def read_npz(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The activations of an npz, each member's .npy header checked before anything is allocated: float32 (no
    objects, so never a pickle), its declared shape exactly the bytes the member holds, the member stored
    uncompressed (as _write_npz writes it), so its size is bounded by the file's. CRCs are checked as read."""
    def bad(message: str, field: str | None = None) -> ReferenceFileError:
        return ReferenceFileError(message, path=path, field=field)

    try:
        with zipfile.ZipFile(path) as zf:
            members = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy") or info.filename[:-4] in members:
                    raise bad("not a member of ours (each is <name>.npy, once)", info.filename)
                members[info.filename[:-4]] = info
            if set(members) != set(names):
                raise bad(f"activations.npz and manifest.json list different names: only in npz "
                          f"{sorted(set(members) - set(names))}, only in manifest {sorted(set(names) - set(members))}")
            return {n: _read_member(zf, members[n], bad) for n in names}
    # NotImplementedError: zipfile's answer to a member of a zip version or method it does not implement
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        if isinstance(e, ReferenceFileError):
            raise
        raise bad(f"not a readable npz ({type(e).__name__}: {e})") from None


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, bad) -> np.ndarray:
    if info.compress_type != zipfile.ZIP_STORED:
        raise bad("is compressed; references are stored uncompressed", info.filename)
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise bad(f"npy format version {version}", info.filename)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f, max_header_size=10000)
        if dtype != np.dtype("<f4"):
            raise bad(f"is {dtype}, references hold float32", info.filename)
        if fortran:  # _write_npz writes C order; a flipped flag would read the array transposed
            raise bad("is in Fortran order; references are written in C order", info.filename)
        nbytes = math.prod(shape) * 4
        held = info.file_size - f.tell()
        if nbytes != held:
            raise bad(f"declares shape {list(shape)} ({nbytes} bytes) but holds {held}", info.filename)
        flat = np.empty(nbytes // 4, "<f4")
        view, got = memoryview(flat).cast("B"), 0
        while got < nbytes:  # reading to the member's end checks its CRC
            n = f.readinto(view[got:])
            if not n:
                raise bad(f"ends after {got} of its {nbytes} bytes", info.filename)
            got += n
    return flat.reshape(shape)


def _check_shapes(p: Path, manifest: dict, acts: Mapping[str, np.ndarray]) -> None:
    """The arrays must have the shapes the manifest lists (in "shapes", and in "activations" where typed): an
    npz replaced or edited apart from its manifest is not the reference the manifest describes."""
    listed = [("shapes", n, s) for n, s in manifest.get("shapes", {}).items()]
    listed += [("activations", n, d["shape"]) for n, d in manifest.get("activations", {}).items()]
    for where, name, shape in listed:
        if name not in acts:
            raise ReferenceFileError(f"{p}: manifest.json {where} lists {name!r}, which activations.npz lacks")
        if list(acts[name].shape) != list(shape):
            raise ReferenceFileError(f"{p}: activation {name!r} is {list(acts[name].shape)} in activations.npz but "
                             f"{list(shape)} in manifest.json {where}")
