"""Twin forwards: the real modules' semantics and return structure, checked on small CPU tensors."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from hybridload.twins import DEFAULT_TWINS


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return module


# --------------------------------------------------------------------------------------------------- fla


def test_short_convolution_equals_its_own_conv1d_then_silu() -> None:
    conv = _randomise(DEFAULT_TWINS["fla.modules.ShortConvolution"](8, 4, bias=True), seed=1)
    x = _rand(2, 6, 8, seed=2)
    y, cache = conv(x)
    # as an nn.Conv1d with padding W-1, the first T outputs are the causal convolution
    want = F.silu(torch.nn.Conv1d.forward(conv, x.transpose(1, 2))[..., :6].transpose(1, 2))
    torch.testing.assert_close(y, want)
    assert cache is None


def test_short_convolution_decoding_token_by_token_equals_the_full_forward() -> None:
    conv = _randomise(DEFAULT_TWINS["fla.modules.ShortConvolution"](hidden_size=6, kernel_size=3), seed=3)
    x = _rand(2, 7, 6, seed=4)
    full, final = conv(x, output_final_state=True)
    _, cache = conv(x[:, :3], output_final_state=True)
    with torch.no_grad():
        steps = []
        for t in range(3, 7):
            y, returned = conv(x[:, t : t + 1], cache=cache, output_final_state=True)
            assert returned is cache  # the decoding step updates the cache in place
            steps.append(y)
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 3:])
    torch.testing.assert_close(cache, final)
    assert conv.state_size == 18


def test_short_convolution_mask_zeroes_padded_inputs() -> None:
    conv = _randomise(DEFAULT_TWINS["fla.modules.ShortConvolution"](4, 2, activation=None), seed=5)
    x, mask = _rand(1, 5, 4, seed=6), torch.tensor([[0, 0, 1, 1, 1]])
    y, _ = conv(x.clone(), mask=mask)
    want, _ = conv(x * mask.unsqueeze(-1))
    torch.testing.assert_close(y, want)


def test_fused_rms_norm_gated_and_rms_norm_formulas() -> None:
    gated = _randomise(DEFAULT_TWINS["fla.modules.FusedRMSNormGated"](5, activation="sigmoid", eps=1e-6), seed=7)
    x, g = _rand(2, 3, 5, seed=8), _rand(2, 3, 5, seed=9)
    torch.testing.assert_close(gated(x, g), F.rms_norm(x, (5,), gated.weight, 1e-6) * g.sigmoid())
    swish = DEFAULT_TWINS["fla.modules.FusedRMSNormSwishGate"](5)
    torch.testing.assert_close(swish(x, g), F.rms_norm(x, (5,), None, 1e-5) * F.silu(g))
    norm = _randomise(DEFAULT_TWINS["fla.modules.RMSNorm"](5, bias=True), seed=10)
    res = _rand(2, 3, 5, seed=11)
    y, res_out = norm(x, residual=res, prenorm=True)
    torch.testing.assert_close(y, F.rms_norm(x + res, (5,), norm.weight, 1e-5) + norm.bias)
    torch.testing.assert_close(res_out, x + res)


# ------------------------------------------------------------------------------------------------- apex


def test_apex_norms_follow_the_cuda_path_dtypes() -> None:
    x = _rand(3, 4, 8, seed=12).to(torch.bfloat16)
    ln = _randomise(DEFAULT_TWINS["apex.normalization.FusedLayerNorm"]((4, 8)), seed=13)
    want = F.layer_norm(x.float(), (4, 8), ln.weight, ln.bias, 1e-5)
    torch.testing.assert_close(ln(x), want.to(torch.bfloat16))
    rms = _randomise(DEFAULT_TWINS["apex.normalization.FusedRMSNorm"](8, eps=1e-6), seed=14)
    assert rms(x).dtype == torch.bfloat16  # output in the input's dtype, like the fused kernel
    torch.testing.assert_close(rms(x), F.rms_norm(x.float(), (8,), rms.weight, 1e-6).to(torch.bfloat16))
    mixed = DEFAULT_TWINS["apex.normalization.MixedFusedRMSNorm"](8)
    assert mixed(x).dtype == torch.float32  # Mixed*: the weight's dtype
    with pytest.raises(RuntimeError, match="elementwise_affine = False"), pytest.warns(UserWarning):
        DEFAULT_TWINS["apex.normalization.MixedFusedLayerNorm"](8, elementwise_affine=False)


# ------------------------------------------------------------------------------------------- flash_attn


def test_fused_dense_and_rms_norm() -> None:
    dense = DEFAULT_TWINS["flash_attn.ops.fused_dense.FusedDense"](4, 3, return_residual=True)
    x = _rand(2, 4, seed=15)
    out, residual = dense(x)
    torch.testing.assert_close(out, F.linear(x, dense.weight, dense.bias))
    assert residual is x
    norm = _randomise(DEFAULT_TWINS["flash_attn.ops.rms_norm.RMSNorm"](4, eps=1e-6), seed=16)
    torch.testing.assert_close(norm(x), F.rms_norm(x, (4,), norm.weight, 1e-6))


def test_rotary_embedding_rotates_qkv_in_place_by_position() -> None:
    rotary = DEFAULT_TWINS["flash_attn.layers.rotary.RotaryEmbedding"](4, base=100.0)
    qkv = _rand(1, 3, 3, 2, 4, seed=17)
    original = qkv.clone()
    assert rotary(qkv) is qkv
    inv = 1.0 / 100.0 ** (torch.arange(0, 4, 2).float() / 4)
    for s in range(3):
        for which in (0, 1):
            x1, x2 = original[0, s, which, :, :2], original[0, s, which, :, 2:]
            c, n = torch.cos(s * inv), torch.sin(s * inv)
            torch.testing.assert_close(qkv[0, s, which], torch.cat([x1 * c - x2 * n, x1 * n + x2 * c], -1))
    assert torch.equal(qkv[:, :, 2], original[:, :, 2])  # V untouched
    assert rotary._seq_len_cached == 3


def test_rotary_embedding_xpos_scales_q_up_and_k_down() -> None:
    rotary = DEFAULT_TWINS["flash_attn.layers.rotary.RotaryEmbedding"](4, scale_base=8)
    q, kv = torch.ones(1, 4, 1, 4), torch.ones(1, 4, 2, 1, 4)
    q_out, kv_out = rotary(q, kv)
    # relative position keeps q.k invariant under the XPos scale: scale**p / scale**p
    assert not torch.allclose(q_out.norm(dim=-1), kv_out[:, :, 0].norm(dim=-1))
    torch.testing.assert_close((q_out * kv_out[:, :, 0]).sum(-1), torch.full((1, 4, 1), 4.0), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ mamba


def test_mamba_gated_rms_norm_with_groups_and_gate_order() -> None:
    cls = DEFAULT_TWINS["mamba_ssm.ops.triton.layernorm_gated.RMSNorm"]
    x, z = _rand(3, 8, seed=18), _rand(3, 8, seed=19)
    after = _randomise(cls(8, eps=1e-6, group_size=4, norm_before_gate=True), seed=20)
    groups = x.view(3, 2, 4)
    normed = (groups * torch.rsqrt(groups.square().mean(-1, keepdim=True) + 1e-6)).view(3, 8) * after.weight
    torch.testing.assert_close(after(x, z), normed * F.silu(z), rtol=1e-5, atol=1e-6)
    before = cls(8, norm_before_gate=False)
    torch.testing.assert_close(before(x, z), F.rms_norm(x * F.silu(z), (8,), None, 1e-5), rtol=1e-5, atol=1e-6)


def _mamba2(**kwargs):
    torch.manual_seed(0)
    block = DEFAULT_TWINS["mamba_ssm.Mamba2"](
        d_model=16, d_state=4, headdim=8, chunk_size=4, layer_idx=0, **kwargs
    )
    return _randomise(block, seed=21)


def test_mamba2_fused_and_unfused_paths_agree() -> None:
    fused = _mamba2(use_mem_eff_path=True)
    unfused = _mamba2(use_mem_eff_path=False)
    unfused.load_state_dict(fused.state_dict())
    u = _rand(2, 7, 16, seed=22) * 0.5
    out = fused(u)
    assert out.shape == u.shape
    torch.testing.assert_close(out, unfused(u), rtol=1e-4, atol=1e-5)


def test_mamba2_decoding_with_an_inference_cache_equals_the_full_forward() -> None:
    block = _mamba2(use_mem_eff_path=False)
    u = _rand(2, 6, 16, seed=23) * 0.5
    full = block(u)
    params = SimpleNamespace(key_value_memory_dict={}, seqlen_offset=0)
    prefix = block(u[:, :4], inference_params=params)
    params.seqlen_offset = 4
    steps = [block(u[:, t : t + 1], inference_params=params) for t in range(4, 6)]
    torch.testing.assert_close(torch.cat([prefix, *steps], 1), full, rtol=1e-4, atol=1e-5)


def test_mamba2_runs_on_meta() -> None:
    with torch.device("meta"):
        block = DEFAULT_TWINS["mamba_ssm.Mamba2"](d_model=32, d_state=8, headdim=16, dtype=torch.bfloat16)
        out = block(torch.empty(2, 9, 32, dtype=torch.bfloat16))
    assert out.is_meta and out.shape == (2, 9, 32) and out.dtype == torch.bfloat16
    assert math.isclose(block.norm.eps, 1e-5) and block.norm.group_size == 64
