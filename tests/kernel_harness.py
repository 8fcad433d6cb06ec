"""Helpers for the kernel tests that stay outside the op registry (against Transformers, in place, special
values, errors): the registry's NMSE, sentinel padding and random inputs, so that both check alike."""

from omni_lab.ops.registry import NMSE_ELEMENTWISE, NMSE_MATMUL, SENTINEL, check_sentinels, nmse, padded_output, rand

__all__ = ["NMSE_ELEMENTWISE", "NMSE_MATMUL", "SENTINEL", "check_sentinels", "nmse", "padded_output", "rand"]
