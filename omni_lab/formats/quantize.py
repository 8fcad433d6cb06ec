"""The streaming quantizer: a Transformers checkpoint directory -> one GGUF file, tensor by tensor.

Peak host memory is a few chunks of rows (about 16 MiB of float32 each), not a tensor and never the model:
tensors are read in row chunks with plain reads at the offsets the safetensors headers give, quantized
chunk by chunk (Q8_0 blocks are independent, so this is byte-identical to quantizing the whole tensor),
and written chunk by chunk through GGUFWriter.write_tensor_data. We read rather than memory-map: pages of
a mapped file count in the process's resident set until it is unmapped, so mapping a 60 GB checkpoint
would show (and on some systems hold) tens of GB.

What is quantized, in every part of Qwen3-Omni (`target_dtype` is the rule, and the only place it lives):
Q8_0 goes to the linears whose K allows it, the weights [N, K] and the stacked experts [E, N, K] of a
checkpoint saved in the live layout, K (the last dimension) a multiple of 32, unless the name matches a row of
KEEP_AS_STORED or a `keep` pattern (fnmatch, where `*` crosses dots). KEEP_AS_STORED names the weights of two
or more dimensions that are not linears, each with its reason: convolutions and code2wav's code embedding,
which their kernels read 16-bit (or f32) only; they keep their dtype whatever their shape, so that a K=32
convolution stays BF16 like the K=7 ones. Everything else stays unquantized: 1-D tensors (norms, biases) as
F32, as llama.cpp stores them; integers as they are; the rest in their own dtype (BF16 stays BF16).
The output is written under a temporary name beside it and renamed when complete (omni_lab/atomic.py).
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OmniLabError
from ..gpu.buffers import bf16_to_f32
from .gguf_io import FILE_TYPE_Q8_0, GGUFStreamWriter
from .q8_0 import QK, quantize_q8_0
from .safetensors_io import Checkpoint, CheckpointError

QTYPES = ("q8_0", "none")
CHUNK_ELEMENTS = 4 << 20  # values per chunk: 16 MiB as float32

_ITEMSIZE = {"bf16": 2, "f16": 2, "f32": 4, "i32": 4, "i64": 8}
_NP = {"bf16": np.uint16, "f16": np.float16, "f32": np.float32, "i32": np.int32, "i64": np.int64}
_ST_DTYPES = {"BF16": "bf16", "F16": "f16", "F32": "f32", "I32": "i32", "I64": "i64"}


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    source: str  # dtype in the checkpoint
    target: str  # dtype in the GGUF
    path: Path
    offset: int  # byte offset of the tensor's data in `path`

    @property
    def nbytes_in(self) -> int:
        return math.prod(self.shape) * _ITEMSIZE[self.source]


# Weights of two or more dimensions that Q8_0 leaves as stored: (fnmatch pattern of checkpoint keys, why).
# `thinker.*audio_tower` and `thinker.*visual` match both the released keys (`thinker.audio_tower.`) and the
# live layout's (`thinker.model.audio_tower.`); code2wav's keys are the same in both.
KEEP_AS_STORED = (
    ("code2wav.*.conv.weight",
     "code2wav's convolutions (causal conv [C_out, C_in/groups, K], transposed [C_in, C_out, K]): ops/conv.py "
     "reads 16-bit or f32 weights, and K is the kernel width, not a dot-product length"),
    ("code2wav.code_embedding.weight",
     "code2wav's code embedding: its mean over the codebooks (ops/embedding.py embedding_mean) reads 16-bit or "
     "f32 tables"),
    ("thinker.*audio_tower.conv2d*.weight",
     "the audio tower's stride-2 Conv2d [C_out, C_in, 3, 3]: convolutions, read 16-bit like code2wav's"),
    ("thinker.*visual.patch_embed.proj.weight",
     "the vision patch embedding, a Conv3d [C_out, 3, T, P, P]: a convolution, read 16-bit like code2wav's"),
    ("thinker.*visual.pos_embed.weight",
     "the vision encoder's learned position grid: an embedding table whose rows are gathered and mixed with "
     "bilinear weights, not a linear; kept 16-bit so the interpolated positions are the checkpoint's"),
)


def kept_by(name: str, keep=()) -> str | None:
    """Why `name` stays as stored: the reason of its KEEP_AS_STORED row, or the `keep` pattern it matches
    (None: nothing keeps it)."""
    for pattern, reason in KEEP_AS_STORED:
        if fnmatch.fnmatchcase(name, pattern):
            return reason
    return next((f"--keep {p}" for p in keep if fnmatch.fnmatchcase(name, p)), None)


def target_dtype(name: str, shape: tuple[int, ...], source: str, qtype: str = "q8_0", keep=()) -> str:
    """The dtype a tensor gets in the GGUF (see the module docstring): integers as stored, 1-D as f32, Q8_0
    for a weight of two or more dimensions whose last is a multiple of 32 and that nothing keeps (kept_by),
    else its own dtype."""
    if source in ("i32", "i64"):
        return source
    if len(shape) <= 1:
        return "f32"
    if qtype == "q8_0" and shape[-1] % QK == 0 and kept_by(name, keep) is None:
        return "q8_0"
    return source


def plan(ckpt: Checkpoint, qtype: str = "q8_0", keep=()) -> list[TensorPlan]:
    out = []
    for name in ckpt.names:  # offsets from the checked headers (Checkpoint reads them before anything else)
        st = ckpt.stored(name)
        if st.dtype not in _ST_DTYPES:
            raise CheckpointError(f"{st.file}: tensor '{name}' has dtype {st.dtype}, which the quantizer does not "
                                  "convert")
        source = _ST_DTYPES[st.dtype]
        out.append(TensorPlan(name, st.shape, source, target_dtype(name, st.shape, source, qtype, keep), st.file,
                              st.start))
    return out


def raw_rows(p: TensorPlan, f, rows_per_chunk: int):
    """The tensor's values as stored ([rows, K] arrays in its source dtype, bf16 as uint16 bits), read
    from the open safetensors file `f` by plain reads at its header offset, rows_per_chunk rows at a
    time. Plain reads, not a memory map: mapped pages would count towards the process's memory."""
    row = p.shape[-1] if p.shape else 1
    n_rows = math.prod(p.shape) // row if row else 0
    item = _ITEMSIZE[p.source]
    for r in range(0, n_rows, rows_per_chunk):
        c = min(rows_per_chunk, n_rows - r)
        raw = np.empty(c * row, dtype=_NP[p.source])
        f.seek(p.offset + r * row * item)
        if f.readinto(memoryview(raw).cast("B")) != raw.nbytes:
            raise CheckpointError(f"{p.path}: truncated inside tensor '{p.name}'")
        yield raw.reshape(c, row)  # [rows, K]


def _chunks(p: TensorPlan, f, progress_update, non_finite: set):
    """The tensor's stored bytes for the GGUF, in chunks of whole rows; its name goes into `non_finite` if it
    holds a NaN or an inf (it is written as it is: the GGUF then warns where it is loaded, as the source would)."""
    row = p.shape[-1] if p.shape else 1
    for raw in raw_rows(p, f, max(1, CHUNK_ELEMENTS // max(row, 1))):
        if p.target == p.source:
            yield raw
            finite = _finite_bits(raw, p.source)
        else:
            wide = bf16_to_f32(raw) if p.source == "bf16" else raw.astype(np.float32)
            finite = bool(np.isfinite(wide).all())
            yield quantize_q8_0(wide) if p.target == "q8_0" else wide.astype(_NP[p.target])
        if not finite:
            non_finite.add(p.name)
        progress_update(raw.nbytes)


def _finite_bits(raw: np.ndarray, dtype: str) -> bool:
    """No NaN or inf among stored values (bf16 as its uint16 bits): an exponent of all ones is either."""
    if dtype == "bf16":
        return not ((raw.view(np.uint16) & 0x7F80) == 0x7F80).any()
    return bool(np.isfinite(raw).all()) if raw.dtype.kind == "f" else True


def quantize_checkpoint(src_dir: str | Path, out_path: str | Path, qtype: str = "q8_0", keep=(),
                        progress: bool = True) -> Path:
    """Quantize the checkpoint directory `src_dir` into the GGUF `out_path`; returns the path written."""
    if qtype not in QTYPES:
        raise ValueError(f"quantize_checkpoint: qtype must be one of {QTYPES}, got {qtype!r}")
    src_dir, out_path = Path(src_dir), Path(out_path)
    keep = (keep,) if isinstance(keep, str) else tuple(keep)
    ckpt = Checkpoint(src_dir)
    tensors = plan(ckpt, qtype, keep)
    file_type = FILE_TYPE_Q8_0 if any(t.target == "q8_0" for t in tensors) else None
    from tqdm import tqdm

    bar = tqdm(total=sum(t.nbytes_in for t in tensors), unit="B", unit_scale=True, desc=f"quantize {src_dir.name}",
               disable=not progress)
    handles, non_finite = {}, set()
    try:
        with GGUFStreamWriter(out_path, ckpt.config, src_dir, file_type) as w:
            for t in tensors:
                w.declare(t.name, t.shape, t.target)
            w.begin()
            for t in tensors:
                if t.path not in handles:
                    handles[t.path] = open(t.path, "rb", buffering=0)
                w.write(t.name, _chunks(t, handles[t.path], bar.update, non_finite))
            written = w.close()
    finally:
        bar.close()
        for h in handles.values():
            h.close()
    if non_finite:
        from ..errors import warn_non_finite

        bad = sorted(non_finite)
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        warn_non_finite(src_dir, f"the weights {', '.join(repr(n) for n in bad[:3])}{more} (copied into {written})")
    return written


# ---- CLI ------------------------------------------------------------------------------------------------
def add_parser(subparsers) -> argparse.ArgumentParser:
    """`omni-lab quantize SRC OUT.gguf [--type q8_0] [--keep PATTERN ...]`."""
    p = subparsers.add_parser("quantize", help="quantize a Transformers checkpoint directory into a GGUF file",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="checkpoint directory (config.json + *.safetensors)")
    p.add_argument("out", help="output .gguf file (written under a temporary name, renamed when complete)")
    p.add_argument("--type", dest="qtype", choices=QTYPES, default="q8_0",
                   help="q8_0 (default), or none: convert without quantizing")
    p.add_argument("--keep", nargs="+", action="extend", default=[], metavar="PATTERN",
                   help="fnmatch patterns of HF tensor names to leave unquantized, e.g. 'lm_head.*' '*.embed_tokens.*' "
                        "(in addition to the convolutions and code embedding that always stay as stored)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """The subcommand; errors (CheckpointError, GGUFError) propagate to the CLI, which names them."""
    t0 = time.perf_counter()
    out = quantize_checkpoint(args.src, args.out, args.qtype, tuple(args.keep), progress=not args.no_progress)
    print(f"wrote {out} ({out.stat().st_size / 1e9:.3f} GB) in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv=None) -> int:
    """`python -m omni_lab.formats.quantize SRC OUT ...`, the same as `omni-lab quantize`."""
    parser = argparse.ArgumentParser(prog="python -m omni_lab.formats.quantize")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["quantize", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except OmniLabError as e:
        print(f"omni-lab quantize: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
