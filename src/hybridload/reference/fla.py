"""Pure-PyTorch references for the fla (flash-linear-attention) kernels that real remote code calls.

Semantics follow fla-core 0.6.0 (the Triton kernels, not fla's own ``naive`` helpers, where the two differ):
same signatures and defaults, same output shapes and dtypes, same state layouts. They are written for
clarity (plain loops over time, float32 accumulation), not speed: they serve meta/fake-tensor builds and
``scan()``, CPU tests, and the GPU check that compares them with the real kernels
(``tests/data/goldens/fla_gpu_check.json``).

On data-free inputs (meta tensors, FakeTensors) every function takes a shape-only path that allocates the
outputs the loop would produce, without running the loop.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import KernelUnavailableError
from ._common import is_data_free, num_sequences, sequence_bounds

__all__ = [
    "causal_conv1d",
    "causal_conv1d_update",
    "chunk_kda",
    "fused_kda_gate",
    "fused_recurrent_kda",
    "layer_norm",
    "layer_norm_gated",
    "rms_norm",
    "rms_norm_gated",
]

_L2NORM_EPS = 1e-6


# ----------------------------------------------------------------------------------------------- KDA gate


def _kda_gate(
    g: torch.Tensor,
    A_log: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    lower_bound: float | None,
) -> torch.Tensor:
    """Log-space KDA decay for ``g`` of shape ``[..., H, K]``, in float32 (the kernels' ``b_gk``)."""
    heads, dim = g.shape[-2:]
    x = g.float()
    if dt_bias is not None:
        x = x + dt_bias.float().reshape(heads, dim)
    a = A_log.float().reshape(heads, 1) if A_log is not None else None
    if lower_bound is not None:
        return lower_bound * torch.sigmoid((a.exp() if a is not None else 1.0) * x)
    # without A_log the kernel loads A = 1.0, i.e. a decay factor of e
    return -(a.exp() if a is not None else math.e) * F.softplus(x)


def fused_kda_gate(
    g: torch.Tensor,
    A_log: torch.Tensor | None = None,
    dt_bias: Any = None,
    lower_bound: float | None = None,
    output_dtype: torch.dtype = torch.float32,
    *,
    head_k_dim: int | None = None,
    g_bias: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    beta: float = 1.0,
    threshold: float = 20.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``fla.ops.kda.gate.fused_kda_gate``, both APIs remote code uses.

    fla >= 0.5: ``fused_kda_gate(g[..., H, K], A_log, dt_bias=None, lower_bound=None, output_dtype=fp32)``
    computes ``-exp(A_log) * softplus(g + dt_bias)`` (or ``lower_bound * sigmoid(exp(A_log) * (g + dt_bias))``).

    fla 0.4 (Kimi-Linear's published modeling file): ``fused_kda_gate(g[..., H*K], A, head_k_dim,
    g_bias=None, b=None, beta=1.0, threshold=20.0)`` returns float32 ``[..., H, head_k_dim]``, plus
    ``sigmoid(b)`` when ``b`` is given. An integer third argument selects it.
    """
    if head_k_dim is None and isinstance(dt_bias, int) and not isinstance(dt_bias, bool):
        head_k_dim, dt_bias = dt_bias, None
    if head_k_dim is not None:
        return _legacy_kda_gate(g, A_log, head_k_dim, g_bias, b, beta, threshold)
    if g.dim() < 2:
        raise ValueError(f"fused_kda_gate expects g of shape [..., H, K], got {tuple(g.shape)}")
    if is_data_free(g):
        return torch.empty(g.shape, dtype=output_dtype, device=g.device)
    return _kda_gate(g, A_log, dt_bias, lower_bound).to(output_dtype)


def _legacy_kda_gate(
    g: torch.Tensor,
    A: torch.Tensor,
    head_k_dim: int,
    g_bias: torch.Tensor | None,
    b: torch.Tensor | None,
    beta: float,
    threshold: float,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    if g.shape[-1] % head_k_dim != 0:
        raise ValueError(f"g's last dim {g.shape[-1]} is not a multiple of head_k_dim={head_k_dim}")
    heads = g.shape[-1] // head_k_dim
    shape = (*g.shape[:-1], heads, head_k_dim)
    b_out = None
    if is_data_free(g):
        out = torch.empty(shape, dtype=torch.float32, device=g.device)
        if b is not None:
            b_out = torch.empty(b.shape, dtype=torch.float32, device=b.device)
    else:
        x = g.float()
        if g_bias is not None:
            x = x + g_bias.float()
        x = x.reshape(shape)
        out = -A.float().reshape(heads, 1).exp() * F.softplus(x, beta=beta, threshold=threshold)
        if b is not None:
            b_out = b.float().sigmoid()
    return (out, b_out) if b is not None else out


# ------------------------------------------------------------------------------------------ KDA recurrence


def _l2norm(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + _L2NORM_EPS)


def _kda_sequence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    chunk_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """One sequence. q, k: [T, HV, K] (scaled, normalised, float32); v: [T, HV, V]; gk: [T, HV, K] log decay;
    beta: [T, HV, 1] or [T, HV, V]; state: [HV, K, V]. Returns o [T, HV, V], final state, chunk-start states."""
    out = torch.empty_like(v)
    starts: list[torch.Tensor] = []
    for t in range(q.shape[0]):
        if chunk_size is not None and t % chunk_size == 0:
            starts.append(state.clone())
        state = state * gk[t].exp().unsqueeze(-1)
        delta = (v[t] - torch.einsum("hk,hkv->hv", k[t], state)) * beta[t]
        state = state + k[t].unsqueeze(-1) * delta.unsqueeze(-2)
        out[t] = torch.einsum("hk,hkv->hv", q[t], state)
    return out, state, starts


def _kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    *,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    use_qk_l2norm_in_kernel: bool,
    use_gate_in_kernel: bool,
    use_beta_sigmoid_in_kernel: bool,
    allow_neg_eigval: bool,
    A_log: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    lower_bound: float | None,
    state_v_first: bool,
    cu_seqlens: torch.Tensor | None,
    out_dtype: torch.dtype,
    l2norm_rounds_to_input: bool,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    batch, length, heads, dim_k = q.shape
    v_heads, dim_v = v.shape[2], v.shape[-1]
    n_seq = num_sequences(cu_seqlens, batch)
    state_shape = (n_seq, v_heads, dim_v, dim_k) if state_v_first else (n_seq, v_heads, dim_k, dim_v)
    if scale is None:
        scale = dim_k**-0.5

    if is_data_free(q, k, v, g, beta, initial_state, cu_seqlens):
        out = torch.empty((batch, length, v_heads, dim_v), dtype=out_dtype, device=q.device)
        final = torch.empty(state_shape, dtype=torch.float32, device=q.device) if output_final_state else None
        starts = None
        if chunk_size is not None:
            if cu_seqlens is not None:
                raise KernelUnavailableError(
                    "chunk_kda(return_intermediate_states=True) with packed sequences needs the sequence "
                    "lengths, which meta/fake cu_seqlens do not carry; pass real cu_seqlens"
                )
            n_chunks = -(-length // chunk_size)
            inner = (v_heads, dim_v, dim_k) if state_v_first else (v_heads, dim_k, dim_v)
            starts = torch.empty((batch, n_chunks, *inner), dtype=k.dtype, device=q.device)
        return out, final, starts

    group = v_heads // heads
    if use_qk_l2norm_in_kernel:
        # chunk_kda normalises in a separate kernel that writes the input dtype; the recurrent kernel
        # normalises in registers (float32)
        q = _l2norm(q).to(q.dtype) if l2norm_rounds_to_input else _l2norm(q)
        k = _l2norm(k).to(k.dtype) if l2norm_rounds_to_input else _l2norm(k)
    q = q.float().repeat_interleave(group, dim=2) * scale
    k = k.float().repeat_interleave(group, dim=2)
    gk = _kda_gate(g, A_log, dt_bias, lower_bound) if use_gate_in_kernel else g.float()
    beta = beta.float()
    if use_beta_sigmoid_in_kernel:
        beta = beta.sigmoid() * (2.0 if allow_neg_eigval else 1.0)
    if beta.dim() == v.dim() - 1:
        beta = beta.unsqueeze(-1)  # one beta per head; headwise betas are [B, T, HV, V]

    out = torch.empty((batch, length, v_heads, dim_v), dtype=torch.float32, device=q.device)
    finals: list[torch.Tensor] = []
    all_starts: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    for n, (b, bos, eos) in enumerate(sequence_bounds(cu_seqlens, batch, length)):
        if initial_state is not None:
            state = initial_state[n].float()
            state = state.transpose(-1, -2) if state_v_first else state.clone()
        else:
            state = torch.zeros((v_heads, dim_k, dim_v), dtype=torch.float32, device=q.device)
        seq = slice(bos, eos)
        o, state, starts = _kda_sequence(
            q[b, seq], k[b, seq], v[b, seq].float(), gk[b, seq], beta[b, seq], state, chunk_size
        )
        out[b, seq] = o
        finals.append(state.transpose(-1, -2) if state_v_first else state)
        all_starts[b].extend(s.transpose(-1, -2) if state_v_first else s for s in starts)

    final = torch.stack(finals) if output_final_state else None
    starts_out = None
    if chunk_size is not None:
        starts_out = torch.stack([torch.stack(s) for s in all_starts]).to(k.dtype)
    return out.to(out_dtype), final, starts_out


def _check_varlen(q: torch.Tensor, initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor | None) -> None:
    if cu_seqlens is None:
        return
    if q.shape[0] != 1:
        raise ValueError(
            f"The batch size is expected to be 1 rather than {q.shape[0]} when using `cu_seqlens`. "
            "Please flatten variable-length inputs before processing."
        )
    if initial_state is not None and initial_state.shape[0] != cu_seqlens.shape[0] - 1:
        raise ValueError(
            "The number of initial states is expected to be equal to the number of input sequences, "
            f"i.e., {cu_seqlens.shape[0] - 1} rather than {initial_state.shape[0]}."
        )


def chunk_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_gate_in_kernel: bool = False,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    safe_gate: bool = False,
    lower_bound: float | None = None,
    disable_recompute: bool = False,
    return_intermediate_states: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    cu_seqlens_cpu: torch.LongTensor | None = None,
    cp_context: Any = None,
    use_graph: bool = False,
    max_num_seqs: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """``fla.ops.kda.chunk_kda``: o ``[B, T, HV, V]`` in q's dtype, final state ``[N, HV, K, V]`` float32.

    The chunked kernel computes the same recurrence as :func:`fused_recurrent_kda`; ``safe_gate``,
    ``disable_recompute``, ``use_graph`` only change how it is computed. With ``return_intermediate_states``
    the third output holds the state at the start of every chunk (``[B, NT, HV, K, V]``, k's dtype).
    """
    if "transpose_state_layout" in kwargs:
        if state_v_first:
            raise ValueError("Cannot pass both `state_v_first` and the deprecated `transpose_state_layout`.")
        state_v_first = bool(kwargs.pop("transpose_state_layout"))
    if cp_context is not None:
        raise KernelUnavailableError(
            "chunk_kda with cp_context (context parallelism) needs the real fla kernels and a process group; "
            "the pure-torch reference covers single-device calls only"
        )
    _check_varlen(q, initial_state, cu_seqlens)
    A_log = dt_bias = None
    if use_gate_in_kernel:
        A_log, dt_bias = kwargs.get("A_log"), kwargs.get("dt_bias")
        if A_log is None and lower_bound is None:
            raise ValueError("`A_log` must be provided when `use_gate_in_kernel=True` and `lower_bound` is not set.")
    chunk_size = kwargs.pop("chunk_size", 64)
    if chunk_size not in (32, 64):
        raise ValueError(f"`chunk_size` must be either 32 or 64 for KDA, got {chunk_size}.")
    if safe_gate and use_gate_in_kernel:
        if lower_bound is None:
            raise ValueError("`lower_bound` must be specified when `safe_gate=True` and `use_gate_in_kernel=True`.")
        if not -5 <= lower_bound < 0:
            raise ValueError(f"`lower_bound` must be in the safe range [-5, 0), got {lower_bound}.")
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise ValueError("`allow_neg_eigval=True` requires `use_beta_sigmoid_in_kernel=True`.")
    batch, length, heads, dim_k = q.shape
    v_heads = v.shape[2]
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got q={tuple(q.shape)} vs k={tuple(k.shape)}")
    if dim_k > 256:
        raise ValueError(f"Currently we only support key headdim <=256 for KDA, got {dim_k}.")
    if v_heads % heads != 0:
        raise ValueError(f"For GVA, num_v_heads (HV={v_heads}) must be evenly divisible by num_qk_heads (H={heads})")
    if tuple(g.shape) != (batch, length, v_heads, dim_k):
        raise ValueError(f"g must have shape [B, T, HV, K]={[batch, length, v_heads, dim_k]}, got {list(g.shape)}")
    if tuple(beta.shape) != (batch, length, v_heads):
        raise ValueError(f"beta must have shape [B, T, HV]={[batch, length, v_heads]}, got {list(beta.shape)}")
    if return_intermediate_states:
        if not torch.is_inference_mode_enabled():
            raise RuntimeError("return_intermediate_states is only allowed in inference mode")
        if disable_recompute:
            raise ValueError("return_intermediate_states must be used with disable_recompute=False")

    out, final, starts = _kda(
        q, k, v, g, beta,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        use_gate_in_kernel=use_gate_in_kernel,
        use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
        allow_neg_eigval=allow_neg_eigval,
        A_log=A_log,
        dt_bias=dt_bias,
        lower_bound=lower_bound,
        state_v_first=state_v_first,
        cu_seqlens=cu_seqlens,
        out_dtype=q.dtype,
        l2norm_rounds_to_input=True,
        chunk_size=chunk_size if return_intermediate_states else None,
    )  # fmt: skip
    if return_intermediate_states:
        return out, final, starts
    return out, final


def fused_recurrent_kda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_gate_in_kernel: bool = False,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    lower_bound: float | None = None,
    state_v_first: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``fla.ops.kda.fused_recurrent_kda``: o ``[B, T, HV, V]`` in v's dtype, final state float32."""
    if "transpose_state_layout" in kwargs:
        if state_v_first:
            raise ValueError("Cannot pass both `state_v_first` and the deprecated `transpose_state_layout`.")
        state_v_first = bool(kwargs.pop("transpose_state_layout"))
    _check_varlen(q, initial_state, cu_seqlens)
    if allow_neg_eigval and not use_beta_sigmoid_in_kernel:
        raise ValueError("`allow_neg_eigval=True` requires `use_beta_sigmoid_in_kernel=True`.")
    out, final, _ = _kda(
        q, k, v, g, beta,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        use_gate_in_kernel=use_gate_in_kernel,
        use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
        allow_neg_eigval=allow_neg_eigval,
        A_log=A_log,
        dt_bias=dt_bias,
        lower_bound=lower_bound,
        state_v_first=state_v_first,
        cu_seqlens=cu_seqlens,
        out_dtype=v.dtype,
        l2norm_rounds_to_input=False,
    )  # fmt: skip
    return out, final


# ------------------------------------------------------------------------------------ short convolution


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    return F.silu(y) if activation in ("silu", "swish") else y


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool | None = False,
    activation: str | None = None,
    backend: str | None = "triton",
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.LongTensor | None = None,
    chunk_indices: torch.LongTensor | None = None,
    cp_context: Any = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fla's depthwise causal conv (``fla.modules.causal_conv1d``): ``y = act(conv(x) + bias) + residual``.

    ``weight`` is ``[D, W]``; ``initial_state``/final state are ``[N, D, W]`` caches whose last slot is the
    most recent token (slot ``w`` of the final state holds token ``T - W + w``).
    """
    if cp_context is not None:
        raise KernelUnavailableError(
            "causal_conv1d with cp_context (context parallelism) needs the real fla kernels and a process group"
        )
    if weight is None:
        raise ValueError("the reference causal_conv1d needs the [D, W] weight (the kernel reads W from it)")
    shape = x.shape
    dim, width = weight.shape
    if x.shape[-1] != dim:
        x = x.reshape(x.shape[0], x.shape[1], -1)
    batch, length, _ = x.shape
    n_seq = num_sequences(cu_seqlens, batch)
    if is_data_free(x, weight, initial_state, cu_seqlens, residual):
        final = torch.empty((n_seq, dim, width), dtype=x.dtype, device=x.device) if output_final_state else None
        return torch.empty(shape, dtype=x.dtype, device=x.device), final

    w = weight.float()
    y = torch.empty((batch, length, dim), dtype=torch.float32, device=x.device)
    finals = []
    for n, (b, bos, eos) in enumerate(sequence_bounds(cu_seqlens, batch, length)):
        history = (
            initial_state[n].float()
            if initial_state is not None
            else torch.zeros((dim, width), dtype=torch.float32, device=x.device)
        )
        window = torch.cat([history, x[b, bos:eos].float().t()], dim=-1)  # [D, W + L]
        # output t sees the W most recent inputs up to and including t: window[:, t + 1 : t + 1 + W]
        taps = window[:, 1:].unfold(-1, width, 1)  # [D, L, W]
        out = (taps * w.unsqueeze(1)).sum(-1)
        if bias is not None:
            out = out + bias.float().unsqueeze(-1)
        out = _activate(out, activation).t()
        if residual is not None:
            out = out + residual.reshape(batch, length, dim)[b, bos:eos].float()
        y[b, bos:eos] = out
        finals.append(window[:, -width:])
    final = torch.stack(finals).to(x.dtype) if output_final_state else None
    return y.to(x.dtype).view(shape), final


def causal_conv1d_update(
    x: torch.Tensor,
    cache: torch.Tensor,
    residual: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoding step of fla's short conv: shifts ``cache`` ([N, D, W]) left *in place*, appends ``x``."""
    if weight is None:
        raise ValueError("the reference causal_conv1d_update needs the [D, W] weight")
    shape = x.shape
    dim, width = weight.shape
    if x.shape[-1] != dim:
        x = x.reshape(x.shape[0], x.shape[1], -1)
    tokens = x.reshape(-1, dim)
    if is_data_free(x, cache, weight):
        return torch.empty(shape, dtype=x.dtype, device=x.device), cache
    if cache is not None:
        window = torch.cat([cache[:, :, 1:].float(), tokens.float().unsqueeze(-1)], dim=-1)
    else:  # the kernel reads no state and inserts nothing: only the bias survives
        window = torch.zeros((tokens.shape[0], dim, width), dtype=torch.float32, device=x.device)
    y = (window * weight.float()).sum(-1)
    if bias is not None:
        y = y + bias.float()
    y = _activate(y, activation)
    if residual is not None:
        y = y + residual.reshape(-1, dim).float()
    if cache is not None:
        cache.copy_(window.to(cache.dtype))
    return y.to(x.dtype).view(shape), cache


# ------------------------------------------------------------------------------------------------ norms


def _norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    *,
    residual: torch.Tensor | None,
    eps: float,
    prenorm: bool,
    residual_in_fp32: bool,
    is_rms_norm: bool,
    gate: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """fla's (gated) layer/RMS norm: normalise ``x + residual`` over the last dim, optionally gate the output."""
    shape = x.shape
    rows = x.reshape(-1, shape[-1])
    residual_dtype = residual.dtype if residual is not None else (torch.float32 if residual_in_fp32 else None)
    if residual is not None and tuple(residual.shape) != tuple(shape):
        raise ValueError(f"residual must have x's shape {tuple(shape)}, got {tuple(residual.shape)}")
    if is_data_free(x, weight, bias, residual, gate):
        y = torch.empty(shape, dtype=x.dtype, device=x.device)
        if not prenorm:
            return y
        res_dtype = residual_dtype if residual_dtype is not None else x.dtype
        return y, torch.empty(shape, dtype=res_dtype, device=x.device)
    h = rows.float()
    if residual is not None:
        h = h + residual.reshape(rows.shape).float()
    if residual is not None or (residual_dtype is not None and residual_dtype != x.dtype):
        residual_out = h.to(residual_dtype)
    else:
        residual_out = rows
    if is_rms_norm:
        normed = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + eps)
    else:
        centred = h - h.mean(-1, keepdim=True)
        normed = centred * torch.rsqrt(centred.square().mean(-1, keepdim=True) + eps)
    y = normed * weight.float() if weight is not None else normed
    if bias is not None:
        y = y + bias.float()
    if gate is not None:
        z = gate.reshape(rows.shape).float()
        if activation in ("swish", "silu"):
            y = y * z * torch.sigmoid(z)
        elif activation == "sigmoid":
            y = y * torch.sigmoid(z)
    y = y.to(x.dtype).reshape(shape)
    return y if not prenorm else (y, residual_out.reshape(shape))


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    is_rms_norm: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``fla.modules.norm.layernorm.layer_norm``."""
    return _norm(
        x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, residual_in_fp32=residual_in_fp32,
        is_rms_norm=is_rms_norm,
    )  # fmt: skip


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None = None,
    eps: float = 1e-5,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``fla.modules.norm.layernorm.rms_norm``."""
    return _norm(
        x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, residual_in_fp32=residual_in_fp32,
        is_rms_norm=True,
    )  # fmt: skip


def layer_norm_gated(
    x: torch.Tensor,
    g: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    activation: str = "swish",
    residual: torch.Tensor | None = None,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``fla.modules.norm.fused_norm_gate.layer_norm_gated``: ``LayerNorm(x + residual) * act(g)``."""
    return _norm(
        x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, residual_in_fp32=residual_in_fp32,
        is_rms_norm=False, gate=g, activation=activation,
    )  # fmt: skip


def rms_norm_gated(
    x: torch.Tensor,
    g: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    activation: str = "swish",
    residual: torch.Tensor | None = None,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``fla.modules.norm.fused_norm_gate.rms_norm_gated``: ``RMSNorm(x + residual) * act(g)``."""
    return _norm(
        x, weight, bias, residual=residual, eps=eps, prenorm=prenorm, residual_in_fp32=residual_in_fp32,
        is_rms_norm=True, gate=g, activation=activation,
    )  # fmt: skip
