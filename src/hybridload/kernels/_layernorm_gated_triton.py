"""Triton kernel behind :mod:`hybridload.kernels.layernorm_gated` (imports triton; load it lazily).

One program normalises a ``[BLOCK_M, BLOCK_N]`` tile: BLOCK_M rows of one group, the whole group in
registers, so x and z are read once and y written once (memory-bound: that is the floor). Several rows
per program keep small groups from launching a sea of one-warp programs.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import device_guard


@triton.jit
def _norm_fwd_kernel(
    X, Y, W, B, Z,
    stride_x_row, stride_x_col, stride_z_row, stride_z_col, stride_y_row,
    M, N, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_Z: tl.constexpr, NORM_BEFORE_GATE: tl.constexpr, IS_RMS_NORM: tl.constexpr,
):
    pid_m = tl.program_id(0)
    group = tl.program_id(1)
    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    col_mask = cols < N
    mask = (rows < M)[:, None] & col_mask[None, :]
    gcols = group * N + cols

    x = tl.load(X + rows[:, None] * stride_x_row + gcols[None, :] * stride_x_col, mask=mask, other=0.0)
    x = x.to(tl.float32)
    if HAS_Z:
        z = tl.load(Z + rows[:, None] * stride_z_row + gcols[None, :] * stride_z_col, mask=mask, other=0.0)
        z = z.to(tl.float32)
        gate = z * tl.sigmoid(z)
        if not NORM_BEFORE_GATE:
            x = x * gate
    if IS_RMS_NORM:
        var = tl.sum(x * x, axis=1) / N
        rstd = 1.0 / tl.sqrt(var + eps)
        x_hat = x * rstd[:, None]
    else:
        mean = tl.sum(x, axis=1) / N
        xbar = tl.where(mask, x - mean[:, None], 0.0)
        var = tl.sum(xbar * xbar, axis=1) / N
        rstd = 1.0 / tl.sqrt(var + eps)
        x_hat = xbar * rstd[:, None]
    w = tl.load(W + gcols, mask=col_mask, other=0.0).to(tl.float32)
    y = x_hat * w[None, :]
    if HAS_BIAS:
        b = tl.load(B + gcols, mask=col_mask, other=0.0).to(tl.float32)
        y = y + b[None, :]
    if HAS_Z and NORM_BEFORE_GATE:
        y = y * gate
    tl.store(Y + rows[:, None] * stride_y_row + gcols[None, :], y.to(Y.dtype.element_ty), mask=mask)


def default_config(rows: int, group_size: int) -> tuple[int, int]:
    """(BLOCK_M, num_warps): about 4K elements per program, at most 8 warps."""
    block_n = triton.next_power_of_2(group_size)
    block_m = max(1, min(64, 4096 // block_n, triton.next_power_of_2(rows)))
    num_warps = max(1, min(8, block_m * block_n // 512))
    return block_m, num_warps


def layer_norm_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    z: torch.Tensor | None,
    eps: float,
    group_size: int,
    norm_before_gate: bool,
    is_rms_norm: bool,
    block_m: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Launch the kernel on validated arguments (see ``layernorm_gated._check``)."""
    shape = x.shape
    n = shape[-1]
    x2 = x.reshape(-1, n)  # a view whenever the leading dims allow it: strided rows cost nothing
    z2 = z.reshape(-1, n) if z is not None else None
    m = x2.shape[0]
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    default_m, default_warps = default_config(m, group_size)
    block_m = block_m or default_m
    num_warps = num_warps or default_warps
    grid = (triton.cdiv(m, block_m), n // group_size)
    with device_guard(x):
        _norm_fwd_kernel[grid](
            x2, out, weight, bias, z2,
            x2.stride(0), x2.stride(1),
            z2.stride(0) if z2 is not None else 0, z2.stride(1) if z2 is not None else 0,
            out.stride(0),
            m, group_size, eps,
            BLOCK_M=block_m, BLOCK_N=triton.next_power_of_2(group_size),
            HAS_BIAS=bias is not None, HAS_Z=z is not None,
            NORM_BEFORE_GATE=norm_before_gate, IS_RMS_NORM=is_rms_norm,
            num_warps=num_warps,
        )
    return out.reshape(shape)
