"""wgpu runtime: one device, typed tensors, a kernel registry, one submit per step, a profiler."""

from . import tuning
from .buffers import Buffer, Tensor, bf16_bits, bf16_to_f32
from .device import Gpu, KernelError, NoAdapterError, open_gpu
from .runtime import Kernel, Profile, Runtime, groups_for, pack_params, runtime

__all__ = [
    "Buffer", "Tensor", "bf16_bits", "bf16_to_f32", "Gpu", "KernelError", "NoAdapterError", "open_gpu",
    "Kernel", "Profile", "Runtime", "groups_for", "pack_params", "runtime", "tuning",
]
