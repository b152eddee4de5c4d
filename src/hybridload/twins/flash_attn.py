"""Twins of the flash-attn modules remote code builds: FusedDense, RotaryEmbedding, the RMSNorm of ops.rms_norm.

Targets flash-attn 2.8.3 (checked against ``tests/data/goldens/flash_attn.json``, recorded by running the
package's own constructors). Forwards call :mod:`hybridload.reference.flash_attn`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import init

from ..errors import KernelUnavailableError
from ..reference import flash_attn as ref
from ._marker import twin_of

__all__ = ["FusedDense", "RMSNorm", "RotaryEmbedding"]


@twin_of("flash_attn.ops.fused_dense.FusedDense")
class FusedDense(nn.Linear):
    """An ``nn.Linear`` that can also hand back its input (``return_residual``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        return_residual: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.return_residual = return_residual

    def forward(self, x: torch.Tensor, process_group: object = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if process_group is not None:
            raise KernelUnavailableError(
                "FusedDense with a process_group (sequence-parallel all-gather) needs flash-attn's fused_dense_lib"
            )
        out = F.linear(x, self.weight, self.bias)
        return out if not self.return_residual else (out, x)


@twin_of("flash_attn.layers.rotary.RotaryEmbedding")
class RotaryEmbedding(nn.Module):
    """Rotary position embedding (optionally XPos-scaled) applied in place to packed qkv or to q and kv."""

    def __init__(
        self,
        dim: int,
        base: float = 10000.0,
        interleaved: bool = False,
        scale_base: float | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.base = float(base)
        inv_freq = self._compute_inv_freq(device)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.interleaved = interleaved
        self.scale_base = scale_base
        scale = self._compute_scale(device) if scale_base is not None else None
        self.register_buffer("scale", scale, persistent=False)
        self._seq_len_cached = 0
        self._cos_cached: torch.Tensor | None = None
        self._sin_cached: torch.Tensor | None = None
        self._cos_k_cached: torch.Tensor | None = None
        self._sin_k_cached: torch.Tensor | None = None

    def _compute_inv_freq(self, device: torch.device | None = None) -> torch.Tensor:
        return 1.0 / (self.base ** (torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) / self.dim))

    def _compute_scale(self, device: torch.device | None = None) -> torch.Tensor:
        return (torch.arange(0, self.dim, 2, device=device, dtype=torch.float32) + 0.4 * self.dim) / (1.4 * self.dim)

    def _update_cos_sin_cache(self, seqlen: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        if (
            seqlen > self._seq_len_cached
            or self._cos_cached is None
            or self._cos_cached.device != device
            or self._cos_cached.dtype != dtype
            or (self.training and self._cos_cached.is_inference())
        ):
            self._seq_len_cached = seqlen
            t = torch.arange(seqlen, device=device, dtype=torch.float32)
            inv_freq = self._compute_inv_freq(device=device) if self.inv_freq.dtype != torch.float32 else self.inv_freq
            freqs = torch.outer(t, inv_freq)
            if self.scale is None:
                self._cos_cached = torch.cos(freqs).to(dtype)
                self._sin_cached = torch.sin(freqs).to(dtype)
            else:
                scale_fp32 = self._compute_scale(device=self.scale.device) if self.scale.dtype != torch.float32 else self.scale
                power = (torch.arange(seqlen, dtype=torch.float32, device=scale_fp32.device) - seqlen // 2) / self.scale_base
                scale = scale_fp32.to(device=power.device) ** power.unsqueeze(-1)
                self._cos_cached = (torch.cos(freqs) * scale).to(dtype)
                self._sin_cached = (torch.sin(freqs) * scale).to(dtype)
                self._cos_k_cached = (torch.cos(freqs) / scale).to(dtype)
                self._sin_k_cached = (torch.sin(freqs) / scale).to(dtype)

    def forward(
        self,
        qkv: torch.Tensor,
        kv: torch.Tensor | None = None,
        seqlen_offset: int | torch.Tensor = 0,
        max_seqlen: int | None = None,
        num_heads_q: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """qkv ``[B, S, 3, H, D]`` (or q ``[B, S, H, D]`` with kv ``[B, S, 2, H, D]``), rotated in place."""
        seqlen = qkv.shape[1]
        if max_seqlen is not None:
            self._update_cos_sin_cache(max_seqlen, device=qkv.device, dtype=qkv.dtype)
        elif isinstance(seqlen_offset, int):
            self._update_cos_sin_cache(seqlen + seqlen_offset, device=qkv.device, dtype=qkv.dtype)
        if kv is None:
            return ref.apply_rotary_emb_qkv_(
                qkv,
                self._cos_cached,
                self._sin_cached,
                self._cos_k_cached if self.scale is not None else None,
                self._sin_k_cached if self.scale is not None else None,
                interleaved=self.interleaved,
                seqlen_offsets=seqlen_offset,
                num_heads_q=num_heads_q,
            )
        q = ref.apply_rotary_emb(
            qkv, self._cos_cached, self._sin_cached, interleaved=self.interleaved, inplace=True,
            seqlen_offsets=seqlen_offset,
        )  # fmt: skip
        kv = ref.apply_rotary_emb_kv_(
            kv,
            self._cos_cached if self.scale is None else self._cos_k_cached,
            self._sin_cached if self.scale is None else self._sin_k_cached,
            interleaved=self.interleaved,
            seqlen_offsets=seqlen_offset,
        )
        return q, kv


@twin_of("flash_attn.ops.rms_norm.RMSNorm")
class RMSNorm(nn.Module):
    """flash-attn's RMSNorm (``dropout_layer_norm`` extension): ``weight``, a ``None`` bias, ``eps``."""

    def __init__(
        self, hidden_size: int, eps: float = 1e-5, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ref.rms_norm(x, self.weight, self.eps)
