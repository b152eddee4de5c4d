"""flash-attn references against a per-query loop attention, plus packing, rotary and stand-in behaviour."""
from __future__ import annotations

import math

import pytest
import torch

from hybridload.errors import KernelUnavailableError
from hybridload.reference import flash_attn as ref
from hybridload.shim.kernel_shim import kernel_shim


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def loop_attention(q, k, v, scale=None, causal=False, window=(-1, -1), softcap=0.0, alibi=None):
    """One query row at a time: the visible keys of row i are j in [i + sk - sq - left, i + sk - sq + right]."""
    B, Sq, H, D = q.shape
    Sk, Hk = k.shape[1], k.shape[2]
    scale = D**-0.5 if scale is None else scale
    out = torch.zeros(B, Sq, H, v.shape[-1], dtype=torch.float64)
    lse = torch.full((B, H, Sq), math.inf, dtype=torch.float64)
    left, right = window
    if causal:
        right = 0
    for b in range(B):
        for h in range(H):
            hk = h // (H // Hk)
            for i in range(Sq):
                centre = i + Sk - Sq
                scores = {}
                for j in range(Sk):
                    if (left >= 0 and j < centre - left) or (right >= 0 and j > centre + right):
                        continue
                    s = scale * float(q[b, i, h].double() @ k[b, j, hk].double())
                    if softcap > 0:
                        s = softcap * math.tanh(s / softcap)
                    if alibi is not None:
                        slope = float(alibi[h] if alibi.dim() == 1 else alibi[b, h])
                        s -= slope * abs(centre - j)
                    scores[j] = s
                if not scores:
                    continue  # no visible key: zero output, infinite LSE
                m = max(scores.values())
                total = sum(math.exp(s - m) for s in scores.values())
                lse[b, h, i] = m + math.log(total)
                for j, s in scores.items():
                    out[b, i, h] += math.exp(s - m) / total * v[b, j, hk].double()
    return out, lse


CASES = {
    "plain": {},
    "causal": {"causal": True},
    "causal_sq_lt_sk": {"causal": True, "sk": 9},
    "causal_sq_gt_sk_has_empty_rows": {"causal": True, "sk": 3},
    "sliding_window": {"window": (2, 1)},
    "softcap_and_scale": {"softcap": 5.0, "scale": 0.3},
    "alibi_per_head": {"alibi": "h", "causal": True},
    "alibi_per_batch_head": {"alibi": "bh"},
    "gqa": {"hk": 1},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_flash_attn_func_matches_the_loop(name: str) -> None:
    case = CASES[name]
    B, Sq, H, D = 2, 5, 2, 4
    Sk, Hk = case.get("sk", Sq), case.get("hk", H)
    q, k, v = _rand(B, Sq, H, D, seed=1), _rand(B, Sk, Hk, D, seed=2), _rand(B, Sk, Hk, D, seed=3)
    alibi = {"h": torch.rand(H), "bh": torch.rand(B, H)}.get(case.get("alibi"))
    kwargs = {
        "softmax_scale": case.get("scale"),
        "causal": case.get("causal", False),
        "window_size": case.get("window", (-1, -1)),
        "softcap": case.get("softcap", 0.0),
        "alibi_slopes": alibi,
    }
    out, lse, dmask = ref.flash_attn_func(q, k, v, return_attn_probs=True, **kwargs)
    want, want_lse = loop_attention(
        q, k, v, case.get("scale"), kwargs["causal"], kwargs["window_size"], kwargs["softcap"], alibi
    )
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse.double(), want_lse, rtol=1e-5, atol=1e-6)
    assert out.dtype == q.dtype and lse.dtype == torch.float32 and dmask.numel() == 0
    assert torch.equal(ref.flash_attn_func(q, k, v, **kwargs), out)


def test_output_dtype_is_q_dtype_and_dropout_fills_the_mask_slot() -> None:
    q = _rand(1, 130, 2, 8, seed=4).to(torch.bfloat16)
    out, lse, dmask = ref.flash_attn_func(q, q, q, dropout_p=0.1, return_attn_probs=True)
    assert out.dtype == torch.bfloat16 and lse.shape == (1, 2, 130)
    assert dmask.shape == (1, 2, 256, 256)  # the kernel's rows/cols rounded up to 128


def test_varlen_equals_dense_calls_per_sequence() -> None:
    lens_q, lens_k = [3, 5, 1], [4, 5, 2]
    q, k, v = _rand(9, 2, 4, seed=5), _rand(11, 1, 4, seed=6), _rand(11, 1, 4, seed=7)
    cu_q, cu_k = torch.tensor([0, 3, 8, 9], dtype=torch.int32), torch.tensor([0, 4, 9, 11], dtype=torch.int32)
    out, lse, _ = ref.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 5, 5, causal=True, return_attn_probs=True)
    qs, ks = 0, 0
    for lq, lk in zip(lens_q, lens_k):
        o, l_, _ = ref.flash_attn_func(
            q[None, qs : qs + lq], k[None, ks : ks + lk], v[None, ks : ks + lk], causal=True, return_attn_probs=True
        )
        torch.testing.assert_close(out[qs : qs + lq], o[0])
        torch.testing.assert_close(lse[:, qs : qs + lq], l_[0])
        qs, ks = qs + lq, ks + lk
    assert lse.shape == (2, 9)


def test_paged_kv_cache_equals_contiguous_kv() -> None:
    q, k, v = _rand(4, 2, 4, seed=8), _rand(7, 2, 4, seed=9), _rand(7, 2, 4, seed=10)
    cu_q, cu_k = torch.tensor([0, 1, 4]), torch.tensor([0, 3, 7])
    contiguous = ref.flash_attn_varlen_func(q, k, v, cu_q, cu_k, 3, 4, causal=True)
    # pages of 2 tokens, shuffled in the pool: sequence 0 uses pages [3, 0], sequence 1 pages [1, 2]
    pool_k, pool_v = torch.zeros(4, 2, 2, 4), torch.zeros(4, 2, 2, 4)
    for page, (start, stop) in zip([3, 0, 1, 2], [(0, 2), (2, 3), (3, 5), (5, 7)]):
        pool_k[page, : stop - start], pool_v[page, : stop - start] = k[start:stop], v[start:stop]
    table = torch.tensor([[3, 0], [1, 2]])
    paged = ref.flash_attn_varlen_func(q, pool_k, pool_v, cu_q, cu_k, 3, 4, causal=True, block_table=table)
    torch.testing.assert_close(paged, contiguous)


def test_packed_variants_equal_unpacked() -> None:
    qkv = _rand(2, 5, 3, 2, 4, seed=11)
    base = ref.flash_attn_func(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], causal=True)
    torch.testing.assert_close(ref.flash_attn_qkvpacked_func(qkv, causal=True), base)
    torch.testing.assert_close(ref.flash_attn_kvpacked_func(qkv[:, :, 0], qkv[:, :, 1:], causal=True), base)
    flat, cu = qkv.flatten(0, 1), torch.tensor([0, 5, 10])
    packed = ref.flash_attn_varlen_qkvpacked_func(flat, cu, 5, causal=True)
    torch.testing.assert_close(packed, base.flatten(0, 1))
    torch.testing.assert_close(ref.flash_attn_varlen_kvpacked_func(flat[:, 0], flat[:, 1:], cu, cu, 5, 5, causal=True), packed)


def test_meta_inputs_give_real_shapes_including_varlen() -> None:
    q = torch.empty(2, 7, 4, 8, device="meta", dtype=torch.float16)
    out = ref.flash_attn_func(q, q[:, :, :2], q[:, :, :2], causal=True)
    assert out.is_meta and out.shape == q.shape and out.dtype == torch.float16
    flat = torch.empty(14, 4, 8, device="meta", dtype=torch.bfloat16)
    cu = torch.empty(3, device="meta", dtype=torch.int32)
    out, lse, _ = ref.flash_attn_varlen_func(flat, flat, flat, cu, cu, 7, 7, return_attn_probs=True)
    assert (out.shape, out.dtype, lse.shape, lse.dtype) == ((14, 4, 8), torch.bfloat16, (4, 14), torch.float32)


# --------------------------------------------------------------------------------------------- rotary


def loop_rotary(x, cos, sin, interleaved, offsets):
    out = x.clone().double()
    rot = cos.shape[-1] * 2
    for b in range(x.shape[0]):
        for s in range(x.shape[1]):
            p = s + (int(offsets[b]) if isinstance(offsets, torch.Tensor) else offsets)
            for h in range(x.shape[2]):
                for i in range(rot // 2):
                    a, c = (2 * i, 2 * i + 1) if interleaved else (i, i + rot // 2)
                    x1, x2 = float(x[b, s, h, a]), float(x[b, s, h, c])
                    out[b, s, h, a] = x1 * float(cos[p, i]) - x2 * float(sin[p, i])
                    out[b, s, h, c] = x1 * float(sin[p, i]) + x2 * float(cos[p, i])
    return out


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("offsets", [0, 2, "per-batch"])
def test_apply_rotary_emb_matches_the_loop(interleaved: bool, offsets) -> None:
    x = _rand(2, 4, 2, 10, seed=12)  # head dim 10, rotary dim 6: the last 4 channels pass through
    angles = torch.outer(torch.arange(8.0), torch.tensor([1.0, 0.5, 0.25]))
    cos, sin = angles.cos(), angles.sin()
    offsets = torch.tensor([1, 3]) if offsets == "per-batch" else offsets
    out = ref.apply_rotary_emb(x, cos, sin, interleaved=interleaved, seqlen_offsets=offsets)
    torch.testing.assert_close(out.double(), loop_rotary(x, cos, sin, interleaved, offsets), rtol=1e-5, atol=1e-6)
    inplace = x.clone()
    assert ref.apply_rotary_emb(inplace, cos, sin, interleaved, inplace=True, seqlen_offsets=offsets) is inplace
    torch.testing.assert_close(inplace, out)


def test_rotary_packed_sequences_restart_positions() -> None:
    x = _rand(5, 2, 6, seed=13)
    angles = torch.outer(torch.arange(6.0), torch.tensor([1.0, 0.3, 0.1]))
    cos, sin = angles.cos(), angles.sin()
    packed = ref.apply_rotary_emb(x, cos, sin, cu_seqlens=torch.tensor([0, 2, 5]), max_seqlen=3)
    torch.testing.assert_close(packed[:2], ref.apply_rotary_emb(x[None, :2], cos, sin)[0])
    torch.testing.assert_close(packed[2:], ref.apply_rotary_emb(x[None, 2:], cos, sin)[0])


def test_qkv_and_kv_helpers_rotate_q_and_k_only_in_place() -> None:
    qkv = _rand(1, 3, 3, 2, 4, seed=14)
    angles = torch.outer(torch.arange(3.0), torch.tensor([1.0, 0.5]))
    cos, sin = angles.cos(), angles.sin()
    original = qkv.clone()
    assert ref.apply_rotary_emb_qkv_(qkv, cos, sin) is qkv
    torch.testing.assert_close(qkv[:, :, 0], ref.apply_rotary_emb(original[:, :, 0], cos, sin))
    torch.testing.assert_close(qkv[:, :, 1], ref.apply_rotary_emb(original[:, :, 1], cos, sin))
    assert torch.equal(qkv[:, :, 2], original[:, :, 2])
    kv = original[:, :, 1:].clone()
    ref.apply_rotary_emb_kv_(kv, cos, sin)
    torch.testing.assert_close(kv[:, :, 0], qkv[:, :, 1])


def test_rms_norm_matches_torch() -> None:
    x, w = _rand(3, 8, seed=15).half(), _rand(8, seed=16)
    torch.testing.assert_close(ref.rms_norm(x, w, 1e-6), torch.nn.functional.rms_norm(x.float(), (8,), w, 1e-6).half())


# --------------------------------------------------------------------------------------------- stand-in


def test_stand_in_runs_the_reference_on_meta_and_refuses_real_tensors() -> None:
    with kernel_shim() as report:
        from flash_attn import flash_attn_func, flash_attn_varlen_func
        from flash_attn.flash_attn_interface import flash_attn_func as deep

        q = torch.empty(1, 4, 2, 8, device="meta", dtype=torch.bfloat16)
        assert flash_attn_func(q, q, q, causal=True).shape == q.shape
        assert deep(q, q, q).dtype == torch.bfloat16
        with pytest.raises(KernelUnavailableError, match="flash_attn"):
            flash_attn_func(torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 8), torch.randn(1, 4, 2, 8))
        assert callable(flash_attn_varlen_func)
    assert "flash_attn.flash_attn_func" in report.stand_ins["flash_attn"]
