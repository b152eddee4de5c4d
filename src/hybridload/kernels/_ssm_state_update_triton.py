"""Triton kernel behind :mod:`hybridload.kernels.ssm_state_update` (imports triton; load it lazily).

One program owns a ``[BLOCK_M, dstate]`` slab of one head's state: it is read once, updated in registers
and written back once (the state is nearly all of the bytes), and the output row is reduced from it.
Per-head scalars broadcast to (dim, dstate) with zero strides, as HF's Mamba2 passes A, dt and D, are
read through their strides (they hit the cache), so no special "tied" path is needed.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import device_guard


@triton.jit
def _ssu_kernel(
    State, X, Dt, DtBias, A, Bm, Cm, Dv, Z, Out, StateIdx,
    nheads, dim, dstate, heads_per_group,
    s_b, s_h, s_m, s_n,
    x_b, x_h, x_m,
    dt_b, dt_h, dt_m,
    db_h, db_m,
    a_h, a_m, a_n,
    b_b, b_g, b_n,
    c_b, c_g, c_n,
    d_h, d_m,
    z_b, z_h, z_m,
    o_b, o_h, o_m,
    DT_SOFTPLUS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_DT_BIAS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_STATE_IDX: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_h = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    m_mask = offs_m < dim
    tile_mask = m_mask[:, None] & (offs_n < dstate)[None, :]

    if HAS_STATE_IDX:
        row = tl.load(StateIdx + pid_b).to(tl.int64)
    else:
        row = pid_b
    valid = row >= 0  # a negative index marks a padding slot: output 0, state untouched
    state_ptrs = (State + tl.maximum(row, 0) * s_b + pid_h * s_h
                  + offs_m[:, None] * s_m + offs_n[None, :] * s_n)
    state_mask = tile_mask & valid
    state = tl.load(state_ptrs, mask=state_mask, other=0.0).to(tl.float32)

    x = tl.load(X + pid_b * x_b + pid_h * x_h + offs_m * x_m, mask=m_mask, other=0.0).to(tl.float32)
    dt = tl.load(Dt + pid_b * dt_b + pid_h * dt_h + offs_m * dt_m, mask=m_mask, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        dt += tl.load(DtBias + pid_h * db_h + offs_m * db_m, mask=m_mask, other=0.0).to(tl.float32)
    if DT_SOFTPLUS:
        # softplus with torch's threshold: identity above 20 (also avoids exp overflow)
        dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(tl.minimum(dt, 20.0))), dt)
    a = tl.load(A + pid_h * a_h + offs_m[:, None] * a_m + offs_n[None, :] * a_n, mask=tile_mask, other=0.0)
    group = pid_h // heads_per_group
    b = tl.load(Bm + pid_b * b_b + group * b_g + offs_n * b_n, mask=offs_n < dstate, other=0.0).to(tl.float32)
    c = tl.load(Cm + pid_b * c_b + group * c_g + offs_n * c_n, mask=offs_n < dstate, other=0.0).to(tl.float32)

    d_a = tl.exp(a.to(tl.float32) * dt[:, None])
    state = state * d_a + (dt * x)[:, None] * b[None, :]
    tl.store(state_ptrs, state.to(State.dtype.element_ty), mask=state_mask)

    out = tl.sum(state * c[None, :], axis=1)
    if HAS_D:
        out += x * tl.load(Dv + pid_h * d_h + offs_m * d_m, mask=m_mask, other=0.0).to(tl.float32)
    if HAS_Z:
        zv = tl.load(Z + pid_b * z_b + pid_h * z_h + offs_m * z_m, mask=m_mask, other=0.0).to(tl.float32)
        out = out * zv * tl.sigmoid(zv)
    out = tl.where(valid, out, 0.0)
    tl.store(Out + pid_b * o_b + pid_h * o_h + offs_m * o_m, out.to(Out.dtype.element_ty), mask=m_mask)


def default_config(dstate: int) -> tuple[int, int]:
    """(BLOCK_M, num_warps): about 2K state elements per program."""
    block_n = triton.next_power_of_2(dstate)
    block_m = max(1, min(64, 2048 // block_n))
    return block_m, 4 if block_m * block_n <= 2048 else 8


def _strides(t: torch.Tensor | None, n: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * n


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    state_batch_indices: torch.Tensor | None,
    block_m: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Launch on validated, heads-form arguments; updates ``state`` in place, returns (batch, nheads, dim)."""
    _, nheads, dim, dstate = state.shape
    batch = x.shape[0]
    ngroups = B.shape[1]
    out = torch.empty_like(x)
    d_m, d_w = default_config(dstate)
    block_m, num_warps = block_m or d_m, num_warps or d_w
    grid = (triton.cdiv(dim, block_m), batch, nheads)
    with device_guard(x):
        _ssu_kernel[grid](
            state, x, dt, dt_bias, A, B, C, D, z, out, state_batch_indices,
            nheads, dim, dstate, nheads // ngroups,
            *state.stride(), *x.stride(), *dt.stride(), *_strides(dt_bias, 2), *A.stride(),
            *B.stride(), *C.stride(), *_strides(D, 2), *_strides(z, 3), *out.stride(),
            DT_SOFTPLUS=dt_softplus, BLOCK_M=block_m, BLOCK_N=triton.next_power_of_2(dstate),
            HAS_DT_BIAS=dt_bias is not None, HAS_D=D is not None, HAS_Z=z is not None,
            HAS_STATE_IDX=state_batch_indices is not None,
            num_warps=num_warps,
        )
    return out
