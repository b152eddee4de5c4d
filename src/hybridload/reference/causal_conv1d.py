"""Pure-PyTorch references for ``causal_conv1d`` 1.5.0 (Dao-AILab/causal-conv1d), forward only.

Same call signatures, defaults, return structures, shape checks and in-place updates as
``causal_conv1d.causal_conv1d_interface`` and its CUDA extension (``causal_conv1d_cuda``):

* arithmetic runs in fp32 (the CUDA kernels load inputs and weights as float), outputs are cast back to
  the input dtype and laid out like ``torch.empty_like(x)`` (channel-last input -> channel-last output);
* ``seq_idx`` zeroes the taps that reach into another sub-sequence (1.5.0 semantics: positions before the
  start of the tensor count as sub-sequence ``-1``);
* ``causal_conv1d_update`` rewrites ``conv_state`` in place, as a shift register or, with
  ``cache_seqlens``, as a circular buffer; ``conv_state_indices`` gathers batch rows, negative = padding.

Memory-layout requirements of the CUDA kernel (channel-last strides, multiples of 8) are not checked:
they are properties of that implementation, not of the function, and fake tensors may carry other strides.
Every function also runs on meta and fake tensors (nnsight's ``scan``), where only shapes and dtypes flow.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = [
    "REFERENCES",
    "causal_conv1d_fn",
    "causal_conv1d_update",
    "causal_conv1d_fwd",
    "causal_conv1d_cuda_update",
]

_ACTIVATIONS = (None, "silu", "swish")
_FLOAT_TYPES = (torch.float32, torch.float16, torch.bfloat16)


def has_data(*tensors: Optional[torch.Tensor]) -> bool:
    """False when any tensor is meta or fake: data-dependent steps (indexing by values) must be skipped."""
    from torch._subclasses.fake_tensor import is_fake

    for t in tensors:
        if t is None:
            continue
        if t.device.type == "meta" or is_fake(t):
            return False
    return True


def _check(condition: bool, message: str) -> None:
    """Mirror of ``TORCH_CHECK``: the CUDA extension raises RuntimeError on a failed check."""
    if not condition:
        raise RuntimeError(message)


def _check_activation(activation: Optional[str]) -> bool:
    if activation not in _ACTIVATIONS:
        raise NotImplementedError("activation must be None, silu, or swish")
    return activation in ("silu", "swish")


def _check_width(width: int) -> None:
    _check(2 <= width <= 4, "causal_conv1d only supports width between 2 and 4")


def _conv_windows(
    x_padded: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], tap_mask: Optional[torch.Tensor]
) -> torch.Tensor:
    """out[b, d, t] = bias[d] + sum_k weight[d, k] * x_padded[b, d, t + k] (* tap_mask[b, t, k]), in fp32."""
    width = weight.shape[-1]
    windows = x_padded.float().unfold(-1, width, 1)  # (batch, dim, seqlen, width)
    products = windows * weight.float()[None, :, None, :]
    if tap_mask is not None:
        products = products * tap_mask[:, None, :, :]
    out = products.sum(-1)
    if bias is not None:
        out = out + bias.float()[None, :, None]
    return out


def _like(template: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` cast to the template's dtype, laid out like ``torch.empty_like(template)`` (as the kernel is)."""
    return torch.empty_like(template).copy_(values)


def causal_conv1d_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    seq_idx: Optional[torch.Tensor],
    initial_states: Optional[torch.Tensor],
    final_states_out: Optional[torch.Tensor],
    silu_activation: bool,
) -> torch.Tensor:
    """``causal_conv1d_cuda.causal_conv1d_fwd``: the extension entry point (positional arguments, writes
    ``final_states_out`` in place when given)."""
    _check(x.dtype in _FLOAT_TYPES, f"causal_conv1d_fwd not implemented for input type '{x.dtype}'")
    _check(weight.dtype in _FLOAT_TYPES, f"causal_conv1d_fwd not implemented for weight type '{weight.dtype}'")
    _check(x.dim() == 3, "x must have shape (batch_size, dim, seqlen)")
    batch, dim, seqlen = x.shape
    width = weight.shape[-1]
    _check(tuple(weight.shape) == (dim, width), "weight must have shape (dim, width)")
    _check_width(width)
    if bias is not None:
        _check(bias.dtype == weight.dtype, "bias must have the dtype of weight")
        _check(tuple(bias.shape) == (dim,), "bias must have shape (dim)")
    tap_mask = None
    if seq_idx is not None:
        _check(seq_idx.dtype == torch.int32, "seq_idx must be int32")
        _check(tuple(seq_idx.shape) == (batch, seqlen), "seq_idx must have shape (batch_size, seqlen)")
        # taps left of position 0 belong to sub-sequence -1, so they never match a real position
        seq_padded = F.pad(seq_idx.long(), (width - 1, 0), value=-1)
        seq_windows = seq_padded.unfold(-1, width, 1)  # (batch, seqlen, width)
        tap_mask = (seq_windows == seq_idx.long()[..., None]).float()
    if initial_states is not None:
        _check(initial_states.dtype == x.dtype, "initial_states must have the dtype of x")
        _check(
            tuple(initial_states.shape) == (batch, dim, width - 1),
            "initial_states must have shape (batch_size, dim, width - 1)",
        )
        x_padded = torch.cat([initial_states.float(), x.float()], dim=-1)
    else:
        x_padded = F.pad(x.float(), (width - 1, 0))
    out = _conv_windows(x_padded, weight, bias, tap_mask)
    if silu_activation:
        out = F.silu(out)
    if final_states_out is not None:
        _check(final_states_out.dtype == x.dtype, "final_states must have the dtype of x")
        _check(
            tuple(final_states_out.shape) == (batch, dim, width - 1),
            "final_states must have shape (batch_size, dim, width - 1)",
        )
        # the last width - 1 inputs, reaching into initial_states (or zeros) for short sequences
        final_states_out.copy_(x_padded[..., x_padded.shape[-1] - (width - 1) :])
    return _like(x, out)


def causal_conv1d_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    seq_idx: Optional[torch.Tensor] = None,
    initial_states: Optional[torch.Tensor] = None,
    return_final_states: bool = False,
    final_states_out: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """
    x: (batch, dim, seqlen)
    weight: (dim, width)
    bias: (dim,)
    seq_idx: (batch, seqlen)
    initial_states: (batch, dim, width - 1)
    final_states_out: (batch, dim, width - 1), to be written to
    activation: either None or "silu" or "swish"

    out: (batch, dim, seqlen); (out, final_states_out) when return_final_states
    """
    silu = _check_activation(activation)
    if seq_idx is not None:
        assert initial_states is None, "initial_states must be None if seq_idx is not None"
        assert not return_final_states, "If seq_idx is not None, we don't return final_states_out"
    if return_final_states:
        if final_states_out is None:
            batch, dim, _ = x.shape
            width = weight.shape[1]
            # channel-last, like the real interface allocates it
            final_states_out = torch.empty(batch, width - 1, dim, device=x.device, dtype=x.dtype).transpose(1, 2)
    else:
        final_states_out = None
    out = causal_conv1d_fwd(x, weight, bias, seq_idx, initial_states, final_states_out, silu)
    return out if not return_final_states else (out, final_states_out)


def causal_conv1d_cuda_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    silu_activation: bool,
    cache_seqlens: Optional[torch.Tensor],
    conv_state_indices: Optional[torch.Tensor],
) -> torch.Tensor:
    """``causal_conv1d_cuda.causal_conv1d_update``: x is (batch, dim, seqlen); ``conv_state`` is updated in place."""
    _check(x.dtype in _FLOAT_TYPES, f"causal_conv1d_update not implemented for input type '{x.dtype}'")
    _check(weight.dtype in _FLOAT_TYPES, f"causal_conv1d_update not implemented for weight type '{weight.dtype}'")
    _check(conv_state.dtype == x.dtype, "conv_state must have the dtype of x")
    _check(x.dim() == 3, "x must have shape (batch_size, dim, seqlen)")
    batch, dim, seqlen = x.shape
    width = weight.shape[-1]
    _check(conv_state.dim() == 3 and conv_state.shape[1] == dim, "conv_state must have shape (batch, dim, state_len)")
    state_len = conv_state.shape[2]
    _check(state_len >= width - 1, "conv_state must be at least width - 1 long")
    _check(tuple(weight.shape) == (dim, width), "weight must have shape (dim, width)")
    _check_width(width)
    if bias is not None:
        _check(bias.dtype == weight.dtype, "bias must have the dtype of weight")
        _check(tuple(bias.shape) == (dim,), "bias must have shape (dim)")
    if conv_state_indices is None:
        _check(conv_state.shape[0] == batch, "conv_state must have shape (batch_size, dim, state_len)")
        rows = conv_state
        valid = None
    else:
        _check(conv_state_indices.dtype == torch.int32, "conv_state_indices must be int32")
        _check(tuple(conv_state_indices.shape) == (batch,), "conv_state_indices must have shape (batch_size)")
        indices = conv_state_indices.long()
        valid = indices >= 0  # negative index = padding row: output 0, state untouched
        rows = conv_state.index_select(0, indices.clamp(min=0))

    if cache_seqlens is None:
        # shift register: the window reads the last width - 1 state entries, the state keeps the newest state_len
        full = torch.cat([rows, x], dim=-1)
        window = full[..., state_len - (width - 1) :]
        new_rows = full[..., full.shape[-1] - state_len :]
    else:
        _check(cache_seqlens.dtype == torch.int32, "cache_seqlens must be int32")
        _check(tuple(cache_seqlens.shape) == (batch,), "cache_seqlens must have shape (batch_size)")
        start = cache_seqlens.long() % state_len  # circular buffer: next write position
        offsets = torch.arange(-(width - 1), 0, device=x.device)
        read_at = (start[:, None] + offsets[None, :]) % state_len
        previous = rows.gather(2, read_at[:, None, :].expand(batch, dim, width - 1))
        window = torch.cat([previous, x], dim=-1)
        # writes go in order, so with seqlen > state_len only the last state_len inputs survive
        kept = min(seqlen, state_len)
        write_at = (start[:, None] + (seqlen - kept) + torch.arange(kept, device=x.device)[None, :]) % state_len
        new_rows = rows.clone().scatter_(2, write_at[:, None, :].expand(batch, dim, kept), x[..., seqlen - kept :])
    out = _conv_windows(window, weight, bias, None)
    if silu_activation:
        out = F.silu(out)

    if valid is None:
        conv_state.copy_(new_rows)
    else:
        out = torch.where(valid[:, None, None], out, torch.zeros_like(out))
        if has_data(conv_state, conv_state_indices):
            keep = valid.nonzero().flatten()
            conv_state[indices[keep]] = new_rows[keep]
        # meta/fake: nothing to write (no data); the shapes of conv_state are unchanged
    return _like(x, out)


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    cache_seqlens: Optional[torch.Tensor] = None,
    conv_state_indices: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """
    x: (batch, dim) or (batch, dim, seqlen)
    conv_state: (batch, dim, state_len), where state_len >= width - 1; updated in place
    weight: (dim, width)
    bias: (dim,)
    cache_seqlens: (batch,), dtype int32. If not None, conv_state is a circular buffer written from
        cache_seqlens % state_len.
    conv_state_indices: (batch,), dtype int32. If not None, conv_state is a larger tensor along the batch
        dim and row b uses conv_state[conv_state_indices[b]] (negative = padding, output 0).

    out: (batch, dim) or (batch, dim, seqlen)
    """
    silu = _check_activation(activation)
    unsqueeze = x.dim() == 2
    if unsqueeze:
        x = x.unsqueeze(-1)
    out = causal_conv1d_cuda_update(x, conv_state, weight, bias, silu, cache_seqlens, conv_state_indices)
    if unsqueeze:
        out = out.squeeze(-1)
    return out


#: symbol path as remote code imports it -> reference with the same signature and semantics.
REFERENCES: dict[str, Callable] = {
    "causal_conv1d.causal_conv1d_fn": causal_conv1d_fn,
    "causal_conv1d.causal_conv1d_update": causal_conv1d_update,
    "causal_conv1d.causal_conv1d_interface.causal_conv1d_fn": causal_conv1d_fn,
    "causal_conv1d.causal_conv1d_interface.causal_conv1d_update": causal_conv1d_update,
    "causal_conv1d_cuda.causal_conv1d_fwd": causal_conv1d_fwd,
    "causal_conv1d_cuda.causal_conv1d_update": causal_conv1d_cuda_update,
}
