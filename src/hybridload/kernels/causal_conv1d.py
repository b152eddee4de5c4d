"""Depthwise causal conv1d with the call signatures of the ``causal_conv1d`` package.

``causal_conv1d_fn`` is the prefill path of every Mamba/Mamba2 mixer, ``causal_conv1d_update`` the decode
step that shifts a rolling conv state. Forward only; accumulation in float32, outputs in ``x.dtype``.

Where the CUDA package only accepts a layout (``seq_idx``, ``initial_states`` and ``return_final_states``
need channel-last ``x``, ``x.stride(1) == 1``), these kernels accept any strides: a superset, same values.
"""
from __future__ import annotations

import torch

from . import _forward_only, _runtime
from . import _validate as check


def _check_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    seq_idx: torch.Tensor | None,
    initial_states: torch.Tensor | None,
    return_final_states: bool,
    final_states_out: torch.Tensor | None,
    activation: str | None,
) -> bool:
    fn = "causal_conv1d_fn"
    check.tensor(fn, "x", x)
    check.tensor(fn, "weight", weight)
    for name, value in (("bias", bias), ("seq_idx", seq_idx), ("initial_states", initial_states)):
        check.tensor(fn, name, value, optional=True)
    check.tensor(fn, "final_states_out", final_states_out, optional=True)
    silu = check.activation(fn, activation)
    check.ndim(fn, "x", x, (3,), "(batch, dim, seqlen)")
    batch, dim, seqlen = x.shape
    check.dtype(fn, "x", x)
    check.dtype(fn, "weight", weight)
    check.ndim(fn, "weight", weight, (2,), "(dim, width)")
    width = weight.shape[-1]
    check.width(fn, width)
    check.shape(fn, "weight", weight, (dim, width), "(dim, width)")
    if bias is not None:
        check.same_dtype(fn, "bias", bias, "weight", weight)
        check.shape(fn, "bias", bias, (dim,), "(dim,)")
    if seq_idx is not None:
        if initial_states is not None:
            raise check.fail(fn, "initial_states must be None if seq_idx is given (as in causal_conv1d)")
        if return_final_states:
            raise check.fail(fn, "return_final_states is not supported with seq_idx (as in causal_conv1d)")
        check.dtype(fn, "seq_idx", seq_idx, (torch.int32,))
        check.shape(fn, "seq_idx", seq_idx, (batch, seqlen), "(batch, seqlen)")
    if initial_states is not None:
        check.same_dtype(fn, "initial_states", initial_states, "x", x)
        check.shape(fn, "initial_states", initial_states, (batch, dim, width - 1), "(batch, dim, width - 1)")
    if final_states_out is not None and return_final_states:
        check.same_dtype(fn, "final_states_out", final_states_out, "x", x)
        check.shape(
            fn, "final_states_out", final_states_out, (batch, dim, width - 1), "(batch, dim, width - 1)"
        )
    check.device(
        fn,
        {
            "x": x,
            "weight": weight,
            "bias": bias,
            "seq_idx": seq_idx,
            "initial_states": initial_states,
            "final_states_out": final_states_out if return_final_states else None,
        },
    )
    return silu


def causal_conv1d_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
    initial_states: torch.Tensor | None = None,
    return_final_states: bool = False,
    final_states_out: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``out[b, d, t] = act(bias[d] + sum_k weight[d, k] * x[b, d, t - (width - 1) + k])``.

    x: (batch, dim, seqlen); weight: (dim, width), width 2..4; bias: (dim,); seq_idx: (batch, seqlen) int32,
    a tap only reads positions with the same index, positions before t = 0 count as index -1 (1.5.0);
    initial_states: (batch, dim, width - 1), the positions before t = 0 (zeros otherwise);
    final_states_out: (batch, dim, width - 1), written when ``return_final_states``; activation None/silu.
    Returns ``out`` (batch, dim, seqlen), or ``(out, final_states)`` when ``return_final_states``.
    """
    silu = _check_fn(
        x, weight, bias, seq_idx, initial_states, return_final_states, final_states_out, activation
    )
    batch, dim, _ = x.shape
    width = weight.shape[-1]
    if return_final_states and final_states_out is None:
        # channel-last, like causal_conv1d allocates it
        final_states_out = torch.empty(
            batch, width - 1, dim, device=x.device, dtype=x.dtype
        ).transpose(1, 2)
    final = final_states_out if return_final_states else None
    nothing_to_write = x.numel() == 0 and (final is None or final.numel() == 0)
    if x.device.type == "meta" or nothing_to_write:
        out = torch.empty_like(x)
        return (out, final) if return_final_states else out

    def launch() -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        launcher = _runtime.load_launcher("_causal_conv1d_triton")
        out = launcher.causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, final, silu)
        return (out, final) if return_final_states else out

    return _forward_only.run("causal_conv1d_fn", launch, (x, weight, bias, initial_states))


def _check_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
    cache_seqlens: torch.Tensor | None,
    conv_state_indices: torch.Tensor | None,
) -> bool:
    fn = "causal_conv1d_update"
    check.tensor(fn, "x", x)
    check.tensor(fn, "conv_state", conv_state)
    check.tensor(fn, "weight", weight)
    check.tensor(fn, "bias", bias, optional=True)
    check.tensor(fn, "cache_seqlens", cache_seqlens, optional=True)
    check.tensor(fn, "conv_state_indices", conv_state_indices, optional=True)
    silu = check.activation(fn, activation)
    check.ndim(fn, "x", x, (2, 3), "(batch, dim) or (batch, dim, seqlen)")
    batch, dim = x.shape[:2]
    check.dtype(fn, "x", x)
    check.dtype(fn, "weight", weight)
    check.ndim(fn, "weight", weight, (2,), "(dim, width)")
    width = weight.shape[-1]
    check.width(fn, width)
    check.shape(fn, "weight", weight, (dim, width), "(dim, width)")
    check.same_dtype(fn, "conv_state", conv_state, "x", x)
    check.ndim(fn, "conv_state", conv_state, (3,), "(batch, dim, state_len)")
    state_len = conv_state.shape[-1]
    if state_len < width - 1:
        raise check.fail(fn, f"conv_state.shape[-1] (state_len) must be >= width - 1 = {width - 1}, got {state_len}")
    if conv_state_indices is None:
        check.shape(fn, "conv_state", conv_state, (batch, dim, state_len), "(batch, dim, state_len)")
    else:
        check.dtype(fn, "conv_state_indices", conv_state_indices, (torch.int32,))
        check.shape(fn, "conv_state_indices", conv_state_indices, (batch,), "(batch,)")
        if conv_state.shape[1] != dim:
            raise check.fail(fn, f"conv_state must have shape (n_states, dim={dim}, state_len), got {tuple(conv_state.shape)}")
    if bias is not None:
        check.same_dtype(fn, "bias", bias, "weight", weight)
        check.shape(fn, "bias", bias, (dim,), "(dim,)")
    if cache_seqlens is not None:
        check.dtype(fn, "cache_seqlens", cache_seqlens, (torch.int32,))
        check.shape(fn, "cache_seqlens", cache_seqlens, (batch,), "(batch,)")
    check.device(
        fn,
        {
            "x": x,
            "conv_state": conv_state,
            "weight": weight,
            "bias": bias,
            "cache_seqlens": cache_seqlens,
            "conv_state_indices": conv_state_indices,
        },
    )
    return silu


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    cache_seqlens: torch.Tensor | None = None,
    conv_state_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """One decode step (or a few tokens) of the causal conv, updating ``conv_state`` in place.

    x: (batch, dim) or (batch, dim, seqlen); conv_state: (batch, dim, state_len), state_len >= width - 1,
    shifted left by seqlen with x appended; with ``cache_seqlens`` (batch,) int32 it is a circular buffer
    written at ``cache_seqlens % state_len``; with ``conv_state_indices`` (batch,) int32 row b uses state
    ``conv_state[conv_state_indices[b]]`` and a negative index marks padding (output 0, state untouched).
    Returns out with the shape of x.
    """
    silu = _check_update(x, conv_state, weight, bias, activation, cache_seqlens, conv_state_indices)
    if x.device.type == "meta" or x.numel() == 0:
        return torch.empty_like(x)

    def launch() -> torch.Tensor:
        launcher = _runtime.load_launcher("_causal_conv1d_triton")
        x3 = x.unsqueeze(-1) if x.dim() == 2 else x
        out = launcher.causal_conv1d_update(x3, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices)
        return out.squeeze(-1) if x.dim() == 2 else out

    return _forward_only.run("causal_conv1d_update", launch, (x, weight, bias))
