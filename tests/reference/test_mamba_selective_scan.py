"""Mamba-1 selective scan and fused block of hybridload.reference.mamba_ssm against plain loops."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybridload.reference.mamba_ssm import mamba_inner_fn, selective_scan_fn

TOL = {torch.float32: 2e-4, torch.bfloat16: 3e-2}


def scan_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t ; y_t = <x_t, C_t> + D u_t, channel by channel (real A)."""
    batch, dim, seqlen = u.shape
    dstate = A.shape[1]
    out = torch.zeros(batch, dim, seqlen, dtype=torch.float64)
    last = torch.zeros(batch, dim, dstate, dtype=torch.float64)
    for b in range(batch):
        for d in range(dim):
            h = torch.zeros(dstate, dtype=torch.float64)
            for t in range(seqlen):
                step = float(delta[b, d, t]) + (float(delta_bias[d]) if delta_bias is not None else 0.0)
                if delta_softplus:
                    step = math.log1p(math.exp(step)) if step <= 20 else step
                if B.dim() == 2:
                    Bt = B[d]
                elif B.dim() == 3:
                    Bt = B[b, :, t]
                else:
                    Bt = B[b, d // (dim // B.shape[1]), :, t]
                if C.dim() == 2:
                    Ct = C[d]
                elif C.dim() == 3:
                    Ct = C[b, :, t]
                else:
                    Ct = C[b, d // (dim // C.shape[1]), :, t]
                h = torch.exp(step * A[d].double()) * h + step * Bt.double() * float(u[b, d, t])
                y = float((h * Ct.double()).sum())
                if D is not None:
                    y += float(D[d]) * float(u[b, d, t])
                if z is not None:
                    y *= float(F.silu(z[b, d, t].double()))
                out[b, d, t] = y
            last[b, d] = h
    return out, last


def close(actual, expected, dtype=torch.float32):
    tol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("layout", ["variable3d", "variable_groups", "constant"])
@pytest.mark.parametrize("with_extras", [False, True])
def test_selective_scan_matches_loop(layout, with_extras):
    torch.manual_seed(12)
    batch, dim, seqlen, dstate = 2, 6, 9, 4
    u, delta = torch.randn(batch, dim, seqlen), torch.randn(batch, dim, seqlen) * 0.5
    A = -torch.rand(dim, dstate) - 0.1
    shapes = {"variable3d": (batch, dstate, seqlen), "variable_groups": (batch, 3, dstate, seqlen), "constant": (dim, dstate)}
    B, C = torch.randn(*shapes[layout]), torch.randn(*shapes[layout])
    extras = dict(D=torch.randn(dim), z=torch.randn(batch, dim, seqlen), delta_bias=torch.randn(dim),
                  delta_softplus=True) if with_extras else {}
    out, last = selective_scan_fn(u, delta, A, B, C, return_last_state=True, **extras)
    expected, expected_last = scan_loop(u, delta, A, B, C, **extras)
    assert out.shape == u.shape and last.shape == (batch, dim, dstate) and last.dtype == torch.float32
    close(out, expected)
    close(last, expected_last)
    torch.testing.assert_close(selective_scan_fn(u, delta, A, B, C, **extras), out)


def test_selective_scan_bf16_io():
    torch.manual_seed(13)
    u, delta = torch.randn(1, 4, 7).bfloat16(), torch.rand(1, 4, 7).bfloat16()
    A, B, C = -torch.rand(4, 3) - 0.1, torch.randn(1, 3, 7).bfloat16(), torch.randn(1, 3, 7).bfloat16()
    z = torch.randn(1, 4, 7).bfloat16()
    out = selective_scan_fn(u, delta, A, B, C, D=torch.ones(4), z=z)
    assert out.dtype == torch.bfloat16
    expected, _ = scan_loop(u, delta, A, B, C, D=torch.ones(4), z=z)
    close(out, expected.bfloat16(), torch.bfloat16)


def test_selective_scan_complex_A():
    """Complex A (S4D-style): variable B/C hold complex pairs along L; the output is 2 * Re(y)."""
    torch.manual_seed(14)
    batch, dim, seqlen, dstate = 1, 2, 5, 3
    u, delta = torch.randn(batch, dim, seqlen), torch.rand(batch, dim, seqlen)
    A = torch.complex(-torch.rand(dim, dstate) - 0.1, torch.randn(dim, dstate))
    B, C = torch.randn(batch, dstate, 2 * seqlen), torch.randn(batch, dstate, 2 * seqlen)
    out, last = selective_scan_fn(u, delta, A, B, C, return_last_state=True)
    assert last.dtype == torch.complex64
    Bc, Cc = torch.complex(B[..., 0::2], B[..., 1::2]), torch.complex(C[..., 0::2], C[..., 1::2])
    expected = torch.zeros(batch, dim, seqlen)
    for d in range(dim):
        h = torch.zeros(dstate, dtype=torch.complex64)
        for t in range(seqlen):
            h = torch.exp(delta[0, d, t] * A[d]) * h + delta[0, d, t] * Bc[0, :, t] * u[0, d, t]
            expected[0, d, t] = 2 * (h * Cc[0, :, t]).sum().real
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def conv_loop(x, weight, bias):
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    out = torch.zeros(batch, dim, seqlen, dtype=torch.float64)
    for t in range(seqlen):
        acc = bias.double()[None].repeat(batch, 1)
        for k in range(width):
            src = t - (width - 1) + k
            if src >= 0:
                acc += weight[:, k].double() * x[:, :, src].double()
        out[:, :, t] = F.silu(acc)
    return out


@pytest.mark.parametrize("rms", [False, True])
def test_mamba_inner_matches_composition(rms):
    torch.manual_seed(15)
    batch, dim, seqlen, dstate, rank, out_dim = 2, 8, 7, 4, 3, 5
    xz = torch.randn(batch, 2 * dim, seqlen)
    conv_w, conv_b = torch.randn(dim, 1, 4) * 0.5, torch.randn(dim)
    x_proj = torch.randn(rank + 2 * dstate, dim) * 0.3
    dt_proj = torch.randn(dim, rank) * 0.3
    out_proj, out_bias = torch.randn(out_dim, dim), torch.randn(out_dim)
    A, D, delta_bias = -torch.rand(dim, dstate) - 0.1, torch.randn(dim), torch.randn(dim)
    b_bias = torch.randn(dstate)
    norms = dict(b_rms_weight=torch.randn(dstate), c_rms_weight=torch.randn(dstate), dt_rms_weight=torch.randn(dim)) if rms else {}
    out = mamba_inner_fn(xz, conv_w, conv_b, x_proj, dt_proj, out_proj, out_bias, A, D=D, delta_bias=delta_bias,
                         B_proj_bias=b_bias, **norms)

    def rms_rows(t, w, eps=1e-6):
        return t / torch.sqrt(t.square().mean(-1, keepdim=True) + eps) * w.double()

    x, z = xz.chunk(2, dim=1)
    conv = conv_loop(x, conv_w[:, 0], conv_b)  # (b, d, l)
    x_dbl = conv.transpose(1, 2) @ x_proj.double().T  # (b, l, rank + 2 dstate)
    delta = x_dbl[..., :rank] @ dt_proj.double().T  # (b, l, d)
    B = x_dbl[..., rank : rank + dstate] + b_bias.double()
    C = x_dbl[..., -dstate:]
    if rms:
        B, C, delta = rms_rows(B, norms["b_rms_weight"]), rms_rows(C, norms["c_rms_weight"]), rms_rows(delta, norms["dt_rms_weight"])
    y, _ = scan_loop(conv, delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=D, z=z,
                     delta_bias=delta_bias, delta_softplus=True)
    expected = y.transpose(1, 2) @ out_proj.double().T + out_bias.double()
    assert out.shape == (batch, seqlen, out_dim)
    close(out, expected)
