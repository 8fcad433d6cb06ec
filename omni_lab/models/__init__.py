"""Model components on our kernels, one file each; config dataclasses use the HF config field names."""
