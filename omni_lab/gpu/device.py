"""The one wgpu device of the process: adapter choice, features, limits, and error naming."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import wgpu

from ..errors import OmniLabError
from . import tuning

# Features we use when the adapter has them; none is required.
WANTED_FEATURES = ("shader-f16", "subgroup", "timestamp-query")

# The limits that matter for our kernels; we ask for the adapter's own values instead of WebGPU's defaults.
WANTED_LIMITS = (
    "max-storage-buffer-binding-size",
    "max-buffer-size",
    "max-storage-buffers-per-shader-stage",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroups-per-dimension",
    "min-storage-buffer-offset-alignment",
    "min-uniform-buffer-offset-alignment",
)


# naga's runtime checks: an index clamp on every array access and a 64-bit counter on every loop (so that
# a shader cannot hang the GPU). OMNI_LAB_SHADER_CHECKS=0 leaves them out (wgpu-native's trusted module
# entry): on the H200 that made the prefill matmul 7% and flash attention 17-19% faster
# (bench/results/kernels_*_h200_vulkan.json, both ways in one run). They stay on by default: without them
# tests/test_rope.py's cos/sin at large positions fails about one run in five on lavapipe after
# tests/test_attention.py's Transformers comparisons (the same error each time, 1.5e-4 in cos; with either
# check alone too; never with the checks on, 0 in 24). A precision difference more than a stray access, by its
# size (the angle f32(pos) * inv_freq fused into the range reduction's first step?); not found yet.
SHADER_CHECKS_ENV = "OMNI_LAB_SHADER_CHECKS"


def shader_checks() -> bool:
    return os.environ.get(SHADER_CHECKS_ENV, "1") not in ("", "0")


def create_module(device: wgpu.GPUDevice, code: str, label: str):
    """A WGSL shader module, without naga's runtime checks unless shader_checks() (see above)."""
    if shader_checks():
        return device.create_shader_module(label=label, code=code)
    try:
        from wgpu.backends.wgpu_native import _api
    except ImportError:  # another wgpu backend: the public entry, checks included
        return device.create_shader_module(label=label, code=code)
    source = _api.new_struct_p("WGPUShaderSourceWGSL *", code=_api.to_c_string_view(code))
    source[0].chain.next = _api.ffi.NULL
    source[0].chain.sType = _api.lib.WGPUSType_ShaderSourceWGSL
    desc = _api.new_struct_p("WGPUShaderModuleDescriptor *",
                             nextInChain=_api.ffi.cast("WGPUChainedStruct *", source),
                             label=_api.to_c_string_view(label))
    handle = _api.libf.wgpuDeviceCreateShaderModuleTrusted(device._internal, desc, 0)  # WGPUShaderRuntimeChecks_None
    if handle == _api.ffi.NULL:
        raise KernelError(f"{label}: wgpu-native could not create the shader module")
    return _api.GPUShaderModule(label, handle, device)


class NoAdapterError(OmniLabError, RuntimeError):
    """No usable wgpu adapter on this machine."""


class KernelError(OmniLabError, RuntimeError):
    """A kernel was called wrongly, or wgpu rejected what a kernel asked of it."""


@contextmanager
def naming(kernel):
    """Turn a wgpu validation error raised inside the block into a KernelError naming the kernel.
    `kernel` is a name, or a callable giving it (so a hot path builds the string only on error)."""
    try:
        yield
    except wgpu.GPUError as e:
        name = kernel() if callable(kernel) else kernel
        raise KernelError(f"{name}: wgpu rejected it: {e}") from e


def _quiet_wsi_warning() -> None:
    # Mesa's Vulkan WSI layer prints an alarming "XDG_RUNTIME_DIR is invalid" on headless machines.
    # We never present to a surface, so a private directory keeps the message out of users' output.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = f"/tmp/omni-lab-xdg-{os.getuid()}"
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = path


@dataclass
class Gpu:
    adapter: wgpu.GPUAdapter
    device: wgpu.GPUDevice
    features: frozenset[str]
    limits: dict[str, int]
    info: dict = field(default_factory=dict)
    tuning: str = "default"  # the gpu/tuning.py table family chosen for this adapter

    @property
    def max_binding(self) -> int:
        return self.limits["max-storage-buffer-binding-size"]

    @property
    def offset_alignment(self) -> int:
        return self.limits["min-storage-buffer-offset-alignment"]

    @property
    def has_subgroups(self) -> bool:
        return "subgroup" in self.features

    @property
    def has_timestamps(self) -> bool:
        return "timestamp-query" in self.features

    def describe(self) -> dict:
        """What `omni-lab doctor` prints: adapter, backend, type, tuning table, features, limits."""
        return {
            "adapter": self.info.get("device", ""),
            "description": self.info.get("description", ""),
            "vendor": self.info.get("vendor", ""),
            "backend": self.info.get("backend_type", ""),
            "adapter_type": self.info.get("adapter_type", ""),
            "tuning": self.tuning,
            "tuning_basis": tuning.TABLES[self.tuning].basis,
            "features": sorted(self.features),
            "limits": dict(self.limits),
        }


_GPU: Gpu | None = None


def open_gpu(power_preference: str = "high-performance") -> Gpu:
    """Open the adapter and device once per process; later calls return the same device."""
    global _GPU
    if _GPU is not None:
        return _GPU
    _quiet_wsi_warning()
    adapter = wgpu.gpu.request_adapter_sync(power_preference=power_preference)
    if adapter is None:
        raise NoAdapterError(
            "no wgpu adapter found: install a Vulkan driver (on Debian, `apt-get install mesa-vulkan-drivers` "
            "gives the lavapipe software adapter) or run the README's set-up command"
        )
    features = frozenset(f for f in WANTED_FEATURES if f in adapter.features)
    limits = {k: adapter.limits[k] for k in WANTED_LIMITS if k in adapter.limits}
    device = adapter.request_device_sync(
        label="omni_lab", required_features=sorted(features), required_limits=limits
    )
    info = dict(adapter.info)
    _GPU = Gpu(adapter=adapter, device=device, features=features, limits=limits, info=info,
               tuning=tuning.select_for_adapter(info))
    return _GPU
