"""GPU tensors: typed views into wgpu buffers, uploads, staged readback, pooling and binding splits."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import wgpu

from .device import Gpu, KernelError

# Element sizes in bytes. bf16 and f16 are stored packed two to a u32; shaders widen them by shifts.
ITEMSIZE = {"f32": 4, "f16": 2, "bf16": 2, "i32": 4, "u32": 4, "u8": 1}
STORAGE = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST

_uids = itertools.count(1)


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even as torch does."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    out = (rounded >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def host_dtype(array: np.ndarray) -> str:
    """Our dtype name for a host array; bf16 data travels as uint16 bit patterns and must be named."""
    names = {np.float32: "f32", np.float16: "f16", np.int32: "i32", np.uint32: "u32", np.uint8: "u8"}
    try:
        return names[array.dtype.type]
    except KeyError:
        raise KernelError(f"upload: unsupported host dtype {array.dtype} (give dtype='bf16' for uint16 bf16 bits)")


class Buffer:
    """A wgpu buffer with a process-unique id, so caches never confuse a freed buffer with a new one."""

    __slots__ = ("raw", "size", "uid", "__weakref__")

    def __init__(self, raw: wgpu.GPUBuffer, size: int):
        self.raw = raw
        self.size = size
        self.uid = next(_uids)


class Tensor:
    """A typed, shaped view of `nbytes` at byte `offset` of a Buffer. Rows are the last dimension."""

    __slots__ = ("buffer", "shape", "dtype", "offset", "_pool")

    def __init__(self, buffer: Buffer, shape, dtype: str, offset: int = 0, pool: "BufferPool | None" = None):
        self.buffer = buffer
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.offset = offset
        self._pool = pool

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE[self.dtype]

    @property
    def bind_size(self) -> int:
        """Bytes bound for this tensor: whole 16-byte words, since shaders may read it as vec4 (packed
        16-bit data as vec4<u32>), never past the end of its buffer."""
        return min(max(16, (self.nbytes + 15) // 16 * 16), self.buffer.size - self.offset)

    def binding(self) -> tuple[Buffer, int, int]:
        return (self.buffer, self.offset, self.bind_size)

    def view(self, shape, dtype: str | None = None, offset: int = 0) -> "Tensor":
        """Another view of the same bytes, starting `offset` bytes further in."""
        t = Tensor(self.buffer, shape, dtype or self.dtype, self.offset + offset)
        if t.offset + t.nbytes > self.buffer.size:
            raise KernelError(f"view: {t.shape} {t.dtype} at byte {t.offset} runs past a buffer of {self.buffer.size} bytes")
        return t

    def rows(self, start: int, count: int) -> "Tensor":
        """Rows [start, start+count) of the leading dimension."""
        row_bytes = self.nbytes // self.shape[0]
        return self.view((count, *self.shape[1:]), offset=start * row_bytes)

    def row_pieces(self, max_bytes: int, alignment: int) -> list[tuple[int, "Tensor"]]:
        """Split along the leading dimension into pieces no larger than `max_bytes` whose byte offsets
        are multiples of `alignment`, so each piece can be bound on its own. Returns (first_row, piece)."""
        row_bytes = self.nbytes // self.shape[0]
        if row_bytes > max_bytes:
            raise KernelError(f"a single row of {self.shape} {self.dtype} ({row_bytes} B) exceeds the binding limit {max_bytes} B")
        if self.bind_size <= max_bytes:
            return [(0, self)]
        step = alignment // math.gcd(row_bytes, alignment)  # rows per aligned offset
        rows_per_piece = (max_bytes // row_bytes) // step * step
        if rows_per_piece == 0 or self.offset % alignment:
            raise KernelError(f"cannot split {self.shape} {self.dtype} at {alignment}-byte aligned offsets under {max_bytes} B")
        return [(r, self.rows(r, min(rows_per_piece, self.shape[0] - r))) for r in range(0, self.shape[0], rows_per_piece)]

    def release(self) -> None:
        """Give a pooled tensor's buffer back to its pool."""
        if self._pool is not None:
            self._pool.give_back(self.buffer)
            self._pool = None

    def numpy(self) -> np.ndarray:
        """Copy to the host (staged readback). bf16 comes back as float32."""
        from .runtime import runtime

        return runtime().read(self)

    def __repr__(self) -> str:
        return f"Tensor({self.shape}, {self.dtype}, buffer={self.buffer.uid}, offset={self.offset})"


def decode(raw: bytes | memoryview, tensor_shape, dtype: str) -> np.ndarray:
    n = math.prod(tensor_shape)
    if dtype == "bf16":
        return bf16_to_f32(np.frombuffer(raw, dtype=np.uint16, count=n)).reshape(tensor_shape)
    np_dtype = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "u32": np.uint32, "u8": np.uint8}[dtype]
    return np.frombuffer(raw, dtype=np_dtype, count=n).reshape(tensor_shape).copy()


class BufferPool:
    """Reuses storage buffers by size class (powers of two above 4 KiB) for short-lived tensors."""

    def __init__(self, gpu: Gpu, usage=STORAGE):
        self.gpu = gpu
        self.usage = usage
        self._free: dict[int, list[Buffer]] = defaultdict(list)

    @staticmethod
    def size_class(nbytes: int) -> int:
        return max(4096, 1 << (max(nbytes, 1) - 1).bit_length())

    def take(self, nbytes: int) -> Buffer:
        size = self.size_class(nbytes)
        free = self._free[size]
        if free:
            return free.pop()
        return Buffer(self.gpu.device.create_buffer(size=size, usage=self.usage, label=f"pool{size}"), size)

    def give_back(self, buffer: Buffer) -> None:
        self._free[buffer.size].append(buffer)
