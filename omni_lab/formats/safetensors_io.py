"""Transformers checkpoint directories: config.json plus safetensors weights, one file or sharded.

Tensors are read one at a time through safetensors' memory map, so peak host memory is about the
largest tensor. BF16 stays BF16: it is returned as uint16 bit patterns tagged "bf16". Pickle checkpoints
(`*.bin`, `*.pt`) are refused, never loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open

from ..errors import CheckpointError

# safetensors dtype -> our dtype name
_DTYPES = {"BF16": "bf16", "F16": "f16", "F32": "f32", "I32": "i32", "I64": "i64", "U8": "u8", "BOOL": "u8"}


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

    def expect(self, name: str, shape: tuple[int, ...]) -> None:
        """Raise unless tensor `name` exists with this shape."""
        got = self.shape(name)
        if got != tuple(shape):
            raise self._error(f"{self.path}: tensor '{name}' has shape {list(got)}, expected {list(shape)} "
                              f"from {self._shapes_from}")


class Checkpoint(TensorIndex):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: not a checkpoint directory")
        config = self.path / "config.json"
        if not config.is_file():
            raise CheckpointError(f"{self.path}: no config.json")
        self.config: dict = json.loads(config.read_text())
        self._stored = self._index()  # name -> its shard
        self._handles: dict[Path, object] = {}

    def _index(self) -> dict[str, Path]:
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index}: no weight_map")
            files = {f: self.path / f for f in set(weight_map.values())}
            for name, f in sorted(files.items()):
                if not f.is_file():
                    raise CheckpointError(f"{index} names shard {name}, which is absent from {self.path}")
            return {k: files[v] for k, v in weight_map.items()}
        shards = sorted(self.path.glob("*.safetensors"))
        if not shards:
            pickles = sorted(p.name for p in self.path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
            if pickles:
                raise CheckpointError(
                    f"{self.path}: only pickle weights ({', '.join(pickles)}); omni_lab never loads pickles. "
                    "Convert them to safetensors with Transformers (save_pretrained(..., safe_serialization=True)).")
            raise CheckpointError(f"{self.path}: no *.safetensors weights")
        file_of = {}
        for shard in shards:
            with safe_open(shard, framework="pt") as f:
                for k in f.keys():
                    file_of[k] = shard
        return file_of

    def _handle(self, name: str):
        shard = self._stored_at(name)
        h = self._handles.get(shard)
        if h is None:
            h = self._handles[shard] = safe_open(shard, framework="pt")
        return h

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(name).get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        st = self._handle(name).get_slice(name).get_dtype()
        if st not in _DTYPES:
            raise CheckpointError(f"{self.path}: tensor '{name}' has unsupported dtype {st}")
        return _DTYPES[st]

    def get(self, name: str) -> tuple[np.ndarray, str]:
        """One tensor as (host array, dtype name); bf16 as uint16 bit patterns."""
        import torch

        t = self._handle(name).get_tensor(name)
        dtype = self.dtype(name)
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16), dtype
        return t.numpy(), dtype

    def get_f32(self, name: str) -> np.ndarray:
        """One tensor widened to float32 (for small tensors such as norm weights)."""
        from ..gpu.buffers import bf16_to_f32

        arr, dtype = self.get(name)
        return bf16_to_f32(arr) if dtype == "bf16" else arr.astype(np.float32)

    def files(self) -> list[Path]:
        return sorted(set(self._stored.values()))
