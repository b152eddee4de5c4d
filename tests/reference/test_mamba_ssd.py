"""SSD scans of hybridload.reference.mamba_ssm against a token-by-token recurrence (the oracle)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybridload.reference.mamba_ssm import (
    mamba_chunk_scan_combined,
    mamba_split_conv1d_scan_combined,
    selective_state_update,
)

TOL = {torch.float32: 2e-4, torch.bfloat16: 3e-2}


def ssd_loop(x, dt, A, B, C, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
             dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T ; y_t = h_t C_t + D x_t ; y_t *= silu(z_t).

    The state restarts (from zero) where seq_idx changes; the initial state belongs to sequence 0.
    Returns (out, final_state, state_after_each_token), all float64.
    """
    batch, seqlen, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2:]
    out = torch.zeros(batch, seqlen, nheads, headdim, dtype=torch.float64)
    history = torch.zeros(batch, seqlen, nheads, headdim, dstate, dtype=torch.float64)
    finals = []
    for b in range(batch):
        h = initial_states[b].double().clone() if initial_states is not None else torch.zeros(nheads, headdim, dstate, dtype=torch.float64)
        previous = 0
        for t in range(seqlen):
            if seq_idx is not None:
                if int(seq_idx[b, t]) != previous:
                    h = torch.zeros_like(h)
                previous = int(seq_idx[b, t])
            for head in range(nheads):
                g = head // (nheads // ngroups)
                step = float(dt[b, t, head]) + (float(dt_bias[head]) if dt_bias is not None else 0.0)
                if dt_softplus:
                    step = math.log1p(math.exp(step)) if step <= 20 else step
                step = min(max(step, dt_limit[0]), dt_limit[1])
                h[head] = math.exp(step * float(A[head])) * h[head] + step * torch.outer(x[b, t, head].double(), B[b, t, g].double())
                y = h[head] @ C[b, t, g].double()
                if D is not None:
                    y = y + (D[head].double() if D.dim() == 2 else float(D[head])) * x[b, t, head].double()
                if z is not None:
                    y = y * F.silu(z[b, t, head].double())
                out[b, t, head] = y
            history[b, t] = h
        finals.append(h)
    return out, torch.stack(finals), history


def _inputs(batch=2, seqlen=23, nheads=4, headdim=3, ngroups=2, dstate=5, dtype=torch.float32, seed=10):
    torch.manual_seed(seed)
    return dict(
        x=torch.randn(batch, seqlen, nheads, headdim).to(dtype),
        dt=(torch.randn(batch, seqlen, nheads) * 0.5).to(dtype),
        A=-torch.rand(nheads) - 0.2,
        B=torch.randn(batch, seqlen, ngroups, dstate).to(dtype),
        C=torch.randn(batch, seqlen, ngroups, dstate).to(dtype),
    )


def close(actual, expected, dtype=torch.float32):
    tol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("chunk_size", [4, 8, 32])
@pytest.mark.parametrize("options", ["plain", "full"])
def test_chunk_scan_matches_recurrence(chunk_size, options):
    a = _inputs()
    kwargs = {}
    if options == "full":
        kwargs = dict(D=torch.randn(4, 3), z=torch.randn(2, 23, 4, 3), dt_bias=torch.randn(4), dt_softplus=True,
                      initial_states=torch.randn(2, 4, 3, 5))
    out, final = mamba_chunk_scan_combined(**a, chunk_size=chunk_size, return_final_states=True, **kwargs)
    expected, expected_final, _ = ssd_loop(**a, **kwargs)
    assert out.dtype == torch.float32 and out.shape == a["x"].shape
    assert final.dtype == torch.float32 and final.shape == (2, 4, 3, 5)
    close(out, expected)
    close(final, expected_final)


def test_default_dt_limit_clamps_negative_dt_to_zero():
    """The kernel clamps dt to dt_limit even by default: without softplus a negative dt acts as 0."""
    a = _inputs()
    a["dt"] = -a["dt"].abs()
    out = mamba_chunk_scan_combined(**a, chunk_size=8)
    expected, _, _ = ssd_loop(**a)
    close(out, expected)
    torch.testing.assert_close(out, torch.zeros_like(out))  # dt == 0 everywhere: no input enters the state


def test_outputs_are_contiguous_like_the_kernels_allocations():
    a = _inputs()
    out, final = mamba_chunk_scan_combined(**a, chunk_size=8, z=torch.randn(2, 23, 4, 3), return_final_states=True)
    assert out.is_contiguous() and final.is_contiguous()
    out.view(2, 23, -1)  # what Nemotron-H does with it


def test_dt_limit_and_1d_D():
    a = _inputs()
    kwargs = dict(D=torch.randn(4), dt_bias=torch.randn(4), dt_softplus=True, dt_limit=(0.05, 0.4))
    out = mamba_chunk_scan_combined(**a, chunk_size=8, **kwargs)
    expected, _, _ = ssd_loop(**a, **kwargs)
    close(out, expected)


def test_seq_idx_restarts_the_state():
    a = _inputs(seqlen=21)
    seq_idx = torch.tensor([[0] * 6 + [1] * 9 + [2] * 6, [0] * 3 + [1] * 18], dtype=torch.int32)
    initial = torch.randn(2, 4, 3, 5)
    kwargs = dict(D=torch.randn(4, 3), dt_bias=torch.randn(4), dt_softplus=True, initial_states=initial, seq_idx=seq_idx)
    out, final = mamba_chunk_scan_combined(**a, chunk_size=4, return_final_states=True, **kwargs)
    expected, expected_final, _ = ssd_loop(**a, **kwargs)
    close(out, expected)
    close(final, expected_final)
    # the second sequence of row 0 must not see the first: it equals a fresh scan of its own tokens
    alone = mamba_chunk_scan_combined(**{k: (v[:1, 6:15] if k != "A" else v) for k, v in a.items()}, chunk_size=4,
                                      D=kwargs["D"], dt_bias=kwargs["dt_bias"], dt_softplus=True)
    close(out[:1, 6:15], alone)


def test_varlen_states_are_each_sequence_last_state():
    a = _inputs(batch=1, seqlen=26)
    cu_seqlens = torch.tensor([0, 3, 12, 13, 26])
    seq_idx = torch.repeat_interleave(torch.arange(4, dtype=torch.int32), cu_seqlens.diff())[None]
    kwargs = dict(dt_bias=torch.randn(4), dt_softplus=True, seq_idx=seq_idx)
    out, final, varlen = mamba_chunk_scan_combined(**a, chunk_size=8, cu_seqlens=cu_seqlens, return_final_states=True,
                                                   return_varlen_states=True, **kwargs)
    expected, expected_final, history = ssd_loop(**a, **kwargs)
    assert varlen.shape == (4, 4, 3, 5)
    close(out, expected)
    close(final, expected_final)
    close(varlen, history[0, cu_seqlens[1:] - 1])
    out2, varlen2 = mamba_chunk_scan_combined(**a, chunk_size=8, cu_seqlens=cu_seqlens, return_varlen_states=True, **kwargs)
    torch.testing.assert_close(varlen2, varlen)
    with pytest.raises(AssertionError, match="cu_seqlens must be provided"):
        mamba_chunk_scan_combined(**a, chunk_size=8, return_varlen_states=True)


def test_bfloat16_inputs_compute_in_fp32():
    a = _inputs(dtype=torch.bfloat16)
    kwargs = dict(D=torch.randn(4), dt_bias=torch.randn(4), dt_softplus=True, z=torch.randn(2, 23, 4, 3).bfloat16())
    out, final = mamba_chunk_scan_combined(**a, chunk_size=8, return_final_states=True, **kwargs)
    assert out.dtype == torch.bfloat16 and final.dtype == torch.float32
    expected, expected_final, _ = ssd_loop(**a, **kwargs)
    close(out, expected.to(torch.bfloat16), torch.bfloat16)
    close(final, expected_final, torch.bfloat16)  # fp32 state from bf16 inputs


def test_prefill_then_decode_steps_equal_one_scan():
    """The final state of the chunked scan continues exactly through selective_state_update (Mamba2 decode)."""
    a = _inputs(seqlen=19)
    D, dt_bias = torch.randn(4), torch.randn(4)
    full = mamba_chunk_scan_combined(**a, chunk_size=8, D=D, dt_bias=dt_bias, dt_softplus=True)
    prefix = {k: (v[:, :16] if k != "A" else v) for k, v in a.items()}
    _, state = mamba_chunk_scan_combined(**prefix, chunk_size=8, D=D, dt_bias=dt_bias, dt_softplus=True,
                                         return_final_states=True)
    steps = []
    for t in range(16, 19):
        steps.append(selective_state_update(
            state, a["x"][:, t], a["dt"][:, t, :, None].expand(-1, -1, 3), a["A"][:, None, None].expand(4, 3, 5),
            a["B"][:, t], a["C"][:, t], D=D[:, None].expand(4, 3), dt_bias=dt_bias[:, None].expand(4, 3), dt_softplus=True,
        ))
    close(torch.stack(steps, dim=1), full[:, 16:])


def conv_loop(x, weight, bias, silu, seq_idx=None):
    """Depthwise causal conv, one position at a time (x: (b, d, l))."""
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    out = torch.zeros(batch, dim, seqlen, dtype=torch.float64)
    for b in range(batch):
        for t in range(seqlen):
            acc = bias.double().clone()
            for k in range(width):
                src = t - (width - 1) + k
                if src >= 0 and (seq_idx is None or seq_idx[b, src] == seq_idx[b, t]):
                    acc += weight[:, k].double() * x[b, :, src].double()
            out[b, :, t] = F.silu(acc) if silu else acc
    return out


def rms_gated_loop(x, z, weight, eps, group_size, norm_before_gate):
    out = torch.empty(x.shape, dtype=torch.float64)
    for idx in range(x.shape[0] * x.shape[1]):
        b, t = divmod(idx, x.shape[1])
        for start in range(0, x.shape[-1], group_size):
            cols = slice(start, start + group_size)
            v = x[b, t, cols].double()
            gate = F.silu(z[b, t, cols].double())
            if not norm_before_gate:
                v = v * gate
            y = v / math.sqrt(float((v * v).mean()) + eps) * weight[cols].double()
            out[b, t, cols] = y * gate if norm_before_gate else y
    return out


def split_oracle(zxbcdt, conv_w, conv_b, dt_bias, A, D, headdim, ngroups, dstate, rmsnorm_weight, norm_before_gate,
                 outproj_weight, outproj_bias, d_nonssm, seq_idx=None, eps=1e-6):
    batch, seqlen, _ = zxbcdt.shape
    nheads = D.shape[0]
    dim = nheads * headdim
    zx0, z, xBC, dt = torch.split(zxbcdt, [2 * d_nonssm, dim, dim + 2 * ngroups * dstate, nheads], dim=-1)
    xBC = conv_loop(xBC.transpose(1, 2), conv_w, conv_b, True, seq_idx).transpose(1, 2).float()
    x, B, C = torch.split(xBC, [dim, ngroups * dstate, ngroups * dstate], dim=-1)
    x = x.reshape(batch, seqlen, nheads, headdim)
    B, C = B.reshape(batch, seqlen, ngroups, dstate), C.reshape(batch, seqlen, ngroups, dstate)
    zh = z.reshape(batch, seqlen, nheads, headdim)
    if rmsnorm_weight is None:
        y, final, _ = ssd_loop(x, dt, A, B, C, D=D, z=zh, dt_bias=dt_bias, seq_idx=seq_idx, dt_softplus=True)
        y = y.reshape(batch, seqlen, dim)
    else:
        y, final, _ = ssd_loop(x, dt, A, B, C, D=D, dt_bias=dt_bias, seq_idx=seq_idx, dt_softplus=True)
        y = rms_gated_loop(y.reshape(batch, seqlen, dim), z, rmsnorm_weight, eps, dim // ngroups, norm_before_gate)
    if d_nonssm:
        u, v = zx0.double().chunk(2, dim=-1)
        y = torch.cat([F.silu(u) * v, y], dim=-1)
    if outproj_weight is not None:
        y = F.linear(y, outproj_weight.double(), outproj_bias.double() if outproj_bias is not None else None)
    return y, final


@pytest.mark.parametrize("norm", ["none", "before", "after"])
@pytest.mark.parametrize("extras", [False, True])
def test_split_conv1d_scan_matches_composition(norm, extras):
    torch.manual_seed(11)
    batch, seqlen, nheads, headdim, ngroups, dstate = 2, 13, 4, 3, 2, 4
    dim = nheads * headdim
    d_nonssm = 5 if extras else 0
    conv_dim = dim + 2 * ngroups * dstate
    zxbcdt = torch.randn(batch, seqlen, 2 * d_nonssm + 2 * dim + 2 * ngroups * dstate + nheads)
    conv_w, conv_b = torch.randn(conv_dim, 4) * 0.5, torch.randn(conv_dim)
    dt_bias, A = torch.randn(nheads), -torch.rand(nheads) - 0.2
    D = torch.randn(nheads) if extras else torch.randn(nheads, headdim)
    rms_w = None if norm == "none" else torch.randn(dim)
    out_w = torch.randn(7, d_nonssm + dim) if extras else None
    out_b = torch.randn(7) if extras else None
    seq_idx = torch.tensor([[0] * 6 + [1] * 7, [0] * 13], dtype=torch.int32) if extras else None
    out, final = mamba_split_conv1d_scan_combined(
        zxbcdt, conv_w, conv_b, dt_bias, A, D, chunk_size=4, seq_idx=seq_idx, return_final_states=True,
        rmsnorm_weight=rms_w, outproj_weight=out_w, outproj_bias=out_b, headdim=headdim, ngroups=ngroups,
        norm_before_gate=norm != "after",
    )
    expected, expected_final = split_oracle(zxbcdt, conv_w, conv_b, dt_bias, A, D, headdim, ngroups, dstate, rms_w,
                                            norm != "after", out_w, out_b, d_nonssm, seq_idx)
    assert out.shape == expected.shape
    close(out, expected)
    close(final, expected_final)


def test_split_conv1d_scan_argument_checks():
    with pytest.raises(AssertionError):  # 1-D D needs headdim
        mamba_split_conv1d_scan_combined(torch.randn(1, 4, 40), torch.randn(20, 4), None, torch.randn(4), torch.randn(4),
                                         torch.randn(4), chunk_size=4)
    with pytest.raises(AssertionError):
        mamba_split_conv1d_scan_combined(torch.randn(1, 4, 40), torch.randn(20, 4), None, torch.randn(4), torch.randn(4),
                                         torch.randn(4, 3), chunk_size=4, activation="relu")
