"""What replaces a kernel symbol, in one registry keyed by the symbol's dotted path.

Three kinds of substitute exist for a symbol such as ``mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn``:

* ``reference``: a pure-PyTorch function a stand-in runs on meta/fake tensors (shapes flow through a meta
  build or nnsight's ``scan()``); never on real data;
* ``twin``: a pure-PyTorch ``nn.Module`` class with the real class's constructor, parameters and buffers, built
  in place of a kernel class so a GPU-less meta tree equals the served one;
* ``triton``: hybridload's own Triton kernel with the real function's signature, bound on a GPU server only when
  the operator opts in (``kernel_fallback="triton"``).

Defaults come from :mod:`hybridload.reference`, :mod:`hybridload.twins` and :mod:`hybridload.kernels`;
users add their own with :func:`register_reference`, :func:`register_twin`, :func:`register_triton`.
"""
from __future__ import annotations

from .registry import (
    KINDS,
    Substitutes,
    reference_for,
    register_reference,
    register_triton,
    register_twin,
    substitutes_for,
    triton_for,
    twin_for,
    unregister,
)

__all__ = [
    "KINDS",
    "Substitutes",
    "reference_for",
    "register_reference",
    "register_triton",
    "register_twin",
    "substitutes_for",
    "triton_for",
    "twin_for",
    "unregister",
]
