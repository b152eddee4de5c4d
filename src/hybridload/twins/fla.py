"""Twins of the fla (flash-linear-attention) modules remote code builds: ShortConvolution, the fused norms.

Targets fla-core 0.6.0 (constructor signatures, parameters, attributes and ``repr`` checked against
``tests/data/goldens/fla.json``). Forwards call the pure-torch references in :mod:`hybridload.reference.fla`.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

import torch
import torch.nn as nn

from ..reference import fla as ref
from ..reference._common import is_data_free
from ._marker import twin_of

__all__ = ["FusedRMSNormGated", "FusedRMSNormSwishGate", "RMSNorm", "ShortConvolution"]


@twin_of(
    "fla.modules.causal_conv1d.ops.ShortConvolution",
    "fla.modules.ShortConvolution",
    "fla.modules.causal_conv1d.ShortConvolution",
    "fla.modules.convolution.ShortConvolution",
    "fla.modules.conv.ShortConvolution",
    "fla.modules.conv.short_conv.ShortConvolution",
)
class ShortConvolution(nn.Conv1d):
    """Depthwise causal convolution with optional SiLU and a ``[N, D, W]`` decoding cache (an ``nn.Conv1d``).

    ``backend`` is kept as given: whether the server falls back from ``'cuda'`` to ``'triton'`` depends on
    its causal-conv1d install, which the client cannot see. Parameters do not depend on it.
    """

    def __init__(
        self,
        hidden_size: int,
        kernel_size: int,
        bias: bool = False,
        activation: str | None = "silu",
        backend: str | None = "triton",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            in_channels=hidden_size,
            out_channels=hidden_size,
            kernel_size=kernel_size,
            padding=kernel_size - 1,
            groups=hidden_size,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.hidden_size = hidden_size
        self.activation = None
        if activation is not None:
            if activation not in ("silu", "swish"):
                raise ValueError(f"Activation `{activation}` not supported yet.")
            self.activation = activation
        if "use_fast_conv1d" in kwargs:
            warnings.warn(
                "The `use_fast_conv1d` parameter is deprecated and will be ignored. "
                "Please use the `backend` parameter instead.",
                stacklevel=2,
            )
        self.backend = os.environ.get("FLA_CONV_BACKEND", backend)
        if self.backend not in ("cuda", "triton"):
            raise ValueError(f"Invalid backend: {self.backend}, must be one of ['cuda', 'triton']")

    def extra_repr(self) -> str:
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        if self.padding != (0,) * len(self.padding):
            s += ", padding={padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += ", dilation={dilation}"
        if self.output_padding != (0,) * len(self.output_padding):
            s += ", output_padding={output_padding}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += ", padding_mode={padding_mode}"
        if self.activation is not None:
            s += ", activation={activation}"
        s += f", backend={self.backend}"
        return s.format(**self.__dict__)

    def forward(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: torch.Tensor | None = None,
        output_final_state: bool = False,
        cu_seqlens: torch.LongTensor | None = None,
        chunk_indices: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x ``[B, T, D]`` -> ``(y [B, T, D], final cache [N, D, W] or None)``, as fla's ShortConvolution."""
        batch, length = x.shape[:2]
        n_seq = batch if cu_seqlens is None else cu_seqlens.shape[0] - 1
        if mask is not None:
            if cu_seqlens is not None:
                raise ValueError("`mask` and `cu_seqlens` cannot be provided at the same time")
            x = x.mul_(mask.unsqueeze(-1))
        one_token_each = batch * length == n_seq and (
            cu_seqlens is None or is_data_free(cu_seqlens) or bool((cu_seqlens.diff() == 1).all())
        )
        if not torch.is_grad_enabled() and one_token_each:
            return self.step(x, residual, cache, output_final_state=output_final_state, cu_seqlens=cu_seqlens)
        return ref.causal_conv1d(
            x=x,
            weight=self.weight.squeeze(1),
            bias=self.bias,
            residual=residual,
            initial_state=cache,
            output_final_state=output_final_state,
            activation=self.activation,
            backend=self.backend,
            cu_seqlens=cu_seqlens,
            chunk_indices=chunk_indices,
            **kwargs,
        )

    def step(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        cache: torch.Tensor | None,
        output_final_state: bool = False,
        cu_seqlens: torch.LongTensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One decoding token per sequence; updates ``cache`` in place (a zero cache when none is given)."""
        batch, _, dim = x.shape
        n_seq = batch if cu_seqlens is None else cu_seqlens.shape[0] - 1
        if cache is None:
            cache = x.new_zeros(n_seq, dim, self.kernel_size[0])
        y, cache = ref.causal_conv1d_update(
            x=x,
            cache=cache,
            residual=residual,
            weight=self.weight.squeeze(1),
            bias=self.bias,
            activation=self.activation,
        )
        return y, (cache if output_final_state else None)

    @property
    def state_size(self) -> int:
        return self.hidden_size * self.kernel_size[0]


@twin_of(
    "fla.modules.norm.fused_norm_gate.FusedRMSNormGated",
    "fla.modules.FusedRMSNormGated",
    "fla.modules.norm.FusedRMSNormGated",
    "fla.modules.fused_norm_gate.FusedRMSNormGated",
)
class FusedRMSNormGated(nn.Module):
    """RMSNorm whose output is gated by ``act(g)`` (swish/silu or sigmoid)."""

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool = True,
        eps: float = 1e-5,
        activation: str = "swish",
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.hidden_size = hidden_size
        self.elementwise_affine = elementwise_affine
        self.eps = eps
        self.activation = activation
        if self.activation not in ("swish", "silu", "sigmoid"):
            raise ValueError(f"Unsupported activation: {self.activation}")
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        else:
            self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            nn.init.ones_(self.weight)

    def __repr__(self) -> str:
        s = f"{self.__class__.__name__}({self.hidden_size}"
        if not self.elementwise_affine:
            s += f", elementwise_affine={self.elementwise_affine}"
        s += f", eps={self.eps}"
        s += f", activation={self.activation}"
        s += ")"
        return s

    def forward(
        self,
        x: torch.Tensor,
        g: torch.Tensor,
        residual: torch.Tensor | None = None,
        prenorm: bool = False,
        residual_in_fp32: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return ref.rms_norm_gated(
            x=x,
            g=g,
            weight=self.weight,
            bias=self.bias,
            activation=self.activation,
            residual=residual,
            prenorm=prenorm,
            residual_in_fp32=residual_in_fp32,
            eps=self.eps,
        )


@twin_of(
    "fla.modules.norm.fused_norm_gate.FusedRMSNormSwishGate",
    "fla.modules.FusedRMSNormSwishGate",
    "fla.modules.norm.FusedRMSNormSwishGate",
    "fla.modules.fused_norm_gate.FusedRMSNormSwishGate",
)
class FusedRMSNormSwishGate(FusedRMSNormGated):
    """FusedRMSNormGated with the swish gate fixed (older fla layers build this name)."""

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool = True,
        eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(hidden_size=hidden_size, elementwise_affine=elementwise_affine, eps=eps, device=device, dtype=dtype)


@twin_of(
    "fla.modules.norm.layernorm.RMSNorm",
    "fla.modules.RMSNorm",
    "fla.modules.norm.RMSNorm",
    "fla.modules.layernorm.RMSNorm",
)
class RMSNorm(nn.Module):
    """fla's RMSNorm with optional fused residual add (``prenorm`` returns the summed residual too)."""

    def __init__(
        self,
        hidden_size: int,
        elementwise_affine: bool = True,
        bias: bool = False,
        eps: float = 1e-5,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.hidden_size = hidden_size
        self.elementwise_affine = elementwise_affine
        self.eps = eps
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
            if bias:
                self.bias = nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def __repr__(self) -> str:
        s = f"{self.__class__.__name__}({self.hidden_size}"
        if not self.elementwise_affine:
            s += f", elementwise_affine={self.elementwise_affine}"
        s += f", eps={self.eps}"
        s += ")"
        return s

    def forward(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None = None,
        prenorm: bool = False,
        residual_in_fp32: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return ref.rms_norm(
            x=x,
            weight=self.weight,
            bias=self.bias,
            residual=residual,
            eps=self.eps,
            prenorm=prenorm,
            residual_in_fp32=residual_in_fp32,
        )
