"""Pure-PyTorch references for the ``mamba_ssm`` 2.2.4 (state-spaces/mamba) kernels, forward only.

Each function has the real one's call signature, defaults, argument checks (``assert`` where the real
Python wrapper asserts) and return structure, and computes what the Triton/CUDA kernel computes:

* the gated norms (``rmsnorm_fn``, ``layernorm_fn``): fp32 statistics per group of ``group_size``,
  z-gating before or after the norm, output in the dtype of ``x``;
* ``selective_state_update``: one decode step, the state updated in place (rows picked by
  ``state_batch_indices``, negative = padding), the output computed from the fp32 state;
* ``mamba_chunk_scan_combined`` / ``mamba_split_conv1d_scan_combined``: the SSD chunked scan, written
  chunk by chunk like the kernels (``dt`` softplus then clamped to ``dt_limit``, states passed between
  chunks, ``seq_idx`` resets, varlen states per ``cu_seqlens``), fp32 throughout;
* ``selective_scan_fn`` / ``mamba_inner_fn``: the Mamba-1 selective scan and its fused block.

They are the ground truth hybridload's Triton kernels are tested against, and what stand-ins run on
meta/fake tensors (nnsight's ``scan``): every function runs there too, with only shapes and dtypes flowing.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .causal_conv1d import causal_conv1d_fn, causal_conv1d_fwd, has_data

__all__ = [
    "REFERENCES",
    "layernorm_fn",
    "rmsnorm_fn",
    "selective_state_update",
    "mamba_chunk_scan_combined",
    "mamba_split_conv1d_scan_combined",
    "selective_scan_fn",
    "mamba_inner_fn",
]

_NO_DT_LIMIT = (0.0, float("inf"))


# --------------------------------------------------------------------------- gated norms (layernorm_gated.py)


def _gated_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    z: Optional[torch.Tensor],
    eps: float,
    group_size: Optional[int],
    norm_before_gate: bool,
    is_rms_norm: bool,
) -> torch.Tensor:
    """``LayerNormFn.forward``: norm over groups of the last dim, optional silu(z) gate, fp32 math."""
    x_shape = x.shape
    n = x_shape[-1]
    if z is not None:
        assert z.shape == x_shape
    if group_size is None:
        group_size = n
    assert n % group_size == 0
    assert weight.shape == (n,)
    if bias is not None:
        assert bias.shape == (n,)
    xf = x.float()
    zf = z.float() if z is not None else None
    if zf is not None and not norm_before_gate:
        xf = xf * F.silu(zf)
    groups = xf.reshape(*x_shape[:-1], n // group_size, group_size)
    if not is_rms_norm:
        groups = groups - groups.mean(dim=-1, keepdim=True)
    rstd = torch.rsqrt(groups.square().mean(dim=-1, keepdim=True) + eps)
    y = (groups * rstd).reshape(x_shape) * weight.float()
    if bias is not None:
        y = y + bias.float()
    if zf is not None and norm_before_gate:
        y = y * F.silu(zf)
    return y.to(x.dtype).contiguous()  # a fresh row-major output, like the kernel's


def layernorm_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    z: Optional[torch.Tensor] = None,
    eps: float = 1e-6,
    group_size: Optional[int] = None,
    norm_before_gate: bool = True,
    is_rms_norm: bool = False,
) -> torch.Tensor:
    """If z is not None: norm(x) * silu(z) if norm_before_gate, else norm(x * silu(z))."""
    return _gated_norm(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm)


def rmsnorm_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    z: Optional[torch.Tensor] = None,
    eps: float = 1e-6,
    group_size: Optional[int] = None,
    norm_before_gate: bool = True,
) -> torch.Tensor:
    """RMSNorm variant of :func:`layernorm_fn` (no mean subtraction)."""
    return _gated_norm(x, weight, bias, z, eps, group_size, norm_before_gate, True)


# --------------------------------------------------------------------------- decode step (selective_state_update.py)


def _expand_groups(t: torch.Tensor, nheads: int, dim: int) -> torch.Tensor:
    """(…, ngroups, …) -> (…, nheads, …): head h reads group h // (nheads // ngroups), as the kernels do."""
    return t.repeat_interleave(nheads // t.shape[dim], dim=dim)


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    dt_bias: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
    state_batch_indices: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """
    Argument:
        state: (batch, dim, dstate) or (batch, nheads, dim, dstate), updated in place
        x: (batch, dim) or (batch, nheads, dim)
        dt: (batch, dim) or (batch, nheads, dim)
        A: (dim, dstate) or (nheads, dim, dstate)
        B: (batch, dstate) or (batch, ngroups, dstate)
        C: (batch, dstate) or (batch, ngroups, dstate)
        D: (dim,) or (nheads, dim)
        z: (batch, dim) or (batch, nheads, dim)
        dt_bias: (dim,) or (nheads, dim)
        state_batch_indices: (batch,); row b updates state[state_batch_indices[b]] (negative = padding)
    Return:
        out: (batch, dim) or (batch, nheads, dim)
    """
    has_heads = state.dim() > 3
    if state.dim() == 3:
        state = state.unsqueeze(1)
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if dt.dim() == 2:
        dt = dt.unsqueeze(1)
    if A.dim() == 2:
        A = A.unsqueeze(0)
    if B.dim() == 2:
        B = B.unsqueeze(1)
    if C.dim() == 2:
        C = C.unsqueeze(1)
    if D is not None and D.dim() == 1:
        D = D.unsqueeze(0)
    if z is not None and z.dim() == 2:
        z = z.unsqueeze(1)
    if dt_bias is not None and dt_bias.dim() == 1:
        dt_bias = dt_bias.unsqueeze(0)
    _, nheads, dim, dstate = state.shape
    batch = x.shape[0]
    assert x.shape == (batch, nheads, dim)
    assert dt.shape == x.shape
    assert A.shape == (nheads, dim, dstate)
    ngroups = B.shape[1]
    assert nheads % ngroups == 0, "nheads must be divisible by ngroups"
    assert B.shape == (batch, ngroups, dstate)
    assert C.shape == B.shape
    if D is not None:
        assert D.shape == (nheads, dim)
    if z is not None:
        assert z.shape == x.shape
    if dt_bias is not None:
        assert dt_bias.shape == (nheads, dim)
    if state_batch_indices is not None:
        assert state_batch_indices.shape == (batch,)

    if state_batch_indices is None:
        rows = state
        valid = None
    else:
        indices = state_batch_indices.long()
        valid = indices >= 0
        rows = state.index_select(0, indices.clamp(min=0))

    dtf = dt.float()
    if dt_bias is not None:
        dtf = dtf + dt_bias.float()
    if dt_softplus:
        dtf = F.softplus(dtf)  # threshold 20, as the kernel's where(dt <= 20, softplus(dt), dt)
    dA = torch.exp(A.float() * dtf[..., None])  # (batch, nheads, dim, dstate)
    Bh = _expand_groups(B.float(), nheads, 1)  # (batch, nheads, dstate)
    Ch = _expand_groups(C.float(), nheads, 1)
    new_state = rows.float() * dA + Bh[:, :, None, :] * dtf[..., None] * x.float()[..., None]
    out = (new_state * Ch[:, :, None, :]).sum(-1)  # from the fp32 state, before it is stored
    if D is not None:
        out = out + x.float() * D.float()
    if z is not None:
        out = out * F.silu(z.float())

    if valid is None:
        state.copy_(new_state)
    else:
        out = torch.where(valid[:, None, None], out, torch.zeros_like(out))
        if has_data(state, state_batch_indices):
            keep = valid.nonzero().flatten()
            state[indices[keep]] = new_state[keep].to(state.dtype)
    out = torch.empty_like(x).copy_(out)  # laid out like x, as the kernel allocates it
    if not has_heads:
        out = out.squeeze(1)
    return out


# --------------------------------------------------------------------------- SSD chunked scan (ssd_combined.py)


class _ScanResult:
    """Everything the chunked scan produces, in fp32 (the kernels' intermediate precision)."""

    __slots__ = ("out", "out_x", "final_states", "chunk_states", "dt", "dA_cumsum")

    def __init__(self, out, out_x, final_states, chunk_states, dt, dA_cumsum) -> None:
        self.out = out  # (batch, seqlen, nheads, headdim), gated by z when z was given
        self.out_x = out_x  # before the z gate
        self.final_states = final_states  # (batch, nheads, headdim, dstate)
        self.chunk_states = chunk_states  # state entering each chunk: (batch, nchunks, nheads, headdim, dstate)
        self.dt = dt  # (batch, nheads, nchunks, chunk_size), processed (bias, softplus, clamp), 0 past seqlen
        self.dA_cumsum = dA_cumsum  # (batch, nheads, nchunks, chunk_size)


def _to_chunks(t: torch.Tensor, chunk_size: int, nchunks: int) -> torch.Tensor:
    """(batch, seqlen, ...) -> (batch, nchunks, chunk_size, ...), zero-padded at the end."""
    pad = nchunks * chunk_size - t.shape[1]
    if pad:
        t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, pad))
    return t.reshape(t.shape[0], nchunks, chunk_size, *t.shape[2:])


def _seq_idx_chunks(seq_idx: torch.Tensor, chunk_size: int, nchunks: int) -> torch.Tensor:
    """seq_idx in chunks, the tail padded with the last real value (so a chunk's last entry is its last token)."""
    pad = nchunks * chunk_size - seq_idx.shape[1]
    seq = seq_idx.long()
    if pad:
        seq = torch.cat([seq, seq[:, -1:].expand(-1, pad)], dim=1)
    return seq.reshape(seq.shape[0], nchunks, chunk_size)


def _ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: Optional[torch.Tensor],
    z: Optional[torch.Tensor],
    dt_bias: Optional[torch.Tensor],
    initial_states: Optional[torch.Tensor],
    seq_idx: Optional[torch.Tensor],
    dt_softplus: bool,
    dt_limit: Sequence[float],
) -> _ScanResult:
    """``_mamba_chunk_scan_combined_fwd``: chunk cumsum, chunk states, state passing, chunk scan."""
    batch, seqlen, nheads, headdim = x.shape
    _, _, ngroups, dstate = B.shape
    assert nheads % ngroups == 0
    assert B.shape == (batch, seqlen, ngroups, dstate)
    assert dt.shape == (batch, seqlen, nheads)
    assert A.shape == (nheads,)
    assert C.shape == B.shape
    if z is not None:
        assert z.shape == x.shape
    if D is not None:
        assert D.shape == (nheads, headdim) or D.shape == (nheads,)
    if seq_idx is not None:
        assert seq_idx.shape == (batch, seqlen)
    if dt_bias is not None:
        assert dt_bias.shape == (nheads,)
    if initial_states is not None:
        assert initial_states.shape == (batch, nheads, headdim, dstate)
    nchunks = math.ceil(seqlen / chunk_size)

    # 1. chunk cumsum: dt -> bias -> softplus -> clamp (always: the default (0, inf) clamps negatives to 0)
    dtf = dt.float()
    if dt_bias is not None:
        dtf = dtf + dt_bias.float()
    if dt_softplus:
        dtf = F.softplus(dtf)
    dtf = dtf.clamp(min=dt_limit[0], max=dt_limit[1])
    dt_c = _to_chunks(dtf, chunk_size, nchunks).permute(0, 3, 1, 2)  # (b, h, c, l); 0 past seqlen
    dA_cumsum = torch.cumsum(dt_c * A.float()[None, :, None, None], dim=-1)

    x_c = _to_chunks(x.float(), chunk_size, nchunks)  # (b, c, l, h, p)
    B_c = _expand_groups(_to_chunks(B.float(), chunk_size, nchunks), nheads, 3)  # (b, c, l, h, n)
    C_c = _expand_groups(_to_chunks(C.float(), chunk_size, nchunks), nheads, 3)
    seq_c = _seq_idx_chunks(seq_idx, chunk_size, nchunks) if seq_idx is not None else None  # (b, c, l)

    # 2. chunk states: what each chunk adds to the state at its last token
    decay_to_end = torch.exp(dA_cumsum[..., -1:] - dA_cumsum) * dt_c  # (b, h, c, l)
    if seq_c is not None:
        same_as_last = (seq_c == seq_c[..., -1:])[:, None]  # (b, 1, c, l)
        decay_to_end = decay_to_end * same_as_last
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B_c, decay_to_end, x_c)

    # 3. state passing: the state entering each chunk, and the final state
    state = (
        initial_states.float()
        if initial_states is not None
        else x.new_zeros((batch, nheads, headdim, dstate), dtype=torch.float32)
    )
    prev_seq = x.new_zeros((batch,), dtype=torch.long) if seq_c is not None else None  # kernel starts at 0
    entering = []
    for c in range(nchunks):
        entering.append(state)
        scale = torch.exp(dA_cumsum[:, :, c, -1])  # (b, h)
        if seq_c is not None:
            same = seq_c[:, c, -1] == prev_seq
            scale = scale * same[:, None]
            prev_seq = seq_c[:, c, -1]
        state = scale[..., None, None] * state + states[:, c]
    chunk_states = torch.stack(entering, dim=1)  # (b, c, h, p, n)

    # 4. chunk scan: contribution of the entering state + causal intra-chunk part + D skip
    decay_from_start = torch.exp(dA_cumsum)  # (b, h, c, l)
    if seq_c is not None:
        prev_end = torch.cat([seq_c.new_zeros((batch, 1)), seq_c[:, :-1, -1]], dim=1)  # (b, c)
        decay_from_start = decay_from_start * (seq_c == prev_end[..., None])[:, None]
    y = torch.einsum("bclhn,bchpn,bhcl->bclhp", C_c, chunk_states, decay_from_start)

    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    segment = dA_cumsum[..., :, None] - dA_cumsum[..., None, :]  # (b, h, c, l, s)
    decay = torch.exp(segment.masked_fill(~causal, float("-inf")))
    CB = torch.einsum("bclhn,bcshn->bchls", C_c, B_c)
    if seq_c is not None:
        CB = CB * (seq_c[..., :, None] == seq_c[..., None, :])[:, :, None]
    weights = CB * decay.permute(0, 2, 1, 3, 4) * dt_c.permute(0, 2, 1, 3)[..., None, :]  # (b, c, h, l, s)
    y = y + torch.einsum("bchls,bcshp->bclhp", weights, x_c)

    y = y.reshape(batch, nchunks * chunk_size, nheads, headdim)[:, :seqlen]
    if D is not None:
        Df = D.float() if D.dim() == 2 else D.float()[:, None]
        y = y + x.float() * Df
    out = y * F.silu(z.float()) if z is not None else y
    return _ScanResult(out, y, state.contiguous(), chunk_states, dt_c, dA_cumsum)


def _varlen_states(scan: _ScanResult, x, B, cu_seqlens, chunk_size: int, out_dtype: torch.dtype) -> torch.Tensor:
    """``chunk_state_varlen``: the state at the last token of each sequence in ``cu_seqlens`` (batch 1)."""
    _, _, nheads, headdim = x.shape
    dstate = B.shape[-1]
    nseq = cu_seqlens.shape[0] - 1
    if not has_data(cu_seqlens, x):
        return x.new_empty((nseq, nheads, headdim, dstate), dtype=out_dtype)
    x0 = x[0].float()
    B0 = _expand_groups(B[0].float(), nheads, 1)  # (seqlen, h, n)
    dt_flat = scan.dt[0].reshape(nheads, -1)  # (h, nchunks * chunk_size)
    dA_flat = scan.dA_cumsum[0].reshape(nheads, -1)
    bounds = [int(v) for v in cu_seqlens.tolist()]
    out = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        c = (end - 1) // chunk_size
        first = max(start, c * chunk_size)
        last_cs = dA_flat[:, end - 1]  # (h,)
        scale = torch.exp(last_cs[:, None] - dA_flat[:, first:end]) * dt_flat[:, first:end]  # (h, t)
        acc = torch.einsum("thp,thn,ht->hpn", x0[first:end], B0[first:end], scale)
        if start < c * chunk_size:  # the sequence began in an earlier chunk: carry the entering state
            acc = acc + scan.chunk_states[0, c] * torch.exp(last_cs)[:, None, None]
        out.append(acc)
    return torch.stack(out).to(out_dtype).contiguous()


def mamba_chunk_scan_combined(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    dt_bias: Optional[torch.Tensor] = None,
    initial_states: Optional[torch.Tensor] = None,
    seq_idx: Optional[torch.Tensor] = None,
    cu_seqlens: Optional[torch.Tensor] = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
    return_varlen_states: bool = False,
):
    """
    Argument:
        x: (batch, seqlen, nheads, headdim)
        dt: (batch, seqlen, nheads)
        A: (nheads)
        B: (batch, seqlen, ngroups, dstate)
        C: (batch, seqlen, ngroups, dstate)
        chunk_size: int
        D: (nheads, headdim) or (nheads,)
        z: (batch, seqlen, nheads, headdim)
        dt_bias: (nheads,)
        initial_states: (batch, nheads, headdim, dstate)
        seq_idx: (batch, seqlen)
        cu_seqlens: (num_sequences + 1) or None, only used if return_varlen_states is True
        dt_softplus: Whether to apply softplus to dt
    Return:
        out: (batch, seqlen, nheads, headdim); with return_final_states also final_states (fp32,
        (batch, nheads, headdim, dstate)); with return_varlen_states also varlen_states
        ((num_sequences, nheads, headdim, dstate), dtype of C), in the order (out, final_states, varlen_states).
    """
    if not return_varlen_states:
        cu_seqlens = None
    else:
        assert cu_seqlens is not None, "cu_seqlens must be provided if return_varlen_states is True"
    scan = _ssd_scan(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_limit)
    out = scan.out.to(x.dtype).contiguous()  # the kernels write fresh contiguous outputs
    if not return_varlen_states:
        return out if not return_final_states else (out, scan.final_states)
    assert x.shape[0] == 1, "passing cu_seqlens to get the varlen states is only supported if batch dimension is 1"
    varlen_states = _varlen_states(scan, x, B, cu_seqlens, chunk_size, C.dtype)
    return (out, varlen_states) if not return_final_states else (out, scan.final_states, varlen_states)


def _swiglu(xy: torch.Tensor) -> torch.Tensor:
    """``_swiglu_fwd``: x, y = xy.chunk(2); silu(x) * y in fp32, output in the input dtype."""
    a, b = xy.float().chunk(2, dim=-1)
    return (F.silu(a) * b).to(xy.dtype)


def _autocast_dtype() -> Optional[torch.dtype]:
    """The CUDA autocast dtype when CUDA autocast is on (the fused functions cast their matmul weights to it)."""
    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return None


def mamba_split_conv1d_scan_combined(
    zxbcdt: torch.Tensor,
    conv1d_weight: torch.Tensor,
    conv1d_bias: Optional[torch.Tensor],
    dt_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    chunk_size: int,
    initial_states: Optional[torch.Tensor] = None,
    seq_idx: Optional[torch.Tensor] = None,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
    activation: Optional[str] = "silu",
    rmsnorm_weight: Optional[torch.Tensor] = None,
    rmsnorm_eps: float = 1e-6,
    outproj_weight: Optional[torch.Tensor] = None,
    outproj_bias: Optional[torch.Tensor] = None,
    headdim: Optional[int] = None,
    ngroups: int = 1,
    norm_before_gate: bool = True,
):
    """
    Argument:
        zxbcdt: (batch, seqlen, 2 * dim + 2 * ngroups * dstate + nheads) where dim == nheads * headdim
        conv1d_weight: (dim + 2 * ngroups * dstate, width)
        conv1d_bias: (dim + 2 * ngroups * dstate,)
        dt_bias: (nheads,)
        A: (nheads)
        D: (nheads, headdim) or (nheads,)
        initial_states: (batch, nheads, headdim, dstate)
        seq_idx: (batch, seqlen), int32
        rmsnorm_weight: (dim,)
        outproj_weight: (out_dim, dim)
        outproj_bias: (out_dim,)
        headdim: if D is 1D, headdim must be passed in
        norm_before_gate: if True, we do RMSNorm(x) * F.silu(z). If False, we do RMSNorm(x * F.silu(z))
    Return:
        out: (batch, seqlen, dim) (or (batch, seqlen, out_dim) with outproj_weight); with
        return_final_states also the fp32 final states
    """
    assert activation in [None, "silu", "swish"]
    if D.dim() == 1:
        assert headdim is not None
        (nheads,) = D.shape
    else:
        nheads, headdim = D.shape
    batch, seqlen, _ = zxbcdt.shape
    dim = nheads * headdim
    assert nheads % ngroups == 0
    dstate = (conv1d_weight.shape[0] - dim) // ngroups // 2
    d_nonssm = (zxbcdt.shape[-1] - 2 * dim - 2 * ngroups * dstate - nheads) // 2
    assert d_nonssm >= 0
    assert zxbcdt.shape == (batch, seqlen, 2 * d_nonssm + 2 * dim + 2 * ngroups * dstate + nheads)
    assert dt_bias.shape == (nheads,)
    assert A.shape == (nheads,)
    zx0, z, xBC, dt = torch.split(zxbcdt, [2 * d_nonssm, dim, dim + ngroups * dstate * 2, nheads], dim=-1)
    xBC_conv = causal_conv1d_fwd(
        xBC.transpose(1, 2), conv1d_weight, conv1d_bias, seq_idx, None, None, activation in ["silu", "swish"]
    ).transpose(1, 2)
    x, B, C = torch.split(xBC_conv, [dim, ngroups * dstate, ngroups * dstate], dim=-1)
    x = x.reshape(batch, seqlen, nheads, headdim)
    B = B.reshape(batch, seqlen, ngroups, dstate)
    C = C.reshape(batch, seqlen, ngroups, dstate)
    z = z.reshape(batch, seqlen, nheads, headdim)
    if rmsnorm_weight is None:
        scan = _ssd_scan(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, True, dt_limit)
        out = scan.out.to(x.dtype).reshape(batch, seqlen, dim)
    else:
        assert rmsnorm_weight.shape == (dim,)
        scan = _ssd_scan(x, dt, A, B, C, chunk_size, D, None, dt_bias, initial_states, seq_idx, True, dt_limit)
        out_x = scan.out_x.to(x.dtype).reshape(batch, seqlen, dim)
        out = _gated_norm(
            out_x, rmsnorm_weight, None, z.reshape(batch, seqlen, dim), rmsnorm_eps, dim // ngroups,
            norm_before_gate, True,
        )
    if d_nonssm > 0:
        out = torch.cat([_swiglu(zx0), out], dim=-1)
    if outproj_weight is not None:
        dtype = _autocast_dtype()
        if dtype is not None:
            out, outproj_weight = out.to(dtype), outproj_weight.to(dtype)
            outproj_bias = outproj_bias.to(dtype) if outproj_bias is not None else None
        out = F.linear(out, outproj_weight, outproj_bias)
    else:
        assert outproj_bias is None
    out = out.contiguous()
    return out if not return_final_states else (out, scan.final_states)


# --------------------------------------------------------------------------- Mamba-1 scan (selective_scan_interface.py)


def _scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """``selective_scan_cuda.fwd`` semantics: returns (out, out_z or None, last_state)."""
    batch, dim, seqlen = u.shape
    dstate = A.shape[1]
    assert A.shape == (dim, dstate)
    is_variable_B = B.dim() >= 3
    is_variable_C = C.dim() >= 3
    uf = u.float()
    deltaf = delta.float()
    if delta_bias is not None:
        assert delta_bias.shape == (dim,)
        deltaf = deltaf + delta_bias.float()[:, None]
    if delta_softplus:
        deltaf = F.softplus(deltaf)

    def prepare(M: torch.Tensor, variable: bool) -> torch.Tensor:
        if not variable:
            return M if M.is_complex() else M.float()
        if M.dim() == 3:
            M = M.unsqueeze(1)  # (batch, 1, dstate, L)
        if A.is_complex():  # real (batch, G, N, 2L) read as complex pairs along L
            M = torch.view_as_complex(M.float().reshape(*M.shape[:-1], -1, 2).contiguous())
        else:
            M = M.float()
        return M.repeat_interleave(dim // M.shape[1], dim=1)  # (batch, dim, dstate, L)

    Bp = prepare(B, is_variable_B)
    Cp = prepare(C, is_variable_C)
    Af = A if A.is_complex() else A.float()
    deltaA = torch.exp(deltaf[..., None] * Af[None, :, None, :])  # (batch, dim, L, dstate)
    if is_variable_B:
        deltaB_u = (deltaf * uf)[..., None] * Bp.permute(0, 1, 3, 2)
    else:
        deltaB_u = (deltaf * uf)[..., None] * Bp[None, :, None, :]
    state = torch.zeros((batch, dim, dstate), dtype=deltaA.dtype, device=u.device)
    ys = []
    for i in range(seqlen):
        state = deltaA[:, :, i] * state + deltaB_u[:, :, i]
        c_i = Cp[..., i] if is_variable_C else Cp[None]
        y = (state * c_i).sum(-1)
        ys.append(y.real * 2 if y.is_complex() else y)
    y = torch.stack(ys, dim=2) if ys else uf.new_zeros((batch, dim, 0))
    out = y if D is None else y + uf * D.float()[:, None]
    out_z = out * F.silu(z.float()) if z is not None else None
    out_z = out_z.to(u.dtype).contiguous() if out_z is not None else None
    return out.to(u.dtype).contiguous(), out_z, state


def selective_scan_fn(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: Optional[torch.Tensor] = None,
    z: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """
    u: (batch, dim, seqlen); delta: (batch, dim, seqlen); A: (dim, dstate), real or complex
    B, C: (dim, dstate) constant, or (batch, dstate, seqlen) / (batch, ngroups, dstate, seqlen) variable
    (for complex A, variable B/C are real with 2 * seqlen: complex pairs); D: (dim,); z: (batch, dim, seqlen);
    delta_bias: (dim,)

    out: (batch, dim, seqlen), gated by silu(z) when z is given; with return_last_state also
    last_state (batch, dim, dstate) in the dtype of A (fp32 or complex64).
    """
    out, out_z, last_state = _scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    result = out if z is None else out_z
    return result if not return_last_state else (result, last_state)


def mamba_inner_fn(
    xz: torch.Tensor,
    conv1d_weight: torch.Tensor,
    conv1d_bias: Optional[torch.Tensor],
    x_proj_weight: torch.Tensor,
    delta_proj_weight: torch.Tensor,
    out_proj_weight: torch.Tensor,
    out_proj_bias: Optional[torch.Tensor],
    A: torch.Tensor,
    B: Optional[torch.Tensor] = None,
    C: Optional[torch.Tensor] = None,
    D: Optional[torch.Tensor] = None,
    delta_bias: Optional[torch.Tensor] = None,
    B_proj_bias: Optional[torch.Tensor] = None,
    C_proj_bias: Optional[torch.Tensor] = None,
    delta_softplus: bool = True,
    checkpoint_lvl: int = 1,
    b_rms_weight: Optional[torch.Tensor] = None,
    c_rms_weight: Optional[torch.Tensor] = None,
    dt_rms_weight: Optional[torch.Tensor] = None,
    b_c_dt_rms_eps: float = 1e-6,
) -> torch.Tensor:
    """``MambaInnerFn.forward``: conv1d + silu, x_proj, dt_proj, selective scan with z gate, out_proj.

    xz: (batch, 2 * dim, seqlen); conv1d_weight: (dim, 1, width). Returns (batch, seqlen, out_dim).
    ``checkpoint_lvl`` only changes what the backward recomputes; it does not change the output.
    """
    assert checkpoint_lvl in [0, 1]
    seqlen = xz.shape[-1]
    delta_rank = delta_proj_weight.shape[1]
    d_state = A.shape[-1] * (1 if not A.is_complex() else 2)
    dtype = _autocast_dtype()
    if dtype is not None:
        x_proj_weight = x_proj_weight.to(dtype=dtype)
        delta_proj_weight = delta_proj_weight.to(dtype=dtype)
        out_proj_weight = out_proj_weight.to(dtype=dtype)
        out_proj_bias = out_proj_bias.to(dtype=dtype) if out_proj_bias is not None else None
    weight = conv1d_weight.reshape(conv1d_weight.shape[0], conv1d_weight.shape[-1])  # "d 1 w -> d w"
    x, z = xz.chunk(2, dim=1)
    conv1d_out = causal_conv1d_fwd(x, weight, conv1d_bias, None, None, None, True)
    batch, dim, _ = conv1d_out.shape
    x_dbl = F.linear(conv1d_out.transpose(1, 2).reshape(batch * seqlen, dim), x_proj_weight)  # (b l, d)
    delta = (delta_proj_weight @ x_dbl[:, :delta_rank].t()).reshape(-1, batch, seqlen).permute(1, 0, 2)

    def variable(cols: torch.Tensor, proj_bias: Optional[torch.Tensor]) -> torch.Tensor:
        if proj_bias is not None:
            cols = cols + proj_bias.to(dtype=cols.dtype)
        if not A.is_complex():
            return cols.reshape(batch, seqlen, -1).permute(0, 2, 1).unsqueeze(1)  # (b, 1, dstate, l)
        pairs = cols.reshape(batch, seqlen, -1, 2)  # "(b l) (dstate two) -> b 1 dstate (l two)"
        return pairs.permute(0, 2, 1, 3).reshape(batch, 1, pairs.shape[2], seqlen * 2)

    if B is None:
        B = variable(x_dbl[:, delta_rank : delta_rank + d_state], B_proj_bias)
    if C is None:
        C = variable(x_dbl[:, -d_state:], C_proj_bias)

    def rms(t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # mamba_ssm.ops.triton.layer_norm rms forward
        return _gated_norm(t, w, None, None, b_c_dt_rms_eps, None, True, True)

    if b_rms_weight is not None:
        B = rms(B.squeeze(1).permute(0, 2, 1), b_rms_weight).permute(0, 2, 1).unsqueeze(1)
    if c_rms_weight is not None:
        C = rms(C.squeeze(1).permute(0, 2, 1), c_rms_weight).permute(0, 2, 1).unsqueeze(1)
    if dt_rms_weight is not None:
        delta = rms(delta.permute(0, 2, 1), dt_rms_weight).permute(0, 2, 1)
    _, out_z, _ = _scan_ref(conv1d_out, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return F.linear(out_z.transpose(1, 2), out_proj_weight, out_proj_bias)


#: symbol path as remote code imports it -> reference with the same signature and semantics.
REFERENCES: dict[str, Callable] = {
    "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn": rmsnorm_fn,
    "mamba_ssm.ops.triton.layernorm_gated.layernorm_fn": layernorm_fn,
    "mamba_ssm.ops.triton.selective_state_update.selective_state_update": selective_state_update,
    "mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined": mamba_chunk_scan_combined,
    "mamba_ssm.ops.triton.ssd_combined.mamba_split_conv1d_scan_combined": mamba_split_conv1d_scan_combined,
    "mamba_ssm.ops.selective_scan_interface.selective_scan_fn": selective_scan_fn,
    "mamba_ssm.ops.selective_scan_interface.mamba_inner_fn": mamba_inner_fn,
    "mamba_ssm.selective_scan_fn": selective_scan_fn,
    "mamba_ssm.mamba_inner_fn": mamba_inner_fn,
}
