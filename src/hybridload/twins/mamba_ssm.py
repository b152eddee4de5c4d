"""Twins of mamba_ssm's Mamba2 block and its gated norms (``mamba_ssm.ops.triton.layernorm_gated``).

Targets mamba-ssm 2.3.2.post1 (checked against ``tests/data/goldens/mamba_ssm.json``, recorded by running
the package's own constructors). Forwards mirror the real modules' Python and call the kernel functions'
pure-torch references through :func:`hybridload.substitutes.reference_for`, so a reference a user
registers for a kernel path is used here too.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin

from ..errors import KernelUnavailableError
from ._marker import twin_of

__all__ = ["LayerNorm", "Mamba2", "RMSNorm"]

_RMSNORM_FN = "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn"
_LAYERNORM_FN = "mamba_ssm.ops.triton.layernorm_gated.layernorm_fn"
_CHUNK_SCAN = "mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined"
_SPLIT_CONV_SCAN = "mamba_ssm.ops.triton.ssd_combined.mamba_split_conv1d_scan_combined"
_STATE_UPDATE = "mamba_ssm.ops.triton.selective_state_update.selective_state_update"
_CONV_FN = "causal_conv1d.causal_conv1d_fn"
_CONV_UPDATE = "causal_conv1d.causal_conv1d_update"


def _kernel(path: str) -> Callable:
    from ..substitutes import reference_for

    fn = reference_for(path)
    if fn is None:
        raise KernelUnavailableError(
            f"the twin forward needs a pure-torch reference for {path}, and none is registered; register one "
            f"with hybridload.register_reference({path!r}, fn) or run the model where mamba_ssm works"
        )
    return fn


def _rearrange_heads(x: torch.Tensor, size: int) -> torch.Tensor:
    """``... (h p) -> ... h p`` with ``p = size``."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // size, size)


@twin_of("mamba_ssm.ops.triton.layernorm_gated.LayerNorm")
class LayerNorm(nn.Module):
    """Group-wise LayerNorm gated by ``silu(z)`` before or after normalisation."""

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        self.bias = nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return _kernel(_LAYERNORM_FN)(
            x, self.weight, self.bias, z=z, group_size=self.group_size, eps=self.eps,
            norm_before_gate=self.norm_before_gate,
        )  # fmt: skip


@twin_of("mamba_ssm.ops.triton.layernorm_gated.RMSNorm")
class RMSNorm(nn.Module):
    """Group-wise RMSNorm gated by ``silu(z)`` (Mamba2's ``norm``)."""

    def __init__(
        self,
        hidden_size: int,
        eps: float = 1e-5,
        group_size: int | None = None,
        norm_before_gate: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(hidden_size, **factory_kwargs))
        self.register_parameter("bias", None)
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        return _kernel(_RMSNORM_FN)(
            x, self.weight, self.bias, z=z, eps=self.eps, group_size=self.group_size,
            norm_before_gate=self.norm_before_gate,
        )  # fmt: skip


@twin_of("mamba_ssm.modules.mamba2.Mamba2", "mamba_ssm.Mamba2")
class Mamba2(nn.Module, PyTorchModelHubMixin):
    """The Mamba2 (SSD) mixer: in_proj -> causal conv -> chunked selective scan -> gated RMSNorm -> out_proj.

    Tensor parallelism (``process_group``) needs mamba_ssm's distributed linears and is not twinned.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        conv_init: float | None = None,
        expand: int = 2,
        headdim: int = 64,
        d_ssm: int | None = None,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1, 16),
        D_has_hdim: bool = False,
        rmsnorm: bool = True,
        norm_before_gate: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, float("inf")),
        bias: bool = False,
        conv_bias: bool = True,
        chunk_size: int = 256,
        use_mem_eff_path: bool = True,
        layer_idx: int | None = None,
        process_group: Any = None,
        sequence_parallel: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if process_group is not None:
            raise KernelUnavailableError(
                "Mamba2 with a process_group (tensor parallelism) builds mamba_ssm's ColumnParallelLinear/"
                "RowParallelLinear, which have no twin; build it where mamba_ssm is installed"
            )
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.conv_init = conv_init
        self.expand = expand
        self.process_group = process_group
        self.sequence_parallel = sequence_parallel
        self.world_size = 1
        self.local_rank = 0
        self.d_inner = self.expand * self.d_model
        self.headdim = headdim
        self.d_ssm = self.d_inner if d_ssm is None else d_ssm
        self.ngroups = ngroups
        if self.d_ssm % self.headdim != 0:
            raise ValueError(f"d_ssm={self.d_ssm} must be a multiple of headdim={self.headdim}")
        self.nheads = self.d_ssm // self.headdim
        self.D_has_hdim = D_has_hdim
        self.rmsnorm = rmsnorm
        self.norm_before_gate = norm_before_gate
        self.dt_limit = dt_limit
        self.activation = "silu"
        self.chunk_size = chunk_size
        self.use_mem_eff_path = use_mem_eff_path
        self.layer_idx = layer_idx

        # order of the projection: [z, x, B, C, dt]
        d_in_proj = 2 * self.d_inner + 2 * self.ngroups * self.d_state + self.nheads
        self.in_proj = nn.Linear(self.d_model, d_in_proj, bias=bias, **factory_kwargs)
        conv_dim = self.d_ssm + 2 * self.ngroups * self.d_state
        self.conv1d = nn.Conv1d(
            in_channels=conv_dim,
            out_channels=conv_dim,
            bias=conv_bias,
            kernel_size=d_conv,
            groups=conv_dim,
            padding=d_conv - 1,
            **factory_kwargs,
        )
        if self.conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -self.conv_init, self.conv_init)
        self.act = nn.SiLU()

        # dt bias = softplus^-1 of dt sampled log-uniformly in [dt_min, dt_max]
        dt = torch.exp(
            torch.rand(self.nheads, **factory_kwargs) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        dt = torch.clamp(dt, min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.dt_bias._no_weight_decay = True

        if not (A_init_range[0] > 0 and A_init_range[1] >= A_init_range[0]):
            raise ValueError(f"A_init_range must satisfy 0 < low <= high, got {A_init_range}")
        A = torch.empty(self.nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))
        self.A_log._no_weight_decay = True
        # D has the default dtype even when dtype= is given: upstream creates it without factory kwargs
        self.D = nn.Parameter(torch.ones(self.d_ssm if self.D_has_hdim else self.nheads, device=device))
        self.D._no_weight_decay = True

        if self.rmsnorm:
            self.norm = RMSNorm(
                self.d_ssm, eps=1e-5, norm_before_gate=self.norm_before_gate, group_size=self.d_ssm // ngroups,
                **factory_kwargs,
            )  # fmt: skip
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=bias, **factory_kwargs)

    def _D(self) -> torch.Tensor:
        return _rearrange_heads(self.D, self.headdim) if self.D_has_hdim else self.D

    def forward(
        self,
        u: torch.Tensor,
        seqlen: int | None = None,
        seq_idx: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        inference_params: Any = None,
    ) -> torch.Tensor:
        """u ``[B, L, D]`` (or ``[B * L, D]`` with ``seqlen``) -> same shape, as ``Mamba2.forward``."""
        seqlen_og = seqlen
        if seqlen is None:
            batch, seqlen, _ = u.shape
        else:
            batch = u.shape[0] // seqlen

        conv_state, ssm_state = None, None
        if inference_params is not None:
            inference_batch = cu_seqlens.shape[0] - 1 if cu_seqlens is not None else batch
            conv_state, ssm_state = self._get_states_from_cache(inference_params, inference_batch)
            if inference_params.seqlen_offset > 0:
                out, _, _ = self.step(u, conv_state, ssm_state)
                return out

        zxbcdt = self.in_proj(u)
        if seqlen_og is not None:
            zxbcdt = zxbcdt.reshape(-1, seqlen, zxbcdt.shape[-1])
        A = -torch.exp(self.A_log.float())
        dt_limit_kwargs = {} if self.dt_limit == (0.0, float("inf")) else {"dt_limit": self.dt_limit}
        if self.use_mem_eff_path and inference_params is None:
            out = _kernel(_SPLIT_CONV_SCAN)(
                zxbcdt,
                self.conv1d.weight.squeeze(1),
                self.conv1d.bias,
                self.dt_bias,
                A,
                D=self._D(),
                chunk_size=self.chunk_size,
                seq_idx=seq_idx,
                activation=self.activation,
                rmsnorm_weight=self.norm.weight if self.rmsnorm else None,
                rmsnorm_eps=self.norm.eps if self.rmsnorm else 1e-6,
                outproj_weight=self.out_proj.weight,
                outproj_bias=self.out_proj.bias,
                headdim=None if self.D_has_hdim else self.headdim,
                ngroups=self.ngroups,
                norm_before_gate=self.norm_before_gate,
                **dt_limit_kwargs,
            )
            if seqlen_og is not None:
                out = out.reshape(-1, out.shape[-1])
            return out

        d_mlp = (zxbcdt.shape[-1] - 2 * self.d_ssm - 2 * self.ngroups * self.d_state - self.nheads) // 2
        z0, x0, z, xBC, dt = torch.split(
            zxbcdt,
            [d_mlp, d_mlp, self.d_ssm, self.d_ssm + 2 * self.ngroups * self.d_state, self.nheads],
            dim=-1,
        )
        if conv_state is not None:
            if cu_seqlens is not None:
                raise KernelUnavailableError(
                    "Mamba2 varlen inference needs causal_conv1d's causal_conv1d_varlen_states, which has no "
                    "reference; run it where causal_conv1d is installed"
                )
            xBC_t = xBC.transpose(1, 2)
            conv_state.copy_(F.pad(xBC_t, (self.d_conv - xBC_t.shape[-1], 0)))
        xBC = _kernel(_CONV_FN)(
            xBC.transpose(1, 2),
            self.conv1d.weight.squeeze(1),
            bias=self.conv1d.bias,
            activation=self.activation,
            seq_idx=seq_idx,
        ).transpose(1, 2)
        x, B, C = torch.split(xBC, [self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        y = _kernel(_CHUNK_SCAN)(
            _rearrange_heads(x, self.headdim),
            dt,
            A,
            _rearrange_heads(B, self.d_state),
            _rearrange_heads(C, self.d_state),
            chunk_size=self.chunk_size,
            D=self._D(),
            z=_rearrange_heads(z, self.headdim) if not self.rmsnorm else None,
            dt_bias=self.dt_bias,
            dt_softplus=True,
            seq_idx=seq_idx,
            cu_seqlens=cu_seqlens,
            **dt_limit_kwargs,
            return_final_states=ssm_state is not None,
            return_varlen_states=cu_seqlens is not None and inference_params is not None,
        )
        if ssm_state is not None:
            y, last_state, *_ = y
            ssm_state.copy_(last_state)
        y = y.reshape(*y.shape[:-2], -1)
        if self.rmsnorm:
            y = self.norm(y, z)
        if d_mlp > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        if seqlen_og is not None:
            y = y.reshape(-1, y.shape[-1])
        return self.out_proj(y)

    def step(
        self, hidden_states: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoding token: updates ``conv_state`` and ``ssm_state`` in place."""
        if hidden_states.shape[1] != 1:
            raise ValueError("Only support decoding with 1 token at a time for now")
        zxbcdt = self.in_proj(hidden_states.squeeze(1))
        d_mlp = (zxbcdt.shape[-1] - 2 * self.d_ssm - 2 * self.ngroups * self.d_state - self.nheads) // 2
        z0, x0, z, xBC, dt = torch.split(
            zxbcdt,
            [d_mlp, d_mlp, self.d_ssm, self.d_ssm + 2 * self.ngroups * self.d_state, self.nheads],
            dim=-1,
        )
        xBC = _kernel(_CONV_UPDATE)(
            xBC, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.activation
        )
        x, B, C = torch.split(xBC, [self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        A = -torch.exp(self.A_log.float())
        A = A[:, None, None].expand(self.nheads, self.headdim, self.d_state).to(dtype=torch.float32)
        dt = dt.unsqueeze(-1).expand(*dt.shape, self.headdim)
        dt_bias = self.dt_bias.unsqueeze(-1).expand(self.nheads, self.headdim)
        D = self.D.unsqueeze(-1).expand(self.nheads, self.headdim) if not self.D_has_hdim else self._D()
        B = _rearrange_heads(B, self.d_state)
        C = _rearrange_heads(C, self.d_state)
        x_reshaped = _rearrange_heads(x, self.headdim)
        if not self.rmsnorm:
            z = _rearrange_heads(z, self.headdim)
        y = _kernel(_STATE_UPDATE)(
            ssm_state, x_reshaped, dt, A, B, C, D, z=z if not self.rmsnorm else None, dt_bias=dt_bias,
            dt_softplus=True,
        )  # fmt: skip
        y = y.reshape(y.shape[0], -1)
        if self.rmsnorm:
            y = self.norm(y, z)
        if d_mlp > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        out = self.out_proj(y)
        return out.unsqueeze(1), conv_state, ssm_state

    def allocate_inference_cache(
        self, batch_size: int, max_seqlen: int, dtype: torch.dtype | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.out_proj.weight.device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(
            batch_size, self.d_conv, self.conv1d.weight.shape[0], device=device, dtype=conv_dtype
        ).transpose(1, 2)
        ssm_dtype = self.in_proj.weight.dtype if dtype is None else dtype
        ssm_state = torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=ssm_dtype)
        return conv_state, ssm_state

    def _get_states_from_cache(
        self, inference_params: Any, batch_size: int, initialize_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.layer_idx is None:
            raise ValueError("Mamba2 needs layer_idx to keep an inference cache")
        if self.layer_idx not in inference_params.key_value_memory_dict:
            conv_state = torch.zeros(
                batch_size,
                self.d_conv,
                self.conv1d.weight.shape[0],
                device=self.conv1d.weight.device,
                dtype=self.conv1d.weight.dtype,
            ).transpose(1, 2)
            ssm_state = torch.zeros(
                batch_size,
                self.nheads,
                self.headdim,
                self.d_state,
                device=self.in_proj.weight.device,
                dtype=self.in_proj.weight.dtype,
            )
            inference_params.key_value_memory_dict[self.layer_idx] = (conv_state, ssm_state)
        else:
            conv_state, ssm_state = inference_params.key_value_memory_dict[self.layer_idx]
            if initialize_states:
                conv_state.zero_()
                ssm_state.zero_()
        return conv_state, ssm_state
