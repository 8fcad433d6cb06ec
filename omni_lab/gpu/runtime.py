"""Kernel registry, step recording and readback: the part of omni_lab that talks to wgpu each step.

Rules this file enforces (DESIGN.md, GPU runtime):
- a pipeline is built once per (shader, entry point, override constants);
- a bind group is built once per set of bound buffer ranges and reused;
- the params uniform of a dispatch is created once per distinct value and reused;
- inside `runtime().step()` every dispatch goes into one command encoder, submitted once at the end,
  and only the tensors asked for with `step.read(t)` are copied back.
"""

from __future__ import annotations

import re
import struct
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wgpu

from .buffers import STORAGE, Buffer, BufferPool, Tensor, bf16_bits, decode, host_dtype
from . import tuning
from .device import Gpu, KernelError, create_module, naming, open_gpu

try:  # wgpu-native's raw entry points, for replaying already-validated steps (see Runtime.replay)
    from wgpu.backends.wgpu_native._ffi import ffi as _native_ffi, lib as _native
except ImportError:  # another wgpu backend: replay encodes through the public API
    _native = None

SHADER_DIR = Path(__file__).resolve().parents[2] / "shaders"

_BIND_CACHE_SIZE = 8192
_PARAM_CACHE_SIZE = 4096
MAX_QUERIES = 4096  # timestamps per query set (WebGPU)
# A flush step's submissions (Runtime.step): a 512-token thinker prefill records ~680 dispatches at ~55 us
# of host time each and runs ~140 us of GPU each; submitted only at the end, the GPU idled while the host
# recorded (H200: 132 ms a prefill for 95 ms of GPU).
FLUSH_DISPATCHES = 64
# shaders/<name>_sg.wgsl use subgroup operations: built only where the adapter has the `subgroup` feature.
SUBGROUP_SUFFIX = "_sg"


_INCLUDE = re.compile(r'^// #include "([\w./-]+\.wgsl)"[ \t]*$', re.M)


def shader_source(path: Path) -> str:
    """A WGSL file with each `// #include "lib/name.wgsl"` line replaced by that file (relative to shaders/),
    each file at most once. WGSL has no include; this keeps functions shared by several shaders (our exp,
    16-bit unpacking) in one place. The directive is a comment, so an unexpanded file still parses."""
    seen: set[str] = set()

    def expand(text: str, where: Path) -> str:
        def one(m: re.Match) -> str:
            name = m.group(1)
            if name in seen:
                return f"// (already included: {name})"
            seen.add(name)
            lib = SHADER_DIR / name
            if not lib.is_file():
                raise KernelError(f"{where.name}: includes {name}, but {lib} does not exist")
            return f"// ---- {name}\n" + expand(lib.read_text(), lib) + f"// ---- end of {name}"

        return _INCLUDE.sub(one, text)

    return expand(path.read_text(), path)


def pack_params(*values: int | float) -> bytes:
    """A params struct of 4-byte scalars (ints as u32, or i32 when negative; floats as f32), padded to 16 B."""
    fmt = "".join("f" if isinstance(v, float) else ("i" if v < 0 else "I") for v in values)
    data = struct.pack("<" + fmt, *values)
    return data + b"\0" * (-len(data) % 16)


def groups_for(n_groups: int, limit: int = 65535) -> tuple[int, int, int]:
    """Spread a 1-D workgroup count over x and y when it exceeds the per-dimension limit.
    Shaders recover the flat index as wid.x + wid.y * nwg.x and skip indices past the end."""
    if n_groups <= limit:
        return (max(n_groups, 1), 1, 1)
    y = -(-n_groups // limit)
    return (-(-n_groups // y), y, 1)


class Kernel:
    """One WGSL entry point built with one set of override constants, with its bind-group cache.

    Binding convention: @binding(0) is the params uniform, @binding(1..) the tensors in call order.
    """

    def __init__(self, rt: "Runtime", name: str, source: str, entry: str, constants: dict):
        self.rt = rt
        self.name = name
        self.label = name if not constants else f"{name}[{','.join(f'{k}={v}' for k, v in sorted(constants.items()))}]"
        device = rt.gpu.device
        with naming(self.label):
            module = create_module(device, source, name)
            self.pipeline = device.create_compute_pipeline(
                label=self.label,
                layout="auto",
                compute={"module": module, "entry_point": entry, "constants": dict(constants)},
            )
            self.layout = self.pipeline.get_bind_group_layout(0)
        self._bind_groups: OrderedDict = OrderedDict()

    def bind_group(self, params: Buffer, tensors: tuple[Tensor, ...]):
        key = (params.uid,) + tuple((t.buffer.uid, t.offset, t.bind_size) for t in tensors)
        bg = self._bind_groups.get(key)
        if bg is not None:
            self._bind_groups.move_to_end(key)
            return bg
        entries = [{"binding": 0, "resource": {"buffer": params.raw, "offset": 0, "size": params.size}}]
        for i, t in enumerate(tensors, start=1):
            if t.offset % self.rt.gpu.offset_alignment:
                raise KernelError(f"{self.label}: binding {i} starts at byte {t.offset}, not a multiple of {self.rt.gpu.offset_alignment}")
            if t.bind_size > self.rt.gpu.max_binding:
                raise KernelError(f"{self.label}: binding {i} is {t.bind_size} B, over the {self.rt.gpu.max_binding} B binding limit; split it")
            entries.append({"binding": i, "resource": {"buffer": t.buffer.raw, "offset": t.offset, "size": t.bind_size}})
        with naming(self.label):
            bg = self.rt.gpu.device.create_bind_group(label=self.label, layout=self.layout, entries=entries)
        self._bind_groups[key] = bg
        if len(self._bind_groups) > _BIND_CACHE_SIZE:
            self._bind_groups.popitem(last=False)
        return bg

    def __call__(self, groups: int | tuple[int, int, int], params: bytes, *tensors: Tensor) -> None:
        """Dispatch (recorded into the current step, or submitted at once outside a step)."""
        grid = groups_for(groups, self.rt.gpu.limits["max-compute-workgroups-per-dimension"]) if isinstance(groups, int) else groups
        bg = self.bind_group(self.rt.params_buffer(params), tensors)
        self.rt.dispatch(self, bg, grid)


@dataclass
class Dispatch:
    kernel: Kernel
    bind_group: object
    grid: tuple[int, int, int]


@dataclass
class Step:
    """Dispatches recorded for one submit, and the reads asked for after them. `validated` steps were
    accepted by wgpu once already and are encoded through wgpu-native directly. A `flush` step submits its
    dispatches FLUSH_DISPATCHES at a time as they are recorded (`submitted` of them so far; `dispatches`
    keeps them all, for a plan), so the GPU runs while the host records the rest."""

    dispatches: list[Dispatch] = field(default_factory=list)
    reads: list[tuple[Tensor, "Readback"]] = field(default_factory=list)
    validated: bool = False
    flush: bool = False
    submitted: int = 0

    def read(self, tensor: Tensor) -> "Readback":
        rb = Readback(tensor.shape, tensor.dtype)
        self.reads.append((tensor, rb))
        return rb


class Readback:
    """Filled in when its step is submitted; `.value` is the host array."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype
        self.value: np.ndarray | None = None


class InFlight:
    """A submitted step whose reads have not been mapped yet."""

    def __init__(self, fill_reads, readbacks: list[Readback]):
        self._fill, self._readbacks = fill_reads, readbacks

    def values(self) -> list[np.ndarray]:
        """Wait for the step and return its reads (once filled, later calls return the same arrays)."""
        if self._fill is not None:
            self._fill()
            self._fill = None
        return [rb.value for rb in self._readbacks]


@dataclass
class KernelTiming:
    kernel: str
    seconds: float


@dataclass
class Profile:
    """Per-dispatch times of the steps run inside `runtime().profile()`."""

    clock: str  # "gpu-timestamps" or "wall-clock"
    timings: list[KernelTiming] = field(default_factory=list)

    def by_kernel(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for t in self.timings:
            out[t.kernel] = out.get(t.kernel, 0.0) + t.seconds
        return out


class Runtime:
    def __init__(self, gpu: Gpu):
        self.gpu = gpu
        self._kernels: dict[tuple, Kernel] = {}
        self._sources: dict[str, str] = {}
        self._params: OrderedDict[bytes, Buffer] = OrderedDict()
        self.pool = BufferPool(gpu)
        self._staging: dict[int, list[wgpu.GPUBuffer]] = {}
        self._step: Step | None = None
        self._profile: Profile | None = None
        self._recording: set[str] | None = None
        self._fence = None

    # -- kernels -------------------------------------------------------------------------------
    def subgroup_variant(self, shader: str) -> str:
        """The shader to build a kernel of `shader` from: its subgroup variant shaders/<shader>_sg.wgsl where the
        adapter has the `subgroup` feature and the tuning table's `subgroups` is on, else `shader` itself. (A
        module that uses subgroup operations does not compile on a device without the feature.)"""
        return shader + SUBGROUP_SUFFIX if self.gpu.has_subgroups and tuning.current().subgroups else shader

    def kernel(self, shader: str, entry: str = "main", **constants: int | float | bool) -> Kernel:
        """The kernel `entry` of shaders/<shader>.wgsl with these override constants, built once."""
        key = (shader, entry, tuple(sorted(constants.items())))
        k = self._kernels.get(key)
        if k is None:
            if shader not in self._sources:
                path = SHADER_DIR / f"{shader}.wgsl"
                if not path.is_file():
                    raise KernelError(f"no shader for op '{shader}': {path} does not exist")
                self._sources[shader] = shader_source(path)
            k = self._kernels[key] = Kernel(self, f"{shader}.{entry}", self._sources[shader], entry, constants)
        return k

    def params_buffer(self, data: bytes) -> Buffer:
        buf = self._params.get(data)
        if buf is not None:
            self._params.move_to_end(data)
            return buf
        raw = self.gpu.device.create_buffer_with_data(data=data, usage=wgpu.BufferUsage.UNIFORM)
        buf = self._params[data] = Buffer(raw, len(data))
        if len(self._params) > _PARAM_CACHE_SIZE:
            self._params.popitem(last=False)
        return buf

    # -- memory --------------------------------------------------------------------------------
    def empty(self, shape, dtype: str = "f32", label: str = "") -> Tensor:
        """A new tensor with its own buffer (contents undefined)."""
        t = Tensor(Buffer.__new__(Buffer), shape, dtype)
        size = max(16, (t.nbytes + 15) // 16 * 16)
        if size > self.gpu.limits["max-buffer-size"]:
            raise KernelError(f"{label or 'tensor'} {t.shape} {dtype}: {size} B exceeds the adapter's max buffer size")
        t.buffer = Buffer(self.gpu.device.create_buffer(size=size, usage=STORAGE, label=label), size)
        return t

    def scratch(self, shape, dtype: str = "f32") -> Tensor:
        """A pooled tensor for short-lived results; call .release() to give it back."""
        t = Tensor(Buffer.__new__(Buffer), shape, dtype)
        t.buffer = self.pool.take(t.nbytes)
        t._pool = self.pool
        return t

    def upload(self, array, dtype: str | None = None, label: str = "") -> Tensor:
        """Host array -> new GPU tensor. float32 data with dtype='bf16' or 'f16' is converted; uint16 data
        with dtype='bf16' is taken as bf16 bit patterns."""
        array = np.ascontiguousarray(array)
        if dtype == "bf16" and array.dtype != np.uint16:
            array = bf16_bits(array.astype(np.float32))
        elif dtype == "f16" and array.dtype != np.float16:
            array = array.astype(np.float16)
        elif dtype is not None and dtype != "bf16":
            array = array.astype({"f32": np.float32, "i32": np.int32, "u32": np.uint32, "u8": np.uint8, "f16": np.float16}[dtype])
        dtype = dtype or host_dtype(array)
        t = self.empty(array.shape, dtype, label)
        self.write(t, array)
        return t

    def write(self, tensor: Tensor, array) -> None:
        array = np.ascontiguousarray(array)
        if array.nbytes == 0:  # wgpu rejects an empty write
            return
        if array.nbytes % 4:  # writes are whole u32 words: pad a copy
            data = array.tobytes() + b"\0" * (-array.nbytes % 4)
        else:  # no copy: wgpu reads the array's memory (multi-GB weights pass through here)
            data = memoryview(array.reshape(-1).view(np.uint8))
        self.gpu.device.queue.write_buffer(tensor.buffer.raw, tensor.offset, data)

    def read(self, tensor: Tensor) -> np.ndarray:
        """Read a tensor back now. Inside an open step that is an error: the read would have to submit
        the step half-recorded, so a plan recorded from it would hold only part of the step. Inside a
        step, ask `step.read(t)` and take `.value` after the block."""
        if self._step is not None:
            raise KernelError(f"read of {tensor.shape} {tensor.dtype} inside an open step "
                              f"({len(self._step.dispatches)} dispatches recorded): use step.read(tensor)")
        step = Step()
        rb = step.read(tensor)
        self._submit(step)
        return rb.value

    # -- recording and submission --------------------------------------------------------------
    def dispatch(self, kernel: Kernel, bind_group, grid) -> None:
        if self._recording is not None:
            self._recording.add(kernel.name)
        d = Dispatch(kernel, bind_group, grid)
        step = self._step
        if step is not None:
            step.dispatches.append(d)
            if step.flush and self._profile is None and len(step.dispatches) - step.submitted >= FLUSH_DISPATCHES:
                self._submit_pending(step)
        else:
            self._submit(Step([d]))

    @contextmanager
    def step(self, flush: bool = False):
        """Record every dispatch inside the block into one encoder and submit once when it ends; or, with
        `flush`, submit them FLUSH_DISPATCHES at a time as they are recorded (the queue keeps them in order;
        only for a block that writes no buffer a dispatch recorded before the write reads: a write lands in
        queue order, so such a dispatch already submitted would not see it)."""
        if self._step is not None:  # nested: the outer step submits
            yield self._step
            return
        self._step = Step(flush=flush)
        try:
            yield self._step
            self._submit(self._step)
        finally:
            self._step = None

    def replay(self, dispatches: list[Dispatch], reads: tuple[Tensor, ...] = ()) -> list[np.ndarray]:
        """Submit a recorded list of dispatches again, as one step, and read `reads` after it.

        Valid when nothing the dispatches depend on changed on the host side: a decode step keeps its
        per-step values (position, length) in GPU buffers, so its dispatches are the same every token
        and replaying them skips the op wrappers' Python work."""
        return self.replay_async(dispatches, reads).values()

    def replay_async(self, dispatches: list[Dispatch], reads: tuple[Tensor, ...] = ()) -> "InFlight":
        """replay without waiting: the step is submitted and its reads are mapped when .values() is
        called, so the host can encode the next step while the GPU runs this one (the queue keeps
        submissions and buffer writes in order)."""
        step = Step(list(dispatches), validated=True)
        rbs = [step.read(t) for t in reads]
        return InFlight(self._submit(step, wait=False), rbs)

    @contextmanager
    def recording(self):
        """The names ("<shader>.<entry>") of the kernels dispatched inside the block, as a set filled in while
        it runs: how the op registry measures which entry points its cases exercise. Replayed dispatches are
        not seen (they skip `dispatch`). Outside such a block a dispatch pays one `is None` test for it. A
        nested block's names also reach the outer one."""
        outer = self._recording
        self._recording = names = set()
        try:
            yield names
        finally:
            self._recording = outer
            if outer is not None:
                outer |= names

    @contextmanager
    def profile(self):
        """Time each dispatch of the steps run inside the block (GPU timestamps where available)."""
        self._profile = Profile("gpu-timestamps" if self.gpu.has_timestamps else "wall-clock")
        try:
            yield self._profile
        finally:
            self._profile = None

    def _submit_pending(self, step: Step) -> None:
        """Submit a flush step's dispatches recorded since its last submission (no reads, no profile)."""
        device = self.gpu.device
        pending = step.dispatches[step.submitted:]
        with naming(lambda: ", ".join(sorted({d.kernel.label for d in pending}))):
            enc = device.create_command_encoder()
            self._encode_pass(enc, pending, step.validated)
            device.queue.submit([enc.finish()])
        step.submitted = len(step.dispatches)

    def _staging_buffer(self, size: int):
        free = self._staging.setdefault(size, [])
        if free:
            return free.pop()
        return self.gpu.device.create_buffer(size=size, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)

    def _submit(self, step: Step, wait: bool = True):
        """Encode and submit a step; fill its reads now, or (wait=False, no profile) return the function
        that fills them."""
        if self._profile is not None and self._profile.clock == "wall-clock":
            return self._submit_wall_clock(step)
        device = self.gpu.device
        with naming(lambda: ", ".join(sorted({d.kernel.label for d in step.dispatches})) or "readback"):
            enc = device.create_command_encoder()
            queries = None
            if self._profile is not None and step.dispatches:
                # Two timestamps a dispatch, in query sets of at most MAX_QUERIES (WebGPU's limit per set: a
                # frame of speech holds 2000 dispatches), resolved into one buffer in dispatch order.
                n = 2 * len(step.dispatches)
                qbuf = device.create_buffer(size=8 * n, usage=wgpu.BufferUsage.QUERY_RESOLVE | wgpu.BufferUsage.COPY_SRC)
                queries = []
                for first in range(0, n, MAX_QUERIES):
                    count = min(MAX_QUERIES, n - first)
                    qs = device.create_query_set(type="timestamp", count=count)
                    queries.append(qs)
                    for i, d in enumerate(step.dispatches[first // 2:(first + count) // 2]):
                        cp = enc.begin_compute_pass(timestamp_writes={
                            "query_set": qs, "beginning_of_pass_write_index": 2 * i, "end_of_pass_write_index": 2 * i + 1})
                        self._encode(cp, d)
                        cp.end()
                    enc.resolve_query_set(qs, 0, count, qbuf, 8 * first)
            elif len(step.dispatches) > step.submitted:
                self._encode_pass(enc, step.dispatches[step.submitted:], step.validated)
            staged = []
            for t, rb in step.reads:
                size = t.bind_size
                sb = self._staging_buffer(size)
                enc.copy_buffer_to_buffer(t.buffer.raw, t.offset, sb, 0, size)
                staged.append((sb, size, t, rb))
            device.queue.submit([enc.finish()])

            def fill_reads() -> None:
                for sb, size, t, rb in staged:
                    sb.map_sync(wgpu.MapMode.READ)
                    rb.value = decode(sb.read_mapped(0, size, copy=True), t.shape, t.dtype)
                    sb.unmap()
                    self._staging[size].append(sb)

            if not wait and queries is None:
                return fill_reads
            fill_reads()
            if queries is not None:
                ticks = np.frombuffer(device.queue.read_buffer(qbuf), dtype=np.uint64)
                # WebGPU timestamps are nanoseconds.
                for i, d in enumerate(step.dispatches):
                    self._profile.timings.append(KernelTiming(d.kernel.label, float(ticks[2 * i + 1] - ticks[2 * i]) * 1e-9))

    def _submit_wall_clock(self, step: Step) -> None:
        device = self.gpu.device
        prof = self._profile
        for d in step.dispatches:
            with naming(d.kernel.label):
                enc = device.create_command_encoder()
                cp = enc.begin_compute_pass()
                self._encode(cp, d)
                cp.end()
                t0 = time.perf_counter()
                device.queue.submit([enc.finish()])
                self.sync()
                prof.timings.append(KernelTiming(d.kernel.label, time.perf_counter() - t0))
        self._profile = None
        try:
            self._submit(Step(reads=step.reads))
        finally:
            self._profile = prof

    @classmethod
    def _encode_pass(cls, enc, dispatches: list[Dispatch], validated: bool) -> None:
        """One compute pass of `dispatches` into `enc` (through wgpu-native directly once validated)."""
        cp = enc.begin_compute_pass()
        if validated and _native is not None:
            cls._encode_native(cp, dispatches)
        else:
            for d in dispatches:
                cls._encode(cp, d)
        cp.end()

    @staticmethod
    def _encode(cp, d: Dispatch) -> None:
        cp.set_pipeline(d.kernel.pipeline)
        cp.set_bind_group(0, d.bind_group)
        cp.dispatch_workgroups(*d.grid)

    @staticmethod
    def _encode_native(cp, dispatches: list[Dispatch]) -> None:
        """Encode without wgpu-py's per-call error capture, which costs ~10 us a call: a decode step of
        Qwen3-0.6B is ~480 dispatches, so this is the difference between CPU- and GPU-bound decoding.
        Only for dispatches wgpu already accepted once (an error would be logged, not raised)."""
        cpi = cp._internal
        set_pipeline = _native.wgpuComputePassEncoderSetPipeline
        set_bind_group = _native.wgpuComputePassEncoderSetBindGroup
        dispatch = _native.wgpuComputePassEncoderDispatchWorkgroups
        null = _native_ffi.NULL
        previous = None
        for d in dispatches:
            pipeline = d.kernel.pipeline._internal
            if pipeline != previous:
                set_pipeline(cpi, pipeline)
                previous = pipeline
            set_bind_group(cpi, 0, d.bind_group._internal, 0, null)
            dispatch(cpi, *d.grid)

    def sync(self) -> None:
        """Wait until the GPU has finished all submitted work.

        Mapping a buffer waits for every earlier submission; wgpu-py 0.32's on_submitted_work_done_sync
        fails against its own wgpu-native build, so we map a 16-byte buffer instead."""
        if self._fence is None:
            self._fence = self.gpu.device.create_buffer(size=16, usage=wgpu.BufferUsage.MAP_READ | wgpu.BufferUsage.COPY_DST)
        self._fence.map_sync(wgpu.MapMode.READ)
        self._fence.unmap()


_RUNTIME: Runtime | None = None


def runtime() -> Runtime:
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = Runtime(open_gpu())
    return _RUNTIME
