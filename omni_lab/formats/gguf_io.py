"""GGUF files through the gguf package (no parser of ours): a streaming writer and a reader with the
interface of safetensors_io.Checkpoint, so model loaders take either.

What we write:
- dense Qwen3 (`model_type` 'qwen3'): llama.cpp's architecture 'qwen3', its tensor names (formats/names.py)
  and the hyperparameter and tokenizer keys llama.cpp's convert_hf_to_gguf.py writes for Qwen2/Qwen3, so
  llama.cpp can run the file;
- anything else (Qwen3-Omni): architecture 'qwen3omni-omnilab' (ours), HF tensor keys kept;
- always: the HF config.json verbatim under 'omni_lab.hf_config' (so `.config` is exact), and the
  tokenizer.json text under 'omni_lab.tokenizer_json' when the checkpoint has one (a GGUF alone runs).

Reading: `GGUFCheckpoint(path)`; `.get(name)` returns BF16 as uint16 bit patterns (like Checkpoint) and
Q8_0 as its raw blocks [N, K/32*34] uint8, read-only views of the memory-mapped file.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from importlib.metadata import version
from pathlib import Path
from typing import Iterable

import numpy as np
from gguf import (GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType,
                  RopeScalingType, TokenType)
from gguf.constants import GGML_QUANT_VERSION, Keys

from .. import atomic
from . import names
from ..errors import CheckpointError, GGUFError
from ..models.config import ConfigError, Fields, parse_config
from .safetensors_io import TensorIndex

HF_CONFIG_KEY = "omni_lab.hf_config"
TOKENIZER_JSON_KEY = "omni_lab.tokenizer_json"

# Our dtype names <-> GGML tensor types.
GGML_TYPE = {
    "q8_0": GGMLQuantizationType.Q8_0,
    "f32": GGMLQuantizationType.F32,
    "f16": GGMLQuantizationType.F16,
    "bf16": GGMLQuantizationType.BF16,
    "i32": GGMLQuantizationType.I32,
    "i64": GGMLQuantizationType.I64,
}
DTYPE_OF = {v: k for k, v in GGML_TYPE.items()}
_NP_DTYPE = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16, "i32": np.int32, "i64": np.int64}

# llama.cpp's pre-tokenizer name for the Qwen2/Qwen3 tokenizer: convert_hf_to_gguf.py finds it by hashing
# a test tokenization, and the Qwen1.5/2/3 tokenizers all hash to "qwen2". We write it for every qwen3 file.
QWEN_TOKENIZER_PRE = "qwen2"

_GGUF_VERSION = version("gguf")


def tensor_nbytes(shape, dtype: str) -> int:
    block, size = GGML_QUANT_SIZES[GGML_TYPE[dtype]]
    n = int(np.prod(shape, dtype=np.int64))
    if shape and shape[-1] % block:
        raise GGUFError(f"a {dtype} tensor needs a last dimension that is a multiple of {block}, got {tuple(shape)}")
    return n // block * size


# ---- metadata -------------------------------------------------------------------------------------------
def _rope(config: dict, path: Path) -> dict:
    """Transformers 5 keeps rope settings in `rope_parameters`; older configs at the top level."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise ConfigError(f"must be an object, got {rope!r:.40}", path=path, field="rope_parameters")
    rope = dict(rope)
    if "rope_theta" not in rope and "rope_theta" in config:
        rope["rope_theta"] = config["rope_theta"]
    return rope


def _add_qwen3_hparams(w: GGUFWriter, config: dict, path: Path) -> None:
    """llama.cpp's hyperparameters, each read through models/config.Fields: a value of the wrong type or out of
    range is a ConfigError naming the field, not a struct error inside gguf's writer."""
    f = Fields(config, str(path))
    heads = f.int("num_attention_heads")
    head_dim = f.int("head_dim", default=None) or f.int("hidden_size") // heads
    w.add_context_length(f.int("max_position_embeddings"))
    w.add_embedding_length(f.int("hidden_size"))
    w.add_block_count(f.int("num_hidden_layers"))
    w.add_feed_forward_length(f.int("intermediate_size"))
    w.add_head_count(heads)
    w.add_head_count_kv(f.int("num_key_value_heads", hi=heads, default=heads))
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(f.float("rms_norm_eps", below=1.0))
    rope = _rope(config, path)
    w.add_rope_freq_base(f.float("rope_theta", d=rope))
    if rope.get("rope_type", rope.get("type")) == "yarn" and "factor" in rope:
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(f.float("factor", d=rope))
        w.add_rope_scaling_orig_ctx_len(Fields(rope, str(path), "rope_parameters.").int(
            "original_max_position_embeddings", hi=1 << 24))


def _add_gpt2_vocab(w: GGUFWriter, tokenizer_dir: Path, vocab_size: int) -> None:
    """The tokenizer keys convert_hf_to_gguf.py writes for Qwen2/3 (`_set_vocab_gpt2`): token list padded to
    the model's vocab size with [PAD{i}] (UNUSED), added tokens CONTROL when special (or `<|...|>`),
    USER_DEFINED otherwise, merges and special token ids through gguf's own SpecialVocab."""
    from gguf import SpecialVocab
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    vocab = tok.get_vocab(with_added_tokens=True)
    added = tok.get_added_tokens_decoder()  # id -> AddedToken
    vocab_size = max(vocab_size, max(vocab.values()) + 1)
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        token = by_id[i]
        if i in added:
            if not added[i].normalized:  # llama.cpp expects added tokens pre-normalized
                token = tok.decode(tok.encode(token, add_special_tokens=False).ids, skip_special_tokens=False)
            looks_special = token.startswith("<|") and token.endswith("|>")
            types.append(TokenType.CONTROL if added[i].special or looks_special else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
        tokens.append(token)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(QWEN_TOKENIZER_PRE)
    w.add_token_list(tokens)
    w.add_token_types(types)
    try:  # gguf reads the special ids from config.json and tokenizer_config.json itself, and checks them
        SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=vocab_size).add_to_gguf(w, quiet=True)
    except ValueError as e:
        raise CheckpointError(f"{tokenizer_dir}: gguf refuses its special tokens: {e}") from None


def _add_metadata(w: GGUFWriter, config: dict, arch: str, source_dir: Path | None, out: Path,
                  file_type: int | None) -> None:
    if source_dir is not None:
        w.add_name(source_dir.name)
    if file_type is not None:
        w.add_file_type(file_type)
        w.add_quantization_version(GGML_QUANT_VERSION)
    w.add_string(HF_CONFIG_KEY, json.dumps(config))
    tokenizer_json = source_dir / "tokenizer.json" if source_dir is not None else None
    if tokenizer_json is not None and tokenizer_json.is_file():
        w.add_string(TOKENIZER_JSON_KEY, tokenizer_json.read_text(encoding="utf-8"))
    if arch == names.QWEN3_ARCH:
        config_path = source_dir / "config.json" if source_dir is not None else out  # for messages
        _add_qwen3_hparams(w, config, config_path)
        if tokenizer_json is not None and tokenizer_json.is_file():
            _add_gpt2_vocab(w, source_dir, Fields(config, str(config_path)).int("vocab_size", default=1))


# ---- writing --------------------------------------------------------------------------------------------
class _Chunks:
    """A tensor's bytes as a stream of chunks, shaped for GGUFWriter.write_tensor_data, which only asks a
    tensor for `nbytes` and `tofile(f)`; so one tensor is never whole in host memory."""

    def __init__(self, chunks: Iterable[np.ndarray], nbytes: int, name: str):
        self.chunks, self.nbytes, self.name, self.written = chunks, nbytes, name, 0

    def tofile(self, f) -> None:
        for c in self.chunks:
            c = np.ascontiguousarray(c)
            c.tofile(f)
            self.written += c.nbytes
        if self.written != self.nbytes:
            raise GGUFError(f"tensor '{self.name}': wrote {self.written} bytes, declared {self.nbytes}")


class GGUFStreamWriter:
    """Write a GGUF one tensor at a time: `declare` every tensor, then `write` each in the same order.

    The file is written under a temporary name beside `out` (omni_lab/atomic.py) and renamed to `out` by
    `close()` only once complete and fsynced, so an interrupted run never leaves a file under the final name,
    and the next run removes what a killed one left. Use as a context manager: leaving the block with an
    exception removes the partial file.
    """

    def __init__(self, out: str | Path, config: dict, source_dir: str | Path | None = None,
                 file_type: int | None = None):
        self.out = Path(out)
        self.partial = atomic.temp_name(self.out)
        self.config = config
        if not isinstance(config.get("model_type", ""), str):
            raise ConfigError(f"must be a string, got {config['model_type']!r:.40}", path=source_dir or out,
                              field="model_type")
        self.arch = names.arch_for(config.get("model_type"))
        self._writer = GGUFWriter(None, self.arch)
        _add_metadata(self._writer, config, self.arch, Path(source_dir) if source_dir is not None else None, self.out, file_type)
        self._order: list[tuple[str, int]] = []
        self._next = 0
        self._begun = False

    def declare(self, hf_name: str, shape, dtype: str) -> str:
        """Announce a tensor (logical shape, numpy order); returns its GGUF name."""
        if dtype not in GGML_TYPE:
            raise GGUFError(f"{self.out}: tensor '{hf_name}': cannot write dtype {dtype!r} (have {sorted(GGML_TYPE)})")
        try:
            gguf_name = names.hf_to_gguf(hf_name, self.arch)
        except names.UnknownTensorName as e:
            raise GGUFError(f"{self.out}: {e}") from None
        nbytes = tensor_nbytes(shape, dtype)
        # A non-uint8 dtype makes gguf take `shape` as the logical shape (uint8 would mean a byte shape).
        self._writer.add_tensor_info(gguf_name, tuple(int(s) for s in shape), np.dtype(np.float32), nbytes, raw_dtype=GGML_TYPE[dtype])
        self._order.append((hf_name, nbytes))
        return gguf_name

    def begin(self) -> None:
        """Write header, metadata and tensor infos to the partial file."""
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        atomic.clean_leftovers(self.out)
        self._writer.write_header_to_file(path=self.partial)
        self._writer.write_kv_data_to_file()
        self._writer.write_ti_data_to_file()
        self._begun = True

    def write(self, hf_name: str, chunks: Iterable[np.ndarray]) -> None:
        """Write the next declared tensor from an iterable of array chunks (in row order)."""
        if not self._begun:
            self.begin()
        if self._next >= len(self._order) or self._order[self._next][0] != hf_name:
            expected = self._order[self._next][0] if self._next < len(self._order) else "nothing"
            raise GGUFError(f"{self.out}: tensor '{hf_name}' written out of order (next declared: {expected})")
        self._writer.write_tensor_data(_Chunks(chunks, self._order[self._next][1], hf_name))
        self._next += 1

    def close(self) -> Path:
        """Finish: check every tensor was written, flush to disk, rename into place."""
        if not self._begun:
            self.begin()
        if self._next != len(self._order):
            raise GGUFError(f"{self.out}: {len(self._order) - self._next} declared tensors were never written")
        self._writer.close()
        atomic.commit(self.partial, self.out)
        return self.out

    def abort(self) -> None:
        self._writer.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> "GGUFStreamWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_gguf(out: str | Path, config: dict, tensors: dict[str, tuple[np.ndarray, str]],
               source_dir: str | Path | None = None, file_type: int | None = None) -> Path:
    """Write whole in-memory tensors {hf_name: (array, dtype)}; arrays already in their stored form
    (q8_0 blocks uint8, bf16 as uint16 bits). For small files; quantize.py streams big ones."""
    with GGUFStreamWriter(out, config, source_dir, file_type) as w:
        for name, (array, dtype) in tensors.items():
            shape = array.shape
            if dtype == "q8_0":  # blocks [..., K/32*34] -> logical [..., K]
                block, size = GGML_QUANT_SIZES[GGML_TYPE[dtype]]
                shape = (*array.shape[:-1], array.shape[-1] // size * block)
            w.declare(name, shape, dtype)
        for name, (array, dtype) in tensors.items():
            w.write(name, [np.asarray(array)])
        return w.close()


# ---- reading --------------------------------------------------------------------------------------------
def _qwen3_config_from_keys(reader: GGUFReader, tensor_names: set[str]) -> dict:
    """A minimal HF config for a qwen3 GGUF that llama.cpp (not omni_lab) wrote."""
    def get(key: str, default=None):
        f = reader.get_field(key.format(arch=names.QWEN3_ARCH))
        return f.contents() if f is not None else default

    n_embd = get(Keys.LLM.EMBEDDING_LENGTH)
    n_head = get(Keys.Attention.HEAD_COUNT)
    tokens = reader.get_field(Keys.Tokenizer.LIST)
    vocab = len(tokens.data) if tokens is not None else None
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "hidden_size": n_embd,
        "intermediate_size": get(Keys.LLM.FEED_FORWARD_LENGTH),
        "num_hidden_layers": get(Keys.LLM.BLOCK_COUNT),
        "num_attention_heads": n_head,
        "num_key_value_heads": get(Keys.Attention.HEAD_COUNT_KV, n_head),
        "head_dim": get(Keys.Attention.KEY_LENGTH, n_embd // n_head if isinstance(n_embd, int) and isinstance(n_head, int) and n_head > 0
                             else None),  # ints or not, DecoderConfig.from_dict checks them,
        "max_position_embeddings": get(Keys.LLM.CONTEXT_LENGTH),
        "rms_norm_eps": get(Keys.Attention.LAYERNORM_RMS_EPS),
        "rope_parameters": {"rope_type": "default", "rope_theta": get(Keys.Rope.FREQ_BASE, 10000.0)},
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": get(Keys.Tokenizer.BOS_ID),
        "eos_token_id": get(Keys.Tokenizer.EOS_ID),
    }


# GGUF value types (gguf's GGUFValueType) -> their fixed size in bytes; STRING (8) and ARRAY (9) are sized by
# their contents
_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT32 = 8, 9, 4
# llama.cpp allows 4 dimensions; our Qwen3-Omni files hold the vision Conv3d weight [C_out, 3, T, P, P] (5)
MAX_DIMS = 8
_MAX_ARRAY_DEPTH = 3


class _Cursor:
    """Bounds-checked little-endian reads from the memory-mapped header: every count and length is checked
    against the bytes left before it is used, so a corrupt count is an error, not a loop past the end."""

    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def fail(self, message: str, field: str | None = None) -> GGUFError:
        return GGUFError(f"{message} (at byte {self.pos} of {len(self.buf)})", path=self.path, field=field)

    def take(self, n: int, what: str, field: str | None = None) -> int:
        if n > len(self.buf) - self.pos:
            raise self.fail(f"truncated or corrupt: {what} of {n} bytes runs past the end of the file", field)
        start = self.pos
        self.pos += n
        return start

    def u32(self, what, field=None) -> int:
        return struct.unpack_from("<I", self.buf, self.take(4, what, field))[0]

    def u64(self, what, field=None) -> int:
        return struct.unpack_from("<Q", self.buf, self.take(8, what, field))[0]

    def string(self, what, field=None) -> str:
        n = self.u64(f"{what} length", field)
        start = self.take(n, what, field)
        try:
            return bytes(self.buf[start:start + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8", field) from None

    def value(self, vtype: int, key: str, depth: int = 0):
        """Skip one value of type `vtype`, checked; returns it for a UINT32 (the alignment is one)."""
        if vtype == _STRING:
            self.string("string", key)
        elif vtype == _ARRAY:
            itype, count = self.u32("array item type", key), self.u64("array length", key)
            if depth >= _MAX_ARRAY_DEPTH:
                raise self.fail(f"arrays nested deeper than {_MAX_ARRAY_DEPTH}", key)
            # every item takes at least its fixed size (a string at least its 8-byte length)
            least = _SCALAR_SIZE.get(itype, 8 if itype in (_STRING, _ARRAY) else None)
            if least is None:
                raise self.fail(f"unknown array item type {itype}", key)
            if count * least > len(self.buf) - self.pos:
                raise self.fail(f"truncated or corrupt: an array of {count} items cannot fit in the rest of the file", key)
            if itype in _SCALAR_SIZE:
                self.take(count * least, "array", key)
            else:
                for _ in range(count):
                    self.value(itype, key, depth + 1)
        elif vtype in _SCALAR_SIZE:
            start = self.take(_SCALAR_SIZE[vtype], "value", key)
            if vtype == _UINT32:
                return struct.unpack_from("<I", self.buf, start)[0]
        else:
            raise self.fail(f"unknown value type {vtype}", key)
        return None


def check_gguf_layout(path: Path) -> None:
    """Check a GGUF's header before gguf's reader sees it, which trusts it: counts and lengths within the
    file, keys and tensor names valid UTF-8 and unique, known value and tensor types, at most MAX_DIMS dims, each
    tensor's byte size from its type and shape, and the tensors tiling the data section (each at the aligned
    end of the one before, the last ending at the file's end): so a moved offset, a relabelled type or a
    tensor count one too low is an error instead of other bytes read as weights."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < 24:
            raise GGUFError(f"truncated GGUF file ({os.fstat(f.fileno()).st_size} bytes)", path=path)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            _check_layout(_Cursor(buf, path), len(buf))


def _check_layout(c: _Cursor, size: int) -> None:
    if c.u32("magic") != int.from_bytes(b"GGUF", "little"):
        raise c.fail("not a GGUF file (bad magic)")
    version = c.u32("version")
    if version not in (2, 3):
        raise c.fail(f"GGUF version {version} (big-endian, or not one gguf reads: 2, 3)")
    n_tensors, n_kv = c.u64("tensor count"), c.u64("key count")
    if n_kv * 12 > size or n_tensors * 24 > size:  # a key takes at least 12 bytes, a tensor record 24
        raise c.fail(f"truncated or corrupt: {n_kv} keys and {n_tensors} tensors cannot fit in {size} bytes")
    alignment, keys = 32, set()
    for _ in range(n_kv):
        key = c.string("key")
        if key in keys:
            raise c.fail("key appears twice", key)
        keys.add(key)
        vtype = c.u32("value type", key)
        v = c.value(vtype, key)
        if key == "general.alignment":
            if vtype != _UINT32 or not v or v & (v - 1):
                raise c.fail("must be a uint32 power of two", key)
            alignment = v
    tensors = []
    for _ in range(n_tensors):
        name = c.string("tensor name")
        n_dims = c.u32("dimension count", name)
        if not 1 <= n_dims <= MAX_DIMS:
            raise c.fail(f"{n_dims} dimensions (omni_lab reads 1 to {MAX_DIMS})", f"tensor '{name}'")
        dims = [c.u64("dimension", name) for _ in range(n_dims)]
        raw_type, offset = c.u32("tensor type", name), c.u64("tensor offset", name)
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(raw_type)]
        except (ValueError, KeyError):
            raise c.fail(f"unknown tensor type {raw_type} (not a GGML type that gguf {_GGUF_VERSION} knows)",
                         f"tensor '{name}'") from None
        if dims[0] % block:
            raise c.fail(f"first dimension {dims[0]} is not a multiple of its type's block {block}",
                         f"tensor '{name}'")
        tensors.append((offset, math.prod(dims) // block * type_size, name))
    if len({t[2] for t in tensors}) != len(tensors):
        raise c.fail("two tensors have the same name")
    data_start = -(-c.pos // alignment) * alignment
    end = 0
    for offset, nbytes, name in sorted(tensors):
        if offset != -(-end // alignment) * alignment:
            raise c.fail(f"starts at data byte {offset}, the tensor before it ends at {end}: tensors overlap, leave "
                         "a gap, or have the wrong type or shape", f"tensor '{name}'")
        end = offset + nbytes
    if not data_start + end <= size <= data_start + -(-end // alignment) * alignment:
        raise c.fail(f"truncated or corrupt: the data section holds {size - data_start} bytes, its "
                     f"{len(tensors)} tensors {end} (a wrong tensor count?)")


class GGUFCheckpoint(TensorIndex):
    """A GGUF file read like a Checkpoint directory: `.config`, `.names` (HF keys), `shape`, `dtype`, `get`,
    `get_f32`, `expect`, `files`. `architecture`, when given, is checked against the file's."""

    _error = GGUFError
    _shapes_from = "the config"

    def __init__(self, path: str | Path, architecture: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise GGUFError(f"{self.path}: no such GGUF file")
        check_gguf_layout(self.path)
        try:
            self._reader = GGUFReader(self.path, "r")
        except (ValueError, IndexError, KeyError, OverflowError) as e:
            # not expected after check_gguf_layout; gguf's reader has its own rules (and versions), so say which file
            raise GGUFError(f"gguf's reader refuses it: {type(e).__name__}: {e}", path=self.path) from None
        self.architecture: str = self.string_field(Keys.General.ARCHITECTURE) or ""
        if architecture is not None and self.architecture != architecture:
            raise GGUFError(f"{self.path}: architecture is '{self.architecture}', expected '{architecture}'")
        self._stored = {}  # HF name -> its tensor record
        for t in self._reader.tensors:
            try:
                hf = names.gguf_to_hf(t.name, self.architecture)
            except names.UnknownTensorName:
                hf = t.name  # a tensor llama.cpp adds and HF has not (rope_freqs): kept under its GGUF name
            self._stored[hf] = t
        config = self.string_field(HF_CONFIG_KEY)
        if config is not None:
            self.config: dict = parse_config(config, f"{self.path} ({HF_CONFIG_KEY})")
        elif self.architecture == names.QWEN3_ARCH:
            self.config = _qwen3_config_from_keys(self._reader, {t.name for t in self._reader.tensors})
        else:
            self.config = {}

    def gguf_name(self, name: str) -> str:
        return self._stored_at(name).name

    def field(self, key: str, default=None):
        """A metadata value (strings, numbers, lists), or `default`."""
        f = self._reader.get_field(key)
        return f.contents() if f is not None else default

    def string_field(self, key: str) -> str | None:
        """A string metadata value, or None when absent; a value of another type is a GGUFError naming the key."""
        f = self._reader.get_field(key)
        if f is None:
            return None
        if f.types != [GGUFValueType.STRING]:
            raise GGUFError(f"must be a string, is {'/'.join(t.name for t in f.types)}", path=self.path, field=key)
        return f.contents()

    @property
    def tokenizer_json(self) -> str | None:
        """The embedded tokenizer.json text, checked to be a JSON object (the tokenizers package's own error
        on a corrupt one names neither the file nor the key)."""
        text = self.string_field(TOKENIZER_JSON_KEY)
        if text is not None:
            try:
                ok = isinstance(json.loads(text), dict)
            except (json.JSONDecodeError, RecursionError):
                ok = False
            if not ok:
                raise GGUFError("is not a JSON object", path=self.path, field=TOKENIZER_JSON_KEY)
        return text

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in reversed(self._stored_at(name).shape.tolist()))

    def dtype(self, name: str) -> str:
        t = self._stored_at(name)
        if t.tensor_type not in DTYPE_OF:
            raise GGUFError(f"{self.path}: tensor '{name}' is {t.tensor_type.name}, which omni_lab does not read "
                            f"(it reads {', '.join(sorted(GGML_TYPE))})")
        return DTYPE_OF[t.tensor_type]

    def get(self, name: str) -> tuple[np.ndarray, str]:
        """One tensor as (array, dtype): q8_0 as raw blocks [N, K/32*34] uint8, bf16 as uint16 bits.
        Arrays are read-only views of the mapped file."""
        t = self._stored_at(name)
        dtype = self.dtype(name)
        shape = self.shape(name)
        if dtype == "q8_0":
            return t.data.reshape(*shape[:-1], tensor_nbytes(shape[-1:], "q8_0")), dtype
        return t.data.view(_NP_DTYPE[dtype]).reshape(shape), dtype

    def files(self) -> list[Path]:
        return [self.path]


def open_checkpoint(path: str | Path, architecture: str | None = None):
    """A Checkpoint for a directory, a GGUFCheckpoint for a .gguf file."""
    from .safetensors_io import Checkpoint

    p = Path(path)
    if p.is_file():
        return GGUFCheckpoint(p, architecture)
    return Checkpoint(p)


FILE_TYPE_Q8_0 = int(LlamaFileType.MOSTLY_Q8_0)
