"""Argument checks shared by the kernels: shapes, dtypes and devices, checked before any launch.

The real kernels fail with bare ``assert`` or ``TORCH_CHECK`` messages from C++; a fallback bound in their
place must fail on the same inputs, but with a typed error that names the argument and the fix.
Everything here is plain torch, so it runs (and is tested) on machines without triton or CUDA.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from ..errors import KernelArgumentError
from ._runtime import interpreter_mode

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)


def fail(fn: str, message: str) -> KernelArgumentError:
    return KernelArgumentError(f"hybridload.kernels {fn}: {message}")


def tensor(fn: str, name: str, value: Any, *, optional: bool = False) -> torch.Tensor | None:
    """Check that ``value`` is a tensor (or None when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, torch.Tensor):
        kind = "a tensor or None" if optional else "a tensor"
        raise fail(fn, f"{name} must be {kind}, got {type(value).__name__}")
    return value


def shape(fn: str, name: str, value: torch.Tensor, expected: tuple[int, ...], meaning: str) -> None:
    """Check ``value.shape == expected``; ``meaning`` spells the expected shape, e.g. '(batch, dim)'."""
    if value.shape != expected:
        raise fail(
            fn, f"{name} must have shape {meaning} = {tuple(expected)}, got {tuple(value.shape)}"
        )


def ndim(fn: str, name: str, value: torch.Tensor, allowed: Iterable[int], meaning: str) -> None:
    allowed = tuple(allowed)
    if value.dim() not in allowed:
        raise fail(fn, f"{name} must be {meaning}, got a {value.dim()}-d tensor of shape {tuple(value.shape)}")


def dtype(fn: str, name: str, value: torch.Tensor, allowed: Sequence[torch.dtype] = FLOAT_DTYPES) -> None:
    if value.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise fail(fn, f"{name} must be one of {names}, got {str(value.dtype).replace('torch.', '')}")


def same_dtype(fn: str, name: str, value: torch.Tensor, other_name: str, other: torch.Tensor) -> None:
    if value.dtype != other.dtype:
        raise fail(
            fn,
            f"{name} must have the dtype of {other_name} ({other.dtype}), got {value.dtype}; cast it with "
            f".to({other.dtype})",
        )


def device(fn: str, named: dict[str, torch.Tensor | None]) -> torch.device:
    """All tensors on one device, and that device CUDA (or CPU under TRITON_INTERPRET=1, or meta).

    ``meta`` is accepted so that shape-only runs (meta builds, tracing) get correctly shaped outputs.
    """
    dev = None
    for value in named.values():
        if value is None:
            continue
        if dev is None:
            dev = value.device
        elif value.device != dev:
            listing = ", ".join(f"{k}: {v.device}" for k, v in named.items() if v is not None)
            raise fail(fn, f"all tensors must be on one device, got {listing}")
    assert dev is not None  # callers always pass at least one tensor
    if dev.type == "cuda" or dev.type == "meta":
        return dev
    if dev.type == "cpu" and interpreter_mode():
        return dev
    raise fail(
        fn,
        f"tensors are on {dev.type}, but hybridload's Triton kernels run on CUDA devices only. Move the "
        "inputs to a GPU, or use the pure-torch reference in hybridload.reference on CPU.",
    )


def width(fn: str, value: int) -> None:
    if not 2 <= value <= 4:
        raise fail(fn, f"the convolution width (weight.shape[-1]) must be between 2 and 4, got {value}")


def activation(fn: str, value: Any) -> bool:
    """The causal_conv1d activation argument -> whether SiLU is applied."""
    if value not in (None, "silu", "swish"):
        raise fail(fn, f"activation must be None, 'silu' or 'swish', got {value!r}")
    return value in ("silu", "swish")
