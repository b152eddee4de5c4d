"""Gated norms and the decode-step update of hybridload.reference.mamba_ssm against plain loops."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybridload.reference.mamba_ssm import layernorm_fn, rmsnorm_fn, selective_state_update

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def norm_loop(x, weight, bias, z, eps, group_size, norm_before_gate, is_rms_norm):
    """One row, one group at a time, in float64."""
    n = x.shape[-1]
    group_size = n if group_size is None else group_size
    rows = x.reshape(-1, n).double()
    gates = z.reshape(-1, n).double() if z is not None else None
    out = torch.empty_like(rows)
    for r in range(rows.shape[0]):
        for start in range(0, n, group_size):
            cols = slice(start, start + group_size)
            v = rows[r, cols]
            if gates is not None and not norm_before_gate:
                v = v * F.silu(gates[r, cols])
            if not is_rms_norm:
                v = v - v.mean()
            y = v / math.sqrt(float((v * v).mean()) + eps) * weight[cols].double()
            if bias is not None:
                y = y + bias[cols].double()
            if gates is not None and norm_before_gate:
                y = y * F.silu(gates[r, cols])
            out[r, cols] = y
    return out.reshape(x.shape)


def close(actual, expected, dtype):
    tol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected.to(dtype).double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("is_rms_norm", [True, False])
@pytest.mark.parametrize("gate", ["none", "before", "after"])
@pytest.mark.parametrize("group_size", [None, 8])
def test_gated_norms_match_loop(dtype, is_rms_norm, gate, group_size):
    torch.manual_seed(7)
    x = torch.randn(2, 3, 32).to(dtype)
    weight = (1 + 0.1 * torch.randn(32)).to(dtype)
    bias = None if is_rms_norm else (0.1 * torch.randn(32)).to(dtype)
    z = None if gate == "none" else torch.randn(2, 3, 32).to(dtype)
    norm_before_gate = gate != "after"
    if is_rms_norm:
        out = rmsnorm_fn(x, weight, bias, z=z, eps=1e-5, group_size=group_size, norm_before_gate=norm_before_gate)
    else:
        out = layernorm_fn(x, weight, bias, z=z, eps=1e-5, group_size=group_size, norm_before_gate=norm_before_gate)
    assert out.dtype == dtype and out.shape == x.shape
    close(out, norm_loop(x, weight, bias, z, 1e-5, group_size, norm_before_gate, is_rms_norm), dtype)


def test_rmsnorm_with_bias_and_layernorm_flag():
    torch.manual_seed(8)
    x, w, b = torch.randn(5, 16), torch.randn(16), torch.randn(16)
    close(rmsnorm_fn(x, w, b), norm_loop(x, w, b, None, 1e-6, None, True, True), torch.float32)
    torch.testing.assert_close(layernorm_fn(x, w, b, is_rms_norm=True), rmsnorm_fn(x, w, b))


def test_default_eps_is_the_kernels():
    x = torch.full((1, 4), 1e-3)
    out = rmsnorm_fn(x, torch.ones(4), None)
    expected = 1e-3 / math.sqrt(1e-6 + 1e-6)
    torch.testing.assert_close(out, torch.full((1, 4), expected))


def test_norm_argument_checks():
    with pytest.raises(AssertionError):
        rmsnorm_fn(torch.randn(2, 10), torch.ones(10), None, group_size=4)
    with pytest.raises(AssertionError):
        rmsnorm_fn(torch.randn(2, 10), torch.ones(10), None, z=torch.randn(2, 5))


def state_update_loop(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, indices=None):
    """Head by head, channel by channel, in float64. state: (b, h, p, n). Returns (out, new_state)."""
    state = state.clone()
    batch, nheads, dim, _ = state.shape if indices is None else (x.shape[0], *state.shape[1:])
    ngroups = B.shape[1]
    out = torch.zeros(batch, nheads, dim, dtype=torch.float64)
    for b in range(batch):
        row = b if indices is None else int(indices[b])
        if row < 0:
            continue
        for h in range(nheads):
            g = h // (nheads // ngroups)
            for p in range(dim):
                step = float(dt[b, h, p]) + (float(dt_bias[h, p]) if dt_bias is not None else 0.0)
                if dt_softplus:
                    step = math.log1p(math.exp(step)) if step <= 20 else step
                s = state[row, h, p].double() * torch.exp(A[h, p].double() * step)
                s = s + step * B[b, g].double() * float(x[b, h, p])
                y = float((s * C[b, g].double()).sum())
                if D is not None:
                    y += float(D[h, p]) * float(x[b, h, p])
                if z is not None:
                    y *= float(F.silu(z[b, h, p].double()))
                out[b, h, p] = y
                state[row, h, p] = s.to(state.dtype)
    return out, state


def _update_inputs(batch=3, nheads=4, dim=5, dstate=6, ngroups=2, dtype=torch.float32, seed=9):
    torch.manual_seed(seed)
    return dict(
        state=torch.randn(batch, nheads, dim, dstate).to(dtype),
        x=torch.randn(batch, nheads, dim).to(dtype),
        dt=torch.randn(batch, nheads, dim).to(dtype),
        A=-torch.rand(nheads, dim, dstate) - 0.1,
        B=torch.randn(batch, ngroups, dstate).to(dtype),
        C=torch.randn(batch, ngroups, dstate).to(dtype),
        D=torch.randn(nheads, dim),
        z=torch.randn(batch, nheads, dim).to(dtype),
        dt_bias=torch.randn(nheads, dim),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("use_optional", [True, False])
def test_state_update_matches_loop_and_writes_state(dtype, use_optional):
    a = _update_inputs(dtype=dtype)
    if not use_optional:
        a.update(D=None, z=None, dt_bias=None)
    expected, expected_state = state_update_loop(**a, dt_softplus=use_optional)
    state = a.pop("state")
    out = selective_state_update(state, **a, dt_softplus=use_optional)
    assert out.shape == a["x"].shape and out.dtype == dtype
    close(out, expected, dtype)
    tol = TOL[dtype]
    torch.testing.assert_close(state.double(), expected_state.double(), rtol=tol, atol=tol)


def test_state_update_without_heads():
    a = _update_inputs(nheads=1, ngroups=1)
    expected, expected_state = state_update_loop(**a, dt_softplus=True)
    squeezed = {k: (v.squeeze(1) if k in {"state", "x", "dt", "B", "C", "z"} else v.squeeze(0)) for k, v in a.items()}
    state = squeezed.pop("state")
    out = selective_state_update(state, **squeezed, dt_softplus=True)
    assert out.shape == (3, 5)
    close(out, expected[:, 0], torch.float32)
    torch.testing.assert_close(state, expected_state[:, 0])


def test_state_update_batch_indices_and_padding():
    a = _update_inputs(batch=3)
    pool = torch.randn(6, 4, 5, 6)
    indices = torch.tensor([4, -1, 1], dtype=torch.int32)
    a["state"] = pool
    expected, expected_state = state_update_loop(**a, dt_softplus=True, indices=indices)
    untouched = pool[[0, 2, 3, 5]].clone()
    state = a.pop("state")
    out = selective_state_update(state, **a, dt_softplus=True, state_batch_indices=indices)
    close(out, expected, torch.float32)
    assert torch.count_nonzero(out[1]) == 0
    torch.testing.assert_close(state, expected_state)
    torch.testing.assert_close(state[[0, 2, 3, 5]], untouched)


def test_state_update_tied_head_dim_broadcast_like_mamba2():
    """Mamba2 passes dt, A, dt_bias expanded over headdim (stride 0): same result as materialised copies."""
    a = _update_inputs()
    dt_h, A_h, bias_h = torch.randn(3, 4), -torch.rand(4) - 0.1, torch.randn(4)
    expanded = dict(a, dt=dt_h[..., None].expand(3, 4, 5), A=A_h[:, None, None].expand(4, 5, 6),
                    dt_bias=bias_h[:, None].expand(4, 5))
    materialised = {k: v.contiguous() for k, v in expanded.items()}
    s1, s2 = expanded.pop("state").clone(), materialised.pop("state").clone()
    torch.testing.assert_close(
        selective_state_update(s1, **expanded, dt_softplus=True),
        selective_state_update(s2, **materialised, dt_softplus=True),
    )
    torch.testing.assert_close(s1, s2)


def test_state_update_shape_checks():
    a = _update_inputs()
    state = a.pop("state")
    with pytest.raises(AssertionError):
        selective_state_update(state, **dict(a, B=torch.randn(3, 3, 6), C=torch.randn(3, 3, 6)))
    with pytest.raises(AssertionError):
        selective_state_update(state, **dict(a, dt=torch.randn(3, 4, 4)))


def test_state_update_output_comes_from_the_fp32_state_not_the_stored_one():
    """bf16 state, fp32 x: the new state 1 + 2**-10 rounds to 1.0 when stored, the output must not see that."""
    state = torch.zeros(1, 1, 1, 1, dtype=torch.bfloat16)
    x, dt = torch.ones(1, 1, 1), torch.ones(1, 1, 1)
    A = torch.zeros(1, 1, 1)
    B = torch.full((1, 1, 1), 1 + 2**-10)
    C = torch.full((1, 1, 1), 1024.0)
    out = selective_state_update(state, x, dt, A, B, C)
    assert out.dtype == torch.float32
    assert float(out) == 1025.0  # 1024 * (1 + 2**-10), not 1024 * 1.0
    assert float(state) == 1.0  # stored rounded, in the state's dtype


@pytest.mark.parametrize("fn", ["rmsnorm", "update"])
def test_outputs_are_fresh_like_the_kernels(fn):
    """Kernels write into freshly allocated outputs: row-major (norm) or laid out like x (state update)."""
    if fn == "rmsnorm":
        x = torch.randn(16, 3, 8).transpose(0, 1)  # non-contiguous input
        out = rmsnorm_fn(x, torch.ones(8), None)
        assert out.is_contiguous() and out.shape == x.shape
    else:
        a = _update_inputs()
        state = a.pop("state")
        out = selective_state_update(state, **a)
        assert out.is_contiguous() and out.data_ptr() != a["x"].data_ptr()
