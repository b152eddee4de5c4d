"""Triton kernels behind :mod:`hybridload.kernels.causal_conv1d` (imports triton; load it lazily).

Prefill: one program owns a ``[BLOCK_L, BLOCK_D]`` tile of one sequence and reads the ``width`` shifted
copies of its input tile; the shifts overlap, so beyond the first they come from L1/L2 and device memory
sees x about once. The tile is laid out along whichever of x's axes is contiguous (channel-last, as Mamba2
passes it, or sequence-contiguous, as Mamba1 does); Triton specialises on the unit stride.

Decode: one program owns BLOCK_D channels of one sequence; it reads the state window and the new tokens,
writes the outputs, then (after a barrier, since threads share the state rows) the shifted state.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import device_guard


@triton.jit
def _conv_fwd_kernel(
    X, Wt, Bias, SeqIdx, Init, Final, Out,
    L, D,
    stride_x_b, stride_x_d, stride_x_l,
    stride_w_d, stride_w_k,
    stride_o_b, stride_o_d, stride_o_l,
    stride_i_b, stride_i_d, stride_i_l,
    stride_f_b, stride_f_d, stride_f_l,
    stride_s_b, stride_s_l,
    WIDTH: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_SEQ_IDX: tl.constexpr, HAS_INIT: tl.constexpr, HAS_FINAL: tl.constexpr,
    SILU: tl.constexpr,
):
    pid_l = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    ls = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = ds < D
    l_mask = ls < L
    X += b * stride_x_b
    if HAS_INIT:
        Init += b * stride_i_b
    if HAS_SEQ_IDX:
        SeqIdx += b * stride_s_b
        seq_cur = tl.load(SeqIdx + ls * stride_s_l, mask=l_mask, other=-1)

    acc = tl.zeros((BLOCK_L, BLOCK_D), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(Bias + ds, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    for k in tl.static_range(WIDTH):
        pos = ls - (WIDTH - 1) + k
        w_k = tl.load(Wt + ds * stride_w_d + k * stride_w_k, mask=d_mask, other=0.0).to(tl.float32)
        in_x = (pos >= 0) & (pos < L)
        xv = tl.load(
            X + pos[:, None] * stride_x_l + ds[None, :] * stride_x_d,
            mask=in_x[:, None] & d_mask[None, :], other=0.0,
        ).to(tl.float32)
        if HAS_INIT:
            ipos = pos + (WIDTH - 1)
            in_init = (pos < 0) & (ipos >= 0)
            xv += tl.load(
                Init + ipos[:, None] * stride_i_l + ds[None, :] * stride_i_d,
                mask=in_init[:, None] & d_mask[None, :], other=0.0,
            ).to(tl.float32)
        if HAS_SEQ_IDX:
            seq_k = tl.load(SeqIdx + pos * stride_s_l, mask=in_x, other=-1)
            xv = tl.where((seq_k == seq_cur)[:, None], xv, 0.0)
        acc += xv * w_k[None, :]
    if SILU:
        acc = acc * tl.sigmoid(acc)
    tl.store(
        Out + b * stride_o_b + ls[:, None] * stride_o_l + ds[None, :] * stride_o_d,
        acc.to(Out.dtype.element_ty),
        mask=l_mask[:, None] & d_mask[None, :],
    )

    if HAS_FINAL:
        # the last width - 1 positions of cat(initial_states or zeros, x), written by the last L-tile
        if pid_l == tl.num_programs(0) - 1:
            for j in tl.static_range(WIDTH - 1):
                fpos = L - (WIDTH - 1) + j
                v = tl.load(X + fpos * stride_x_l + ds * stride_x_d, mask=d_mask & (fpos >= 0), other=0.0)
                if HAS_INIT:
                    v += tl.load(
                        Init + (fpos + WIDTH - 1) * stride_i_l + ds * stride_i_d,
                        mask=d_mask & (fpos < 0), other=0.0,
                    )
                tl.store(Final + b * stride_f_b + j * stride_f_l + ds * stride_f_d, v, mask=d_mask)


def fwd_config(x: torch.Tensor) -> tuple[int, int, int]:
    """(BLOCK_L, BLOCK_D, num_warps) by layout: long along the contiguous axis."""
    if x.stride(1) == 1 and x.stride(2) != 1:  # channel-last
        return 32, 256, 4
    return 256, 16, 4


def causal_conv1d_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    initial_states: torch.Tensor | None,
    final_states: torch.Tensor | None,
    silu: bool,
    block_l: int | None = None,
    block_d: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Launch the prefill kernel on validated arguments; returns ``out`` (strides of x, like empty_like)."""
    batch, dim, seqlen = x.shape
    width = weight.shape[-1]
    out = torch.empty_like(x)
    d_l, d_d, d_w = fwd_config(x)
    block_l, block_d, num_warps = block_l or d_l, block_d or d_d, num_warps or d_w
    grid = (max(1, triton.cdiv(seqlen, block_l)), triton.cdiv(dim, block_d), batch)
    init_strides = initial_states.stride() if initial_states is not None else (0, 0, 0)
    final_strides = final_states.stride() if final_states is not None else (0, 0, 0)
    seq_strides = seq_idx.stride() if seq_idx is not None else (0, 0)
    with device_guard(x):
        _conv_fwd_kernel[grid](
            x, weight, bias, seq_idx, initial_states, final_states, out,
            seqlen, dim,
            *x.stride(), *weight.stride(), *out.stride(),
            *init_strides, *final_strides, *seq_strides,
            WIDTH=width, BLOCK_L=block_l, BLOCK_D=block_d,
            HAS_BIAS=bias is not None, HAS_SEQ_IDX=seq_idx is not None,
            HAS_INIT=initial_states is not None, HAS_FINAL=final_states is not None,
            SILU=silu,
            num_warps=num_warps,
        )
    return out


@triton.jit
def _conv_update_kernel(
    X, State, Wt, Bias, CacheSeqlens, StateIdx, Out,
    D, SEQLEN, STATE_LEN,
    stride_x_b, stride_x_d, stride_x_l,
    stride_s_b, stride_s_d, stride_s_l,
    stride_w_d, stride_w_k,
    stride_o_b, stride_o_d, stride_o_l,
    WIDTH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
    HAS_BIAS: tl.constexpr, CIRCULAR: tl.constexpr, HAS_STATE_IDX: tl.constexpr, SILU: tl.constexpr,
):
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    ds = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_mask = ds < D
    if HAS_STATE_IDX:
        state_row = tl.load(StateIdx + b).to(tl.int64)
    else:
        state_row = b
    valid = state_row >= 0  # a negative index marks a padding slot: output 0, no state to touch
    State += tl.maximum(state_row, 0) * stride_s_b
    X += b * stride_x_b
    Out += b * stride_o_b
    if CIRCULAR:
        start = tl.load(CacheSeqlens + b).to(tl.int64) % STATE_LEN
    else:
        start = 0
    s_mask = d_mask & valid

    bias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(Bias + ds, mask=d_mask, other=0.0).to(tl.float32)
    for t in range(SEQLEN):
        acc = bias
        for k in tl.static_range(WIDTH):
            j = t + k  # index into cat(last width - 1 state entries, x)
            from_state = j < WIDTH - 1
            if CIRCULAR:
                ridx = (start - (WIDTH - 1) + j + STATE_LEN) % STATE_LEN
            else:
                ridx = STATE_LEN - (WIDTH - 1) + j
            sv = tl.load(State + ridx * stride_s_l + ds * stride_s_d, mask=s_mask & from_state, other=0.0)
            xv = tl.load(X + (j - (WIDTH - 1)) * stride_x_l + ds * stride_x_d, mask=d_mask & (j >= WIDTH - 1), other=0.0)
            w_k = tl.load(Wt + ds * stride_w_d + k * stride_w_k, mask=d_mask, other=0.0).to(tl.float32)
            acc += (sv.to(tl.float32) + xv.to(tl.float32)) * w_k
        if SILU:
            acc = acc * tl.sigmoid(acc)
        acc = tl.where(valid, acc, 0.0)
        tl.store(Out + t * stride_o_l + ds * stride_o_d, acc.to(Out.dtype.element_ty), mask=d_mask)

    if CIRCULAR:
        tl.debug_barrier()  # every read of the old state happened above
        for t2 in range(SEQLEN):
            x_new = tl.load(X + t2 * stride_x_l + ds * stride_x_d, mask=d_mask)
            widx = (start + t2) % STATE_LEN
            tl.store(State + widx * stride_s_l + ds * stride_s_d, x_new, mask=s_mask)
    else:
        # new_state = cat(state, x)[-STATE_LEN:], read whole before any write
        i = tl.arange(0, BLOCK_S)
        src = i + SEQLEN
        in_state = src < STATE_LEN
        i_mask = i < STATE_LEN
        tile_mask = i_mask[:, None] & s_mask[None, :]
        old = tl.load(
            State + src[:, None] * stride_s_l + ds[None, :] * stride_s_d,
            mask=tile_mask & in_state[:, None], other=0.0,
        )
        new = tl.load(
            X + (src - STATE_LEN)[:, None] * stride_x_l + ds[None, :] * stride_x_d,
            mask=tile_mask & (~in_state)[:, None], other=0.0,
        )
        tl.debug_barrier()
        tl.store(
            State + i[:, None] * stride_s_l + ds[None, :] * stride_s_d,
            tl.where(in_state[:, None], old, new.to(old.dtype)),
            mask=tile_mask,
        )


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    silu: bool,
    cache_seqlens: torch.Tensor | None,
    conv_state_indices: torch.Tensor | None,
    block_d: int = 256,
    num_warps: int = 4,
) -> torch.Tensor:
    """Launch the decode kernel; ``x`` is (batch, dim, seqlen). Updates ``conv_state`` in place."""
    batch, dim, seqlen = x.shape
    width = weight.shape[-1]
    state_len = conv_state.shape[-1]
    out = torch.empty_like(x)
    grid = (triton.cdiv(dim, block_d), batch)
    with device_guard(x):
        _conv_update_kernel[grid](
            x, conv_state, weight, bias, cache_seqlens, conv_state_indices, out,
            dim, seqlen, state_len,
            *x.stride(), *conv_state.stride(), *weight.stride(), *out.stride(),
            WIDTH=width, BLOCK_D=block_d, BLOCK_S=triton.next_power_of_2(state_len),
            HAS_BIAS=bias is not None, CIRCULAR=cache_seqlens is not None,
            HAS_STATE_IDX=conv_state_indices is not None, SILU=silu,
            num_warps=num_warps,
        )
    return out
