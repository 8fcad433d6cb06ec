"""Binding windows for tensors larger than one storage binding, split by rows at any row boundary.

`Tensor.row_pieces` splits at offsets that are multiples of the adapter's offset alignment, which for a
[C, T] activation with odd T can mean 64 rows a piece: more than a binding holds once T is long. The ops
here (conv, snake, transpose) instead bind a window that starts at the aligned byte offset at or before
the first element they need and pass that element's index within the window (`off`) in their params.
Reads before `off` and past the end of a window's rows are never used, and nothing is written there.
"""

from __future__ import annotations

from ..gpu import Tensor, runtime
from ..gpu.buffers import ITEMSIZE
from ._check import fail


def binding_limit() -> int:
    """Bytes one binding may hold (the adapter's max_storage_buffer_binding_size). A function, so that tests
    can lower it to exercise the split paths on small tensors."""
    return runtime().gpu.max_binding


def window(t: Tensor, first: int, count: int) -> tuple[Tensor, int]:
    """A bindable flat view of t covering its elements [first, first + count), starting at the aligned
    byte offset at or before element `first`, and the index of element `first` within that view."""
    align = runtime().gpu.offset_alignment
    item = ITEMSIZE[t.dtype]
    start = t.offset + first * item
    base = start // align * align
    off = (start - base) // item
    return Tensor(t.buffer, (off + count,), t.dtype, base), off


def rows_per_window(kernel: str, name: str, t: Tensor, row_elems: int) -> int:
    """How many rows of `row_elems` elements of t one window may hold (at least 1, or an error)."""
    row_bytes = max(1, row_elems * ITEMSIZE[t.dtype])
    rows = (binding_limit() - runtime().gpu.offset_alignment) // row_bytes
    if rows < 1:
        raise fail(kernel, f"one row of {name} ({row_bytes} B) exceeds the {binding_limit()} B binding limit",
                   **{name: t})
    return rows


def elements_per_window(dtype: str) -> int:
    """How many elements of `dtype` one window may hold, wherever it starts."""
    return (binding_limit() - runtime().gpu.offset_alignment) // ITEMSIZE[dtype]


def spans(start: int, stop: int, step: int) -> list[tuple[int, int]]:
    """[start, stop) cut into consecutive [a, b) of at most `step`."""
    return [(a, min(a + step, stop)) for a in range(start, stop, step)]
