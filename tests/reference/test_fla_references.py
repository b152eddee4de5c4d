"""fla references (KDA, gate, short conv, norms) against straightforward loops on small CPU tensors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hybridload.reference import fla as ref



def _rand(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def _kda_inputs(B: int = 2, T: int = 13, H: int = 2, HV: int = 2, K: int = 4, V: int = 3, seed: int = 0) -> dict:
    return {
        "q": _rand(B, T, H, K, seed=seed),
        "k": F.normalize(_rand(B, T, H, K, seed=seed + 1), dim=-1),
        "v": _rand(B, T, HV, V, seed=seed + 2),
        "g": F.logsigmoid(_rand(B, T, HV, K, seed=seed + 3)) * 0.5,
        "beta": torch.rand(B, T, HV, generator=torch.Generator().manual_seed(seed + 4)),
    }


def loop_kda(q, k, v, g, beta, scale=None, h0=None):
    """The delta rule with per-channel decay, one scalar at a time in float64.

    S_t = diag(exp(g_t)) S_{t-1};  S_t += k_t (beta_t (v_t - S_t^T k_t))^T;  o_t = S_t^T (scale q_t).
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    scale = K**-0.5 if scale is None else scale
    out = torch.zeros(B, T, HV, V, dtype=torch.float64)
    finals = torch.zeros(B, HV, K, V, dtype=torch.float64)
    for b in range(B):
        for hv in range(HV):
            h = hv // (HV // H)
            S = [[0.0] * V for _ in range(K)] if h0 is None else h0[b, hv].double().tolist()
            for t in range(T):
                for i in range(K):
                    decay = math.exp(float(g[b, t, hv, i]))
                    S[i] = [s * decay for s in S[i]]
                kv = [sum(float(k[b, t, h, i]) * S[i][j] for i in range(K)) for j in range(V)]
                u = [float(beta[b, t, hv]) * (float(v[b, t, hv, j]) - kv[j]) for j in range(V)]
                for i in range(K):
                    S[i] = [S[i][j] + float(k[b, t, h, i]) * u[j] for j in range(V)]
                for j in range(V):
                    out[b, t, hv, j] = sum(scale * float(q[b, t, h, i]) * S[i][j] for i in range(K))
            finals[b, hv] = torch.tensor(S, dtype=torch.float64)
    return out, finals


@pytest.mark.parametrize("fn", [ref.chunk_kda, ref.fused_recurrent_kda], ids=["chunk", "recurrent"])
@pytest.mark.parametrize("heads", [(2, 2), (1, 3)], ids=["MHA", "GVA"])
def test_kda_matches_the_scalar_loop(fn, heads) -> None:
    x = _kda_inputs(H=heads[0], HV=heads[1])
    h0 = _rand(2, heads[1], 4, 3, seed=9, scale=0.3)
    out, final = fn(**x, initial_state=h0, output_final_state=True, scale=0.7)
    want_out, want_final = loop_kda(**x, scale=0.7, h0=h0)
    torch.testing.assert_close(out.double(), want_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final.double(), want_final, rtol=1e-5, atol=1e-5)
    assert final.dtype == torch.float32


def test_in_kernel_options_equal_doing_them_outside() -> None:
    x = _kda_inputs(T=9)
    raw_g, raw_beta = _rand(2, 9, 2, 4, seed=20), _rand(2, 9, 2, seed=21)
    A_log, dt_bias = _rand(2, seed=22, scale=0.5), _rand(8, seed=23)
    fused = ref.fused_recurrent_kda(
        x["q"], x["k"], x["v"], raw_g, raw_beta, A_log=A_log, dt_bias=dt_bias, use_gate_in_kernel=True,
        use_qk_l2norm_in_kernel=True, use_beta_sigmoid_in_kernel=True, allow_neg_eigval=True, output_final_state=True,
    )  # fmt: skip
    gate = torch.empty(2, 9, 2, 4)
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in gate.shape)).tolist():
        b, t, h, d = idx
        pre = float(raw_g[b, t, h, d]) + float(dt_bias[h * 4 + d])
        gate[b, t, h, d] = -math.exp(float(A_log[h])) * math.log1p(math.exp(pre))
    outside = ref.fused_recurrent_kda(
        F.normalize(x["q"], dim=-1, eps=0), F.normalize(x["k"], dim=-1, eps=0), x["v"], gate,
        2 * raw_beta.sigmoid(), output_final_state=True,
    )  # fmt: skip
    for got, want in zip(fused, outside):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_state_chaining_and_packed_sequences_equal_separate_calls() -> None:
    x = _kda_inputs(B=1, T=12)
    whole, final = ref.chunk_kda(**x, output_final_state=True)
    head = {k: v[:, :5] for k, v in x.items()}
    tail = {k: v[:, 5:] for k, v in x.items()}
    o1, s1 = ref.chunk_kda(**head, output_final_state=True)
    o2, s2 = ref.chunk_kda(**tail, initial_state=s1, output_final_state=True)
    torch.testing.assert_close(torch.cat([o1, o2], 1), whole)
    torch.testing.assert_close(s2, final)
    # the same 12 tokens as two packed sequences [0, 5) and [5, 12), each from its own initial state
    h0 = _rand(2, 2, 4, 3, seed=30)
    cu = torch.tensor([0, 5, 12])
    o, s = ref.fused_recurrent_kda(**x, initial_state=h0, output_final_state=True, cu_seqlens=cu)
    a, sa = ref.fused_recurrent_kda(**head, initial_state=h0[:1], output_final_state=True)
    b, sb = ref.fused_recurrent_kda(**tail, initial_state=h0[1:], output_final_state=True)
    torch.testing.assert_close(o, torch.cat([a, b], 1))
    torch.testing.assert_close(s, torch.cat([sa, sb]))


def test_state_v_first_transposes_initial_and_final_states() -> None:
    x = _kda_inputs()
    h0 = _rand(2, 2, 4, 3, seed=31)
    o1, s1 = ref.fused_recurrent_kda(**x, initial_state=h0, output_final_state=True)
    o2, s2 = ref.fused_recurrent_kda(**x, initial_state=h0.transpose(-1, -2), output_final_state=True, state_v_first=True)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(s1, s2.transpose(-1, -2))


def test_intermediate_states_are_the_states_at_chunk_starts() -> None:
    x = _kda_inputs(B=1, T=70)
    with torch.inference_mode():
        _, _, h = ref.chunk_kda(**x, return_intermediate_states=True, chunk_size=32)
    assert h.shape == (1, 3, 2, 4, 3)
    assert torch.count_nonzero(h[0, 0]) == 0
    for n, start in enumerate([32, 64]):
        _, prefix = ref.chunk_kda(**{k: v[:, :start] for k, v in x.items()}, output_final_state=True)
        torch.testing.assert_close(h[0, n + 1], prefix[0])


def test_output_dtypes_follow_the_kernels() -> None:
    x = {k: v.to(torch.bfloat16) for k, v in _kda_inputs().items()}
    x["v"] = x["v"].half()
    assert ref.chunk_kda(**x)[0].dtype == torch.bfloat16  # chunk: q's dtype
    assert ref.fused_recurrent_kda(**x)[0].dtype == torch.float16  # recurrent: v's dtype


def test_meta_inputs_give_the_shapes_and_dtypes_of_real_inputs() -> None:
    cpu = _kda_inputs(B=1, T=70, H=1, HV=2)
    meta = {k: v.to("meta") for k, v in cpu.items()}
    cu = torch.tensor([0, 30, 70])
    for fn, kwargs in [
        (ref.chunk_kda, {"output_final_state": True}),
        (ref.chunk_kda, {"output_final_state": True, "cu_seqlens": cu, "state_v_first": True}),
        (ref.fused_recurrent_kda, {"output_final_state": False}),
    ]:
        real = fn(**cpu, **kwargs)
        fake = fn(**meta, **{k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})
        for r, f in zip(real, fake):
            assert (r is None) == (f is None)
            if r is not None:
                assert f.is_meta and (f.shape, f.dtype) == (r.shape, r.dtype)


def test_bad_inputs_raise_the_kernels_errors() -> None:
    x = _kda_inputs()
    with pytest.raises(ValueError, match="g must have shape"):
        ref.chunk_kda(**{**x, "g": x["g"][..., :2]})
    with pytest.raises(ValueError, match="batch size is expected to be 1"):
        ref.chunk_kda(**x, cu_seqlens=torch.tensor([0, 4, 13]))
    with pytest.raises(ValueError, match="chunk_size"):
        ref.chunk_kda(**x, chunk_size=48)
    with pytest.raises(ValueError, match="allow_neg_eigval"):
        ref.fused_recurrent_kda(**x, allow_neg_eigval=True)


# ------------------------------------------------------------------------------------------------- gate


def test_fused_kda_gate_both_forms_elementwise() -> None:
    g, A_log, dt_bias = _rand(3, 2, 4, seed=40, scale=4.0), _rand(2, seed=41), _rand(8, seed=42)
    soft = ref.fused_kda_gate(g, A_log, dt_bias)
    bounded = ref.fused_kda_gate(g, A_log, dt_bias, lower_bound=-5.0, output_dtype=torch.bfloat16)
    assert soft.dtype == torch.float32 and bounded.dtype == torch.bfloat16
    for t in range(3):
        for h in range(2):
            for d in range(4):
                pre = float(g[t, h, d]) + float(dt_bias[h * 4 + d])
                a = math.exp(float(A_log[h]))
                assert float(soft[t, h, d]) == pytest.approx(-a * math.log1p(math.exp(pre)), rel=1e-5)
                assert float(bounded[t, h, d]) == pytest.approx(-5.0 / (1 + math.exp(-a * pre)), rel=1e-2)


def test_fused_kda_gate_legacy_api_of_kimi_linear() -> None:
    """``fused_kda_gate(g[..., H*D], A_log[1, 1, H, 1], head_dim, g_bias=...)`` as Kimi-Linear calls it."""
    g, A_log, bias = _rand(2, 5, 8, seed=43), _rand(1, 1, 2, 1, seed=44), _rand(8, seed=45)
    legacy = ref.fused_kda_gate(g, A_log, 4, g_bias=bias)
    new = ref.fused_kda_gate(g.view(2, 5, 2, 4), A_log.flatten(), bias)
    torch.testing.assert_close(legacy, new)
    gate, b = ref.fused_kda_gate(g, A_log, 4, g_bias=bias, b=_rand(2, 5, 2, seed=46))
    assert gate.shape == (2, 5, 2, 4) and b.shape == (2, 5, 2) and 0 < float(b.min()) and float(b.max()) < 1
    meta = ref.fused_kda_gate(g.to("meta"), A_log.to("meta"), 4, g_bias=bias.to("meta"))
    assert meta.shape == (2, 5, 2, 4) and meta.dtype == torch.float32


# ----------------------------------------------------------------------------------------------- conv


def loop_conv(x, weight, bias=None, h0=None, activation=None, residual=None):
    B, T, D = x.shape
    W = weight.shape[1]
    y = torch.zeros(B, T, D, dtype=torch.float64)
    for b in range(B):
        history = [[0.0] * W for _ in range(D)] if h0 is None else h0[b].double().tolist()
        for d in range(D):
            seq = history[d] + x[b, :, d].double().tolist()  # W history slots, then the T tokens
            for t in range(T):
                acc = sum(float(weight[d, w]) * seq[W + t - (W - 1) + w] for w in range(W))
                acc += float(bias[d]) if bias is not None else 0.0
                if activation == "silu":
                    acc = acc / (1 + math.exp(-acc))
                y[b, t, d] = acc + (float(residual[b, t, d]) if residual is not None else 0.0)
    return y


def test_causal_conv1d_matches_the_loop_with_history_bias_activation_residual() -> None:
    x, w, bias = _rand(2, 7, 3, seed=50), _rand(3, 4, seed=51), _rand(3, seed=52)
    h0, res = _rand(2, 3, 4, seed=53), _rand(2, 7, 3, seed=54)
    y, final = ref.causal_conv1d(x, w, bias, res, h0, output_final_state=True, activation="silu")
    torch.testing.assert_close(y.double(), loop_conv(x, w, bias, h0, "silu", res), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(final, x[:, -4:].transpose(1, 2))  # the last W inputs, newest last
    short, final_short = ref.causal_conv1d(x[:, :2], w, initial_state=h0, output_final_state=True)
    torch.testing.assert_close(final_short, torch.cat([h0[..., 2:], x[:, :2].transpose(1, 2)], -1))
    torch.testing.assert_close(short.double(), loop_conv(x[:, :2], w, h0=h0), rtol=1e-5, atol=1e-6)


def test_causal_conv1d_update_continues_the_sequence_and_shifts_the_cache_in_place() -> None:
    x, w, bias = _rand(2, 6, 3, seed=55), _rand(3, 4, seed=56), _rand(3, seed=57)
    full, _ = ref.causal_conv1d(x, w, bias, activation="silu")
    _, cache = ref.causal_conv1d(x[:, :5], w, bias, activation="silu", output_final_state=True)
    before = cache.clone()
    y, same = ref.causal_conv1d_update(x[:, 5:], cache, weight=w, bias=bias, activation="silu")
    assert same is cache and y.shape == (2, 1, 3)
    torch.testing.assert_close(y, full[:, 5:])
    torch.testing.assert_close(cache, torch.cat([before[..., 1:], x[:, 5:].transpose(1, 2)], -1))


def test_causal_conv1d_packed_sequences_equal_separate_calls() -> None:
    x, w = _rand(1, 9, 3, seed=58), _rand(3, 2, seed=59)
    y, final = ref.causal_conv1d(x, w, cu_seqlens=torch.tensor([0, 4, 9]), output_final_state=True)
    a, fa = ref.causal_conv1d(x[:, :4], w, output_final_state=True)
    b, fb = ref.causal_conv1d(x[:, 4:], w, output_final_state=True)
    torch.testing.assert_close(y, torch.cat([a, b], 1))
    torch.testing.assert_close(final, torch.cat([fa, fb]))


# ---------------------------------------------------------------------------------------------- norms


@pytest.mark.parametrize("activation", ["sigmoid", "swish"])
def test_rms_norm_gated_row_by_row(activation: str) -> None:
    x, g, w = _rand(3, 5, seed=60), _rand(3, 5, seed=61), _rand(5, seed=62)
    y = ref.rms_norm_gated(x, g, w, None, activation=activation, eps=1e-6)
    for r in range(3):
        rms = math.sqrt(sum(float(v) ** 2 for v in x[r]) / 5 + 1e-6)
        for c in range(5):
            z = float(g[r, c])
            gate = 1 / (1 + math.exp(-z)) * (z if activation == "swish" else 1.0)
            assert float(y[r, c]) == pytest.approx(float(x[r, c]) / rms * float(w[c]) * gate, rel=1e-5, abs=1e-6)


def test_norm_residual_and_prenorm_outputs() -> None:
    x = _rand(4, 6, seed=63).to(torch.bfloat16)
    res, w, b = _rand(4, 6, seed=64).to(torch.bfloat16), _rand(6, seed=65), _rand(6, seed=66)
    y, res_out = ref.layer_norm(x, w, b, residual=res, prenorm=True)
    h = x.float() + res.float()
    torch.testing.assert_close(y, F.layer_norm(h, (6,), w, b, 1e-5).to(torch.bfloat16))
    assert res_out.dtype == torch.bfloat16 and torch.equal(res_out, h.to(torch.bfloat16))
    y32, res32 = ref.rms_norm(x, w, None, prenorm=True, residual_in_fp32=True)
    assert y32.dtype == torch.bfloat16 and res32.dtype == torch.float32
    torch.testing.assert_close(y32, F.rms_norm(x.float(), (6,), w, 1e-5).to(torch.bfloat16))
    plain, same = ref.rms_norm(x, w, None, prenorm=True)
    assert same.data_ptr() == x.data_ptr()  # no residual, same dtype: the input itself is the residual
