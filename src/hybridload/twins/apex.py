"""Twins of apex's fused norms (``apex.normalization``).

Targets apex master at commit 014f30f7 (``apex/normalization/fused_layer_norm.py``), checked against
``tests/data/goldens/apex.json``. apex's constructors take no device/dtype: parameters follow torch's
default device and dtype, as upstream. Forwards follow the CUDA path the server runs: float32 statistics,
output in the input's dtype (the ``Mixed*`` variants output the weight's dtype).
"""
from __future__ import annotations

import numbers
import warnings
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.nn import Parameter, init

from ..reference._common import is_data_free
from ._marker import twin_of

__all__ = ["FusedLayerNorm", "FusedRMSNorm", "MixedFusedLayerNorm", "MixedFusedRMSNorm"]

_MODULE = "apex.normalization.fused_layer_norm"


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(normalized_shape)


def _layer_norm(x: torch.Tensor, shape: torch.Size, weight: Any, bias: Any, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    if is_data_free(x, weight, bias):
        return torch.empty(x.shape, dtype=out_dtype, device=x.device)
    w = weight.float() if weight is not None else None
    b = bias.float() if bias is not None else None
    return F.layer_norm(x.float(), shape, w, b, eps).to(out_dtype)


def _rms_norm(x: torch.Tensor, shape: torch.Size, weight: Any, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
    if is_data_free(x, weight):
        return torch.empty(x.shape, dtype=out_dtype, device=x.device)
    dims = tuple(range(-len(shape), 0))
    h = x.float()
    y = h * torch.rsqrt(h.square().mean(dims, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(out_dtype)


@twin_of(f"{_MODULE}.FusedLayerNorm", "apex.normalization.FusedLayerNorm")
class FusedLayerNorm(torch.nn.Module):
    """LayerNorm over the trailing ``normalized_shape`` dims, with ``weight`` and ``bias`` when affine."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        normalized_shape = _as_shape(normalized_shape)
        self.normalized_shape = torch.Size(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.memory_efficient = memory_efficient
        if self.elementwise_affine:
            self.weight = Parameter(torch.empty(*normalized_shape))
            self.bias = Parameter(torch.empty(*normalized_shape))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps, input.dtype)

    def extra_repr(self) -> str:
        return "{normalized_shape}, eps={eps}, elementwise_affine={elementwise_affine}".format(**self.__dict__)


@twin_of(f"{_MODULE}.FusedRMSNorm", "apex.normalization.FusedRMSNorm")
class FusedRMSNorm(torch.nn.Module):
    """RMSNorm over the trailing ``normalized_shape`` dims, with ``weight`` when affine."""

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        normalized_shape = _as_shape(normalized_shape)
        self.normalized_shape = torch.Size(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.memory_efficient = memory_efficient
        if self.elementwise_affine:
            self.weight = Parameter(torch.empty(*normalized_shape))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            init.ones_(self.weight)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _rms_norm(input, self.normalized_shape, self.weight, self.eps, input.dtype)

    def extra_repr(self) -> str:
        return "{normalized_shape}, eps={eps}, elementwise_affine={elementwise_affine}".format(**self.__dict__)


def _mixed_affine_only(name: str, kwargs: dict) -> None:
    if "elementwise_affine" in kwargs:
        warnings.warn(f"{name} does not support `elementwise_affine` argument", stacklevel=3)
        if not kwargs.pop("elementwise_affine"):
            raise RuntimeError(f"{name} does not support `elementwise_affine = False`")


@twin_of(f"{_MODULE}.MixedFusedLayerNorm", "apex.normalization.MixedFusedLayerNorm")
class MixedFusedLayerNorm(FusedLayerNorm):
    """FusedLayerNorm whose output takes the weight's dtype (Megatron-style mixed precision)."""

    def __init__(
        self, normalized_shape: int | Sequence[int], eps: float = 1e-5, *, memory_efficient: bool = False, **kwargs: Any
    ) -> None:
        _mixed_affine_only("MixedFusedLayerNorm", kwargs)
        super().__init__(
            normalized_shape=normalized_shape, eps=eps, elementwise_affine=True, memory_efficient=memory_efficient
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps, self.weight.dtype)


@twin_of(f"{_MODULE}.MixedFusedRMSNorm", "apex.normalization.MixedFusedRMSNorm")
class MixedFusedRMSNorm(FusedRMSNorm):
    """FusedRMSNorm whose output takes the weight's dtype."""

    def __init__(
        self, normalized_shape: int | Sequence[int], eps: float = 1e-5, *, memory_efficient: bool = False, **kwargs: Any
    ) -> None:
        _mixed_affine_only("MixedFusedRMSNorm", kwargs)
        super().__init__(
            normalized_shape=normalized_shape, eps=eps, elementwise_affine=True, memory_efficient=memory_efficient
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return _rms_norm(input, self.normalized_shape, self.weight, self.eps, self.weight.dtype)
