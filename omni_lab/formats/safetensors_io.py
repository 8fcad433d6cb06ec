"""Transformers checkpoint directories: config.json plus safetensors weights, one file or sharded.

Tensors are read one at a time through safetensors' memory map, so peak host memory is about the
largest tensor. BF16 stays BF16: it is returned as uint16 bit patterns tagged "bf16". Pickle checkpoints
(`*.bin`, `*.pt`) are refused, never loaded.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
from safetensors import SafetensorError, safe_open

from ..errors import CheckpointError

# safetensors dtype -> our dtype name, for the dtypes omni_lab reads
_DTYPES = {"BF16": "bf16", "F16": "f16", "F32": "f32", "I32": "i32", "I64": "i64", "U8": "u8", "BOOL": "u8"}
# Bytes per element of every dtype the safetensors format defines: a header is checked (sizes, offsets) for any
# of them, and a tensor of one omni_lab does not read is refused only when it is read.
ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
            "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
FLOAT_DTYPES = ("bf16", "f16", "f32")
# safetensors' own limit (MAX_HEADER_SIZE in its Rust source): a longer header is refused before it is read
MAX_HEADER_BYTES = 100_000_000
MAX_DIMS = 16


class StoredTensor(NamedTuple):
    """One tensor of a safetensors header, checked: its dtype (safetensors' name), shape, and absolute byte
    range [start, end) in `file`."""
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int
    file: Path


def _dims(shape) -> tuple[int, ...] | None:
    ok = (isinstance(shape, list) and len(shape) <= MAX_DIMS
          and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape))
    return tuple(shape) if ok else None


def read_safetensors_header(path: str | Path) -> dict[str, StoredTensor]:
    """The tensors of a safetensors file, from its header (8-byte little-endian length, then JSON), checked
    before anything is allocated from it: the length against the file size, the JSON an object of tensor
    entries, each with a known dtype, a shape of non-negative ints and data_offsets [begin, end] that hold
    exactly shape x itemsize bytes; the tensors must tile the data section (contiguous from 0 to the file's
    end, as safetensors itself requires), so no tensor reads past the file or another tensor's bytes."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"truncated safetensors file ({size} bytes, no header length)", path=path)
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(f"header length {n} exceeds the file ({size} bytes) or safetensors' limit "
                                  f"({MAX_HEADER_BYTES})", path=path)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"header is not UTF-8 JSON ({type(e).__name__}: {e})", path=path) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"header is a JSON {type(header).__name__}, not an object", path=path)
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError("__metadata__ must map strings to strings", path=path, field="__metadata__")
    data_start, data_len = 8 + n, size - 8 - n
    out = {}
    for name, info in header.items():
        if not isinstance(info, dict):
            raise CheckpointError("header entry is not an object", path=path, field=f"tensor '{name}'")
        dtype, shape, offsets = info.get("dtype"), _dims(info.get("shape")), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            raise CheckpointError(f"unknown dtype {dtype!r}", path=path, field=f"tensor '{name}'")
        if shape is None:
            raise CheckpointError(f"shape {info.get('shape')!r} is not a list of at most {MAX_DIMS} non-negative "
                                  "ints", path=path, field=f"tensor '{name}'")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_len):
            raise CheckpointError(f"data_offsets {offsets!r} are not [begin, end] inside the data section "
                                  f"({data_len} bytes)", path=path, field=f"tensor '{name}'")
        nbytes = math.prod(shape) * ITEMSIZE[dtype]
        if offsets[1] - offsets[0] != nbytes:
            raise CheckpointError(f"data_offsets {offsets} hold {offsets[1] - offsets[0]} bytes, its shape "
                                  f"{list(shape)} of {dtype} needs {nbytes}", path=path, field=f"tensor '{name}'")
        out[name] = StoredTensor(dtype, shape, data_start + offsets[0], data_start + offsets[1], path)
    end = data_start
    for name, t in sorted(out.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if t.start != end:
            raise CheckpointError(f"starts at data byte {t.start - data_start}, where the tensor before it "
                                  f"ends at {end - data_start}: tensors overlap or leave a gap", path=path,
                                  field=f"tensor '{name}'")
        end = t.end
    if end != size:
        raise CheckpointError(f"the tensors end at byte {end}, the file has {size}: truncated or padded",
                              path=path)
    return out


class TensorIndex:
    """What Checkpoint and GGUFCheckpoint share: `_stored` maps each tensor's HF name to where it is stored
    (a safetensors shard, a GGUF tensor record); names, membership, the lookup that names a missing tensor
    and the shape check (through the subclass's `shape`) read it. Errors are `_error`s naming `path`;
    expected shapes come from `_shapes_from`."""

    _error = CheckpointError
    _shapes_from = "config.json"
    path: Path
    _stored: dict

    @property
    def names(self) -> list[str]:
        return list(self._stored)

    def __contains__(self, name: str) -> bool:
        return name in self._stored

    def _stored_at(self, name: str):
        try:
            return self._stored[name]
        except KeyError:
            raise self._error(f"{self.path}: tensor '{name}' is missing") from None

    def get_f32(self, name: str) -> np.ndarray:
        """One float tensor as float32 (bf16 widened, q8_0 dequantized). Integer tensors are refused: where
        float weights are expected, integers widened to float would be a wrong checkpoint run silently."""
        from ..gpu.buffers import bf16_to_f32
        from .q8_0 import dequantize_q8_0

        arr, dtype = self.get(name)
        if dtype == "q8_0":
            return dequantize_q8_0(arr)
        if dtype not in FLOAT_DTYPES:
            raise self._error(f"{self.path}: tensor '{name}' is {dtype}, where float weights are expected")
        return bf16_to_f32(arr) if dtype == "bf16" else arr.astype(np.float32)

    def expect(self, name: str, shape: tuple[int, ...]) -> None:
        """Raise unless tensor `name` exists with this shape."""
        got = self.shape(name)
        if got != tuple(shape):
            raise self._error(f"{self.path}: tensor '{name}' has shape {list(got)}, expected {list(shape)} "
                              f"from {self._shapes_from}")


class Checkpoint(TensorIndex):
    def __init__(self, path: str | Path):
        from ..models.config import read_config

        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: not a checkpoint directory")
        config = self.path / "config.json"
        if not config.is_file():
            raise CheckpointError(f"{self.path}: no config.json")
        self.config: dict = read_config(config)
        self._stored = self._index()  # name -> its StoredTensor (shard, dtype, shape, byte range)
        self._handles: dict[Path, object] = {}

    def _shards(self) -> tuple[list[Path], dict[str, str] | None]:
        """The shard files, and the index's weight_map (None without an index). Every shard the index names
        must be a file inside this directory: a path that leaves it (../, absolute, a symlink out) is refused."""
        index = self.path / "model.safetensors.index.json"
        if not index.is_file():
            shards = sorted(self.path.glob("*.safetensors"))
            if not shards:
                pickles = sorted(p.name for p in self.path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
                if pickles:
                    raise CheckpointError(
                        f"{self.path}: only pickle weights ({', '.join(pickles)}); omni_lab never loads pickles. "
                        "Convert them to safetensors with Transformers (save_pretrained(..., safe_serialization=True)).")
                raise CheckpointError(f"{self.path}: no *.safetensors weights")
            return shards, None
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, AttributeError) as e:
            raise CheckpointError(f"not a JSON object ({type(e).__name__}: {e})", path=index) from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError("weight_map must map tensor names to shard file names", path=index,
                                  field="weight_map")
        root = self.path.resolve()
        shards = []
        for name in sorted(set(weight_map.values())):
            f = (self.path / name).resolve()
            if not f.is_relative_to(root):
                raise CheckpointError(f"names shard {name!r}, which is outside {self.path}", path=index,
                                      field="weight_map")
            if not f.is_file():
                raise CheckpointError(f"names shard {name}, which is absent from {self.path}", path=index,
                                      field="weight_map")
            shards.append(self.path / name)
        return shards, weight_map

    def _index(self) -> dict[str, StoredTensor]:
        """Every tensor from the checked headers of the shards. A name stored in two shards is refused (a stray
        copy would otherwise silently override the weights), and so is an index that maps a tensor to a shard
        which does not hold it."""
        shards, weight_map = self._shards()
        stored: dict[str, StoredTensor] = {}
        for shard in shards:
            for name, t in read_safetensors_header(shard).items():
                if name in stored:
                    raise CheckpointError(f"tensor '{name}' is stored in both {stored[name].file.name} and "
                                          f"{shard.name}; remove the stray file", path=self.path)
                stored[name] = t
        if weight_map is None:
            return stored
        for name, shard in weight_map.items():
            if name not in stored or stored[name].file.name != Path(shard).name:
                raise CheckpointError(f"maps tensor '{name}' to {shard}, which does not hold it",
                                      path=self.path / "model.safetensors.index.json", field="weight_map")
        return {name: stored[name] for name in weight_map}

    def _handle(self, shard: Path):
        h = self._handles.get(shard)
        if h is None:
            try:
                h = self._handles[shard] = safe_open(shard, framework="pt")
            except SafetensorError as e:
                raise CheckpointError(f"safetensors cannot open it: {e}", path=shard) from None
        return h

    def stored(self, name: str) -> StoredTensor:
        return self._stored_at(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._stored_at(name).shape

    def dtype(self, name: str) -> str:
        st = self._stored_at(name).dtype
        if st not in _DTYPES:
            raise CheckpointError(f"{self.path}: tensor '{name}' has unsupported dtype {st}")
        return _DTYPES[st]

    def get(self, name: str) -> tuple[np.ndarray, str]:
        """One tensor as (host array, dtype name); bf16 as uint16 bit patterns."""
        import torch

        dtype = self.dtype(name)
        shard = self._stored_at(name).file
        try:
            t = self._handle(shard).get_tensor(name)
        except SafetensorError as e:
            raise CheckpointError(f"safetensors cannot read it: {e}", path=shard, field=f"tensor '{name}'") from None
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16), dtype
        return t.numpy(), dtype

    def files(self) -> list[Path]:
        return sorted({t.file for t in self._stored.values()})
