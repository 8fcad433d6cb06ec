"""omni_lab: Qwen3 and Qwen3-Omni on WGSL kernels, checked layer by layer against HF Transformers."""

__version__ = "0.1.0"
