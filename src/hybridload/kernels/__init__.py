"""hybridload's own Triton kernels, bound on the served side in place of absent kernel packages.

A GPU server cannot always install ``mamba_ssm``/``causal_conv1d`` (source builds, glibc-bound wheels).
These kernels have the exact call signatures and semantics of the functions listed in :data:`FALLBACKS`
(forward only; inference), so remote code runs at full speed when the operator opts in.

Importing this package needs neither triton nor CUDA: triton is imported on the first kernel launch,
and the public functions are loaded on first attribute access.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from .._lazy import lazy_exports
from ._runtime import available, require_triton

#: real symbol path, as remote code imports it -> "module:function" of the hybridload kernel with the same
#: signature and semantics. Several paths name one function where the real package re-exports it. This is the
#: default "triton" table of :mod:`hybridload.substitutes` (look symbols up with ``substitutes.triton_for``).
FALLBACKS: dict[str, str] = {
    "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn": "hybridload.kernels.layernorm_gated:rmsnorm_fn",
    "mamba_ssm.ops.triton.layernorm_gated.layernorm_fn": "hybridload.kernels.layernorm_gated:layernorm_fn",
    "mamba_ssm.ops.triton.selective_state_update.selective_state_update": (
        "hybridload.kernels.ssm_state_update:selective_state_update"
    ),
    "causal_conv1d.causal_conv1d_fn": "hybridload.kernels.causal_conv1d:causal_conv1d_fn",
    "causal_conv1d.causal_conv1d_update": "hybridload.kernels.causal_conv1d:causal_conv1d_update",
    "causal_conv1d.causal_conv1d_interface.causal_conv1d_fn": "hybridload.kernels.causal_conv1d:causal_conv1d_fn",
    "causal_conv1d.causal_conv1d_interface.causal_conv1d_update": (
        "hybridload.kernels.causal_conv1d:causal_conv1d_update"
    ),
}

_LAZY: dict[str, str] = {
    "rmsnorm_fn": "hybridload.kernels.layernorm_gated",
    "layernorm_fn": "hybridload.kernels.layernorm_gated",
    "causal_conv1d_fn": "hybridload.kernels.causal_conv1d",
    "causal_conv1d_update": "hybridload.kernels.causal_conv1d",
    "selective_state_update": "hybridload.kernels.ssm_state_update",
    "KernelArgumentError": "hybridload.kernels._validate",
    "TOLERANCES": "hybridload.kernels.tolerances",
    "within_tolerance": "hybridload.kernels.tolerances",
}

__all__ = sorted(["FALLBACKS", "available", "require_triton", "resolve", *_LAZY])


def resolve(target: str) -> Callable[..., Any]:
    """Import a ``"module:function"`` target of :data:`FALLBACKS` (does not import triton)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name.startswith("hybridload.kernels.") or not attr:
        raise ValueError(f"not a hybridload.kernels target of the form 'module:function': {target!r}")
    return getattr(importlib.import_module(module_name), attr)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)


if TYPE_CHECKING:  # pragma: no cover
    from ._validate import KernelArgumentError
    from .causal_conv1d import causal_conv1d_fn, causal_conv1d_update
    from .layernorm_gated import layernorm_fn, rmsnorm_fn
    from .ssm_state_update import selective_state_update
    from .tolerances import TOLERANCES, within_tolerance
