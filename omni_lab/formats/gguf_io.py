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
import os
import re
from importlib.metadata import version
from pathlib import Path
from typing import Iterable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFWriter, LlamaFileType, RopeScalingType, TokenType
from gguf.constants import GGML_QUANT_VERSION, Keys

from . import names
from ..errors import GGUFError
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
def _rope(config: dict) -> dict:
    """Transformers 5 keeps rope settings in `rope_parameters`; older configs at the top level."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "rope_theta" not in rope and "rope_theta" in config:
        rope["rope_theta"] = config["rope_theta"]
    return rope


def _add_qwen3_hparams(w: GGUFWriter, config: dict, path: Path) -> None:
    try:
        w.add_context_length(int(config["max_position_embeddings"]))
        w.add_embedding_length(int(config["hidden_size"]))
        w.add_block_count(int(config["num_hidden_layers"]))
        w.add_feed_forward_length(int(config["intermediate_size"]))
        w.add_head_count(int(config["num_attention_heads"]))
        w.add_head_count_kv(int(config.get("num_key_value_heads", config["num_attention_heads"])))
        head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
        rope = _rope(config)
        w.add_rope_freq_base(float(rope["rope_theta"]))
    except KeyError as e:
        raise GGUFError(f"{path}: config.json lacks {e.args[0]!r}, which a qwen3 GGUF needs") from None
    if rope.get("rope_type", rope.get("type")) == "yarn" and "factor" in rope:
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))


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
    SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=vocab_size).add_to_gguf(w, quiet=True)


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
        _add_qwen3_hparams(w, config, out)
        if tokenizer_json is not None and tokenizer_json.is_file():
            _add_gpt2_vocab(w, source_dir, int(config.get("vocab_size", 0)))


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

    The file is written as `<out>.partial` and renamed to `out` by `close()` only once complete, so an
    interrupted run never leaves a file under the final name. Use as a context manager: leaving the block
    with an exception removes the partial file.
    """

    def __init__(self, out: str | Path, config: dict, source_dir: str | Path | None = None,
                 file_type: int | None = None):
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.config = config
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
        fout = self._writer.fout[0]
        fout.flush()
        os.fsync(fout.fileno())
        self._writer.close()
        os.replace(self.partial, self.out)
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
        "head_dim": get(Keys.Attention.KEY_LENGTH, n_embd // n_head if n_embd and n_head else None),
        "max_position_embeddings": get(Keys.LLM.CONTEXT_LENGTH),
        "rms_norm_eps": get(Keys.Attention.LAYERNORM_RMS_EPS),
        "rope_parameters": {"rope_type": "default", "rope_theta": get(Keys.Rope.FREQ_BASE, 10000.0)},
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": get(Keys.Tokenizer.BOS_ID),
        "eos_token_id": get(Keys.Tokenizer.EOS_ID),
    }


class GGUFCheckpoint(TensorIndex):
    """A GGUF file read like a Checkpoint directory: `.config`, `.names` (HF keys), `shape`, `dtype`, `get`,
    `get_f32`, `expect`, `files`. `architecture`, when given, is checked against the file's."""

    _error = GGUFError
    _shapes_from = "the config"

    def __init__(self, path: str | Path, architecture: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise GGUFError(f"{self.path}: no such GGUF file")
        size = self.path.stat().st_size
        try:
            self._reader = GGUFReader(self.path, "r")
        except ValueError as e:
            unknown = re.search(r"(\d+)\)? is not a valid GGMLQuantizationType", str(e))
            if unknown:
                raise GGUFError(f"{self.path}: unknown tensor type {unknown.group(1)} (not a GGML type that gguf "
                                f"{_GGUF_VERSION} knows)") from None
            raise GGUFError(f"{self.path}: truncated or corrupt GGUF file ({size} bytes): {e}") from None
        except (IndexError, KeyError, OverflowError, UnicodeDecodeError, MemoryError) as e:
            # gguf's reader indexes past the end of a short memory map instead of checking sizes.
            raise GGUFError(f"{self.path}: truncated or corrupt GGUF file ({size} bytes): {type(e).__name__}: {e}") from None
        for t in self._reader.tensors:
            if t.data_offset + t.n_bytes > size:
                raise GGUFError(f"{self.path}: truncated: tensor '{t.name}' ends at byte {t.data_offset + t.n_bytes}, "
                                f"the file has {size}")
        field = self._reader.get_field(Keys.General.ARCHITECTURE)
        self.architecture: str = field.contents() if field is not None else ""
        if architecture is not None and self.architecture != architecture:
            raise GGUFError(f"{self.path}: architecture is '{self.architecture}', expected '{architecture}'")
        self._stored = {}  # HF name -> its tensor record
        for t in self._reader.tensors:
            try:
                hf = names.gguf_to_hf(t.name, self.architecture)
            except names.UnknownTensorName:
                hf = t.name  # a tensor llama.cpp adds and HF has not (rope_freqs): kept under its GGUF name
            self._stored[hf] = t
        config = self._reader.get_field(HF_CONFIG_KEY)
        if config is not None:
            self.config: dict = json.loads(config.contents())
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

    @property
    def tokenizer_json(self) -> str | None:
        return self.field(TOKENIZER_JSON_KEY)

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
