"""Q8_0: GGUF's block format (one f16 scale d and 32 int8 q per block, x = d * q; 34 bytes per 32 weights).

Host side: quantize and dequantize through gguf-py itself, so our bytes are llama.cpp's bytes.
GPU side: a Q8_0 weight [N, K] is uploaded as two tensors,
  quants [N, K/4] u32: the int8 values four to a word, element 4j in the low byte (GGUF's own byte order,
                       and the operand layout of WGSL's dot4I8Packed), so upload is a copy, not a repack;
  scales [N, K/32] f16: GGUF's per-block scales, packed two per u32 like every 16-bit tensor here.
Scales stay f16 rather than widened to f32: that keeps the weight at GGUF's 34 bytes per 32 values
(f32 scales would be 36, about 6% more traffic in a bandwidth-bound decode), f16 -> f32 is exact, and
WGSL's core unpack2x16float reads them without the shader-f16 feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

if TYPE_CHECKING:
    from ..gpu import Tensor

QK = 32  # values per block
BLOCK_BYTES = 2 + QK  # f16 scale + 32 int8

# Rows per host->GPU copy in upload_q8_0, by bytes: bounds the host copies made while splitting blocks.
_UPLOAD_CHUNK_BYTES = 32 << 20


def _check_k(shape, what: str) -> int:
    if len(shape) < 1 or shape[-1] % QK:
        raise ValueError(f"{what}: Q8_0 needs a last dimension that is a multiple of {QK}, got shape {tuple(shape)}")
    return shape[-1]


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """float array [..., K] -> Q8_0 blocks [..., K/32*34] uint8, byte-identical to gguf.quants.quantize."""
    x = np.asarray(x)
    _check_k(x.shape, "quantize_q8_0")
    # gguf quantizes float32 (llama.cpp's converter widens BF16 to F32 first); we do the same. An all-zero
    # block divides 0 by 0 inside gguf (and stores zeros, as llama.cpp does): not worth a warning.
    with np.errstate(divide="ignore", invalid="ignore"):
        return quantize(x.astype(np.float32, copy=False), GGMLQuantizationType.Q8_0)


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """Q8_0 blocks [..., K/32*34] uint8 -> float32 [..., K], as gguf.quants.dequantize."""
    blocks = np.asarray(blocks)
    if blocks.dtype != np.uint8 or blocks.shape[-1] % BLOCK_BYTES:
        raise ValueError(f"dequantize_q8_0: expected uint8 blocks with a last dimension a multiple of {BLOCK_BYTES}, "
                         f"got {blocks.dtype} {blocks.shape}")
    return dequantize(blocks, GGMLQuantizationType.Q8_0)


def split_q8_0(blocks: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Q8_0 blocks -> (quants int8 [..., K], scales float16 [..., K/32]) for logical `shape` [..., K]."""
    k = _check_k(shape, "split_q8_0")
    lead = tuple(shape[:-1])
    b = np.asarray(blocks, dtype=np.uint8).reshape(-1, BLOCK_BYTES)  # [n_blocks, 34]
    if b.shape[0] != math.prod(lead) * (k // QK):
        raise ValueError(f"split_q8_0: {np.asarray(blocks).shape} blocks do not hold a {tuple(shape)} tensor")
    scales = np.ascontiguousarray(b[:, :2]).view(np.float16).reshape(*lead, k // QK)
    quants = np.ascontiguousarray(b[:, 2:]).view(np.int8).reshape(*lead, k)
    return quants, scales


def join_q8_0(quants: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of split_q8_0: (int8 [..., K], float16 [..., K/32]) -> blocks [..., K/32*34] uint8."""
    k = _check_k(quants.shape, "join_q8_0")
    lead = quants.shape[:-1]
    q = np.asarray(quants, dtype=np.int8).reshape(-1, QK).view(np.uint8)  # [n_blocks, 32]
    d = np.asarray(scales, dtype=np.float16).reshape(-1, 1).view(np.uint8)  # [n_blocks, 2]
    return np.concatenate([d, q], axis=1).reshape(*lead, k // QK * BLOCK_BYTES)


@dataclass
class Q8Weight:
    """A Q8_0 weight on the GPU: logical `shape` [N, K] (or [E, N, K], a stack of experts); `quants`
    shape[:-1] + [K/4] u32; `scales` shape[:-1] + [K/32] f16."""

    shape: tuple[int, ...]
    quants: "Tensor"
    scales: "Tensor"

    @property
    def nbytes(self) -> int:
        return self.quants.nbytes + self.scales.nbytes

    def row_pieces(self, max_bytes: int, alignment: int) -> list[tuple[int, "Q8Weight"]]:
        """Split along the leading dimension so that both tensors of each piece fit one binding and start
        at aligned offsets. Returns (first_row, piece)."""
        from ..gpu import KernelError

        n = self.shape[0]
        if self.quants.bind_size <= max_bytes and self.scales.bind_size <= max_bytes:
            return [(0, self)]
        q_row, s_row = self.quants.nbytes // n, self.scales.nbytes // n  # bytes per leading row
        step = math.lcm(alignment // math.gcd(q_row, alignment), alignment // math.gcd(s_row, alignment))
        rows = (max_bytes // q_row) // step * step
        if rows == 0 or self.quants.offset % alignment or self.scales.offset % alignment:
            raise KernelError(f"Q8Weight {self.shape}: cannot split at {alignment}-byte aligned rows under {max_bytes} B")
        return [(r, Q8Weight((min(rows, n - r),) + self.shape[1:], self.quants.rows(r, min(rows, n - r)),
                             self.scales.rows(r, min(rows, n - r))))
                for r in range(0, n, rows)]


def upload_q8_0(blocks: np.ndarray, shape, label: str = "") -> Q8Weight:
    """GGUF Q8_0 blocks of a [N, K] weight, or of a stack [E, N, K] (as GGUFCheckpoint.get returns them,
    stacked) -> Q8Weight on the GPU. Copies in row chunks, so a memory-mapped source is never read into
    host memory whole."""
    from ..gpu import runtime

    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"upload_q8_0{' ' + label if label else ''}: expected a [N, K] or [E, N, K] weight, got shape {shape}")
    k = shape[-1]
    n = math.prod(shape[:-1])
    _check_k(shape, f"upload_q8_0 {label}".strip())
    blocks = np.asarray(blocks)
    if blocks.dtype != np.uint8 or blocks.size != n * (k // QK) * BLOCK_BYTES:
        raise ValueError(f"upload_q8_0 {label}: {blocks.dtype} {blocks.shape} is not the Q8_0 blocks of a {shape} tensor")
    blocks = blocks.reshape(n, k // QK * BLOCK_BYTES)  # [rows, K/32*34], leading dims flattened
    rt = runtime()
    quants, scales = rt.empty((n, k // 4), "u32", label=f"{label}.quants"), rt.empty((n, k // QK), "f16", label=f"{label}.scales")
    # An even row count keeps each scales chunk at a 4-byte offset, as queue.write_buffer requires.
    chunk = max(2, _UPLOAD_CHUNK_BYTES // (k // QK * BLOCK_BYTES) // 2 * 2)
    for r in range(0, n, chunk):
        c = min(chunk, n - r)
        q, d = split_q8_0(blocks[r:r + c], (c, k))
        rt.write(quants.rows(r, c), q)
        rt.write(scales.rows(r, c), d)
    return Q8Weight(shape, quants.view(shape[:-1] + (k // 4,)), scales.view(shape[:-1] + (k // QK,)))


def upload_f32_as_q8_0(w: np.ndarray, label: str = "") -> Q8Weight:
    """Quantize a float [N, K] weight with gguf and upload it (tests, notebooks)."""
    return upload_q8_0(quantize_q8_0(w), w.shape, label)
