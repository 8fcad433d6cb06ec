"""HF Transformers side of the check: load a local checkpoint, capture named activations, store them."""

from .capture import (CaptureError, UnsafeWeightsError, capture, check_safetensors_only, dense_qwen3_names,
                      load_hf_model, to_activation)
from .store import (DEFAULT_ROOT, Reference, ReferenceMismatch, describe_inputs, hash_array, hash_model,
                    library_versions, load_reference, save_reference)

__all__ = [
    "CaptureError", "UnsafeWeightsError", "capture", "check_safetensors_only", "dense_qwen3_names", "load_hf_model",
    "to_activation", "DEFAULT_ROOT", "Reference", "ReferenceMismatch", "describe_inputs", "hash_array", "hash_model",
    "library_versions", "load_reference", "save_reference",
]
