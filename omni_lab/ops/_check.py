"""Argument checks shared by the op wrappers: every failure names the kernel and the shapes."""

from __future__ import annotations

from ..gpu import KernelError, Tensor


def fail(kernel: str, message: str, **tensors: Tensor) -> KernelError:
    described = ", ".join(f"{k}={t.shape} {t.dtype}" for k, t in tensors.items())
    return KernelError(f"{kernel}: {message} ({described})" if described else f"{kernel}: {message}")


def expect(kernel: str, cond: bool, message: str, **tensors: Tensor) -> None:
    if not cond:
        raise fail(kernel, message, **tensors)


def dtype_in(kernel: str, name: str, t: Tensor, allowed: tuple[str, ...]) -> None:
    expect(kernel, t.dtype in allowed, f"{name} must be {' or '.join(allowed)}, got {t.dtype}", **{name: t})
