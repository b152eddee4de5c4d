"""The pure-PyTorch NVFP4 reference: every code, sign, zero, subnormal fp8 scales, padding, rounding ties."""
from __future__ import annotations

import math

import pytest
import torch

from hybridload.errors import QuantizationError
from hybridload.quant import numerics
from hybridload.quant.numerics import (
    E2M1_VALUES,
    dequantize_fp8,
    dequantize_fp8_block,
    dequantize_nvfp4,
    nvfp4_shapes,
    pack_codes,
    quantize_nvfp4,
    round_to_e2m1,
    unpack_codes,
)


def _e2m1_by_definition(code: int) -> float:
    """e2m1 from its bit fields (sign, 2-bit exponent with bias 1, 1-bit mantissa; exponent 0 is subnormal)."""
    sign = -1.0 if code & 8 else 1.0
    exponent, mantissa = (code >> 1) & 3, code & 1
    magnitude = mantissa * 0.5 if exponent == 0 else (1 + mantissa / 2) * 2.0 ** (exponent - 1)
    return sign * magnitude


def _e4m3_by_definition(byte: int) -> float:
    sign = -1.0 if byte & 0x80 else 1.0
    exponent, mantissa = (byte >> 3) & 15, byte & 7
    if exponent == 0:
        return sign * mantissa / 8 * 2.0**-6
    return sign * (1 + mantissa / 8) * 2.0 ** (exponent - 7)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_e2m1_values_computed_from_the_code_bits_equal_the_table_bit_for_bit(dtype: torch.dtype) -> None:
    """The on-device table a CUDA-graph capture uses is the same 16 float32 bit patterns, -0.0 included."""
    computed = numerics.e2m1_from_codes(torch.arange(16, dtype=dtype))
    assert computed.dtype == torch.float32
    assert torch.equal(computed.view(torch.int32), numerics.e2m1_table().view(torch.int32))


def test_reference_dequantization_keeps_one_table_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Made once per device, so a call copies nothing from the host (and can be captured in a CUDA graph)."""
    monkeypatch.setattr(numerics, "_DEVICE_TABLES", {})
    p, s, g = quantize_nvfp4(torch.randn(8, 32))
    first = dequantize_nvfp4(p, s, g)
    kept = numerics._DEVICE_TABLES[torch.device("cpu")]
    assert torch.equal(dequantize_nvfp4(p, s, g), first)
    assert numerics._DEVICE_TABLES == {torch.device("cpu"): kept} and numerics._device_e2m1_table(torch.device("cpu")) is kept


def test_the_16_codes_decode_by_their_bit_fields() -> None:
    assert [_e2m1_by_definition(c) for c in range(16)] == [abs(v) if c == 8 else v for c, v in enumerate(E2M1_VALUES)]
    packed = pack_codes(torch.arange(16, dtype=torch.uint8).view(1, 16))
    one = torch.tensor([[1.0]], dtype=torch.float32).to(torch.float8_e4m3fn)
    out = dequantize_nvfp4(packed, one, torch.tensor(1.0))
    assert out.view(-1).tolist() == [_e2m1_by_definition(c) for c in range(16)]


def test_pack_puts_the_even_element_in_the_low_nibble_and_round_trips() -> None:
    codes = torch.tensor([[1, 2, 15, 8, 0, 7]], dtype=torch.uint8)
    packed = pack_codes(codes)
    assert packed.tolist() == [[0x21, 0x8F, 0x70]]
    assert torch.equal(unpack_codes(packed), codes)
    with pytest.raises(QuantizationError, match="even number"):
        pack_codes(codes[:, :5])


def test_every_code_survives_quantize_dequantize_exactly() -> None:
    """Values that are exactly representable come back bit for bit, for every code and sign."""
    values = torch.tensor([_e2m1_by_definition(c) for c in range(16)] * 2).view(2, 16) * torch.tensor([[1.0], [0.25]])
    packed, scale, scale_2 = quantize_nvfp4(values)
    out = dequantize_nvfp4(packed, scale, scale_2)
    assert torch.equal(out, values)
    assert unpack_codes(packed)[0].tolist() == [c if c != 8 else 0 for c in range(16)]  # -0.0 is stored as +0


def test_rounding_ties_go_to_the_even_code_and_large_values_saturate() -> None:
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -5.0, 7.0, 100.0, 0.2, 0.3])
    assert [E2M1_VALUES[c] for c in round_to_e2m1(ties).tolist()] == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 0.0, -4.0, 6.0, 6.0, 0.0, 0.5]


def test_subnormal_fp8_block_scales_decode_exactly() -> None:
    """Block scales 2^-9 .. 7 * 2^-9 are e4m3 subnormals: the dequantized value is code x scale x global."""
    raw = torch.arange(1, 8, dtype=torch.uint8).view(7, 1)  # e4m3 subnormal bytes 0x01 .. 0x07
    scale = raw.view(torch.float8_e4m3fn)
    codes = torch.full((7, 16), 7, dtype=torch.uint8)  # 6.0 everywhere
    codes[:, 1] = 9  # -0.5
    out = dequantize_nvfp4(pack_codes(codes), scale, torch.tensor(0.5))
    for row, byte in enumerate(range(1, 8)):
        s = _e4m3_by_definition(byte)
        assert s == byte * 2.0**-9
        assert out[row, 0].item() == 6.0 * s * 0.5 and out[row, 1].item() == -0.5 * s * 0.5


def test_all_256_scale_bytes_match_the_e4m3_definition() -> None:
    raw = torch.arange(256, dtype=torch.uint8)
    finite = [b for b in range(256) if b & 0x7F != 0x7F]  # 0x7f / 0xff are NaN in e4m3fn
    decoded = raw.view(torch.float8_e4m3fn).float()
    assert all(decoded[b].item() == _e4m3_by_definition(b) for b in finite)


def test_scales_follow_model_optimizer_recipe() -> None:
    w = torch.zeros(2, 32)
    w[0, :16] = torch.linspace(-3.0, 3.0, 16)
    w[0, 16:] = 0.0  # an all-zero block: scale 1.0 (never 0)
    w[1] = torch.linspace(-12.0, 12.0, 32)
    packed, scale, scale_2 = quantize_nvfp4(w)
    assert scale_2.dtype == torch.float32 and scale_2.shape == ()
    assert scale_2.item() == pytest.approx(12.0 / (6 * 448))
    assert scale.dtype == torch.float8_e4m3fn and scale.shape == (2, 2)
    assert scale.float()[0, 1].item() == 1.0
    expected = (3.0 / (6 * scale_2.item()))
    assert scale.float()[0, 0].item() == pytest.approx(expected, rel=2**-3)  # nearest e4m3 of amax / (6 * scale_2)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 16)


@pytest.mark.parametrize("n,k", [(1, 16), (3, 37), (5, 1), (7, 100), (2, 272)])
def test_odd_shapes_pad_k_to_whole_groups(n: int, k: int) -> None:
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(n * k))
    packed, scale, scale_2 = quantize_nvfp4(w)
    kp = math.ceil(k / 16) * 16
    shapes = nvfp4_shapes(n, k)
    assert tuple(packed.shape) == shapes["weight"] == (n, kp // 2)
    assert tuple(scale.shape) == shapes["weight_scale"] == (n, kp // 16)
    assert (unpack_codes(packed)[:, k:] == 0).all()  # the padding is zero codes
    out = dequantize_nvfp4(packed, scale, scale_2, in_features=k)
    assert out.shape == (n, k)
    # NVFP4 error bound: half a step of the largest magnitude, relative to each block's max
    err = (out - w).abs().view(-1)
    assert err.max() <= w.abs().max() * 0.25


def test_stacked_experts_dequantize_like_each_expert() -> None:
    ws = [torch.randn(8, 32, generator=torch.Generator().manual_seed(i)) * (i + 1) for i in range(3)]
    q = [quantize_nvfp4(w) for w in ws]
    stacked = dequantize_nvfp4(torch.stack([a for a, _, _ in q]), torch.stack([b for _, b, _ in q]), torch.stack([c for _, _, c in q]))
    for i, (a, b, c) in enumerate(q):
        assert torch.equal(stacked[i], dequantize_nvfp4(a, b, c))


def test_reference_rejects_wrong_dtypes_and_shapes() -> None:
    packed, scale, scale_2 = quantize_nvfp4(torch.randn(4, 32))
    with pytest.raises(QuantizationError, match="float8_e4m3fn"):
        dequantize_nvfp4(packed, scale.float(), scale_2)
    with pytest.raises(QuantizationError, match="does not fit"):
        dequantize_nvfp4(packed, scale[:, :1], scale_2)
    with pytest.raises(QuantizationError, match="uint8"):
        unpack_codes(packed.to(torch.int16))


def test_fp8_references() -> None:
    w = torch.randn(300, 260)
    q = w.to(torch.float8_e4m3fn)
    assert torch.equal(dequantize_fp8(q, torch.tensor(2.0)), q.float() * 2.0)
    inv = torch.rand(3, 3) + 0.5  # ceil(300/128) x ceil(260/128)
    out = dequantize_fp8_block(q, inv, (128, 128))
    assert out.shape == (300, 260)
    assert out[129, 257].item() == (q[129, 257].float() * inv[1, 2]).item()  # one float32 product
