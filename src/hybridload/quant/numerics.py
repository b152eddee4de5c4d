"""Pure-PyTorch NVFP4 and FP8 numerics: the bit-exact reference every kernel and writer is checked against.

NVFP4 (NVIDIA Model Optimizer's layout): a weight ``W`` of shape (N, K) is stored as

* ``weight`` uint8 (N, Kp / 2): e2m1 codes, two per byte, element ``2j`` in the low nibble, ``2j + 1`` in the
  high nibble (Kp = K rounded up to a multiple of the group size; the padding is zeros);
* ``weight_scale`` float8_e4m3fn (N, Kp / 16): one scale per 16 consecutive input elements;
* ``weight_scale_2`` float32 scalar: the per-tensor ("global") scale;

and ``W[n, k] = e2m1(code[n, k]) * (float(weight_scale[n, k // 16]) * weight_scale_2)``, computed in float32 in
exactly that order (what ``modelopt``'s ``NVFP4QTensor.dequantize`` does). e2m1 codes: bit 3 is the sign,
bits 0-2 index ``0, 0.5, 1, 1.5, 2, 3, 4, 6``.

Quantization follows ``NVFP4QTensor.quantize`` step for step (same reductions, same order of float
operations, round-half-to-even at the e2m1 midpoints, saturation at 6), so the writer's tensors equal the
ones Model Optimizer exports for the same weights.
"""
from __future__ import annotations

import math

import torch

from ..errors import QuantizationError

GROUP_SIZE = 16
E2M1_MAX = 6.0
E4M3_MAX = 448.0
#: code -> value; codes 8..15 are the negatives of 0..7 (code 8 is -0.0 and decodes to 0)
E2M1_VALUES: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
# decision boundaries between consecutive magnitudes; a value on an odd-indexed boundary rounds up (to even)
_E2M1_BOUNDS: tuple[float, ...] = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def e2m1_table(device: torch.device | str | None = None) -> torch.Tensor:
    """The 16 e2m1 code values as float32 (index = code)."""
    return torch.tensor(E2M1_VALUES, dtype=torch.float32, device=device)


def e2m1_from_codes(codes: torch.Tensor) -> torch.Tensor:
    """e2m1 values of integer ``codes`` from their bits, on their device (no host data): magnitude bits
    ``e e m`` are ``m / 2`` for ``e = 0`` and ``(1 + m / 2) * 2^(e - 1)`` otherwise; bit 3 the sign."""
    codes = codes.to(torch.int32)
    magnitude = codes & 7
    exponent = magnitude >> 1
    half = (magnitude & 1).to(torch.float32) * 0.5
    value = torch.where(exponent == 0, half, torch.ldexp(1.0 + half, exponent - 1))
    return torch.where(codes >= 8, -value, value)


#: the e2m1 table per device, each made once outside CUDA-graph capture (see _device_e2m1_table)
_DEVICE_TABLES: dict[torch.device, torch.Tensor] = {}


def _device_e2m1_table(device: torch.device) -> torch.Tensor:
    """The 16 code values on ``device``, kept per device so a call copies nothing from the host: a host-to-device
    copy per call costs a synchronous transfer in eager mode and cannot be captured in a CUDA graph. During
    capture, with no table kept for the device yet, it is computed on the device from the code bits instead
    (a tensor made inside a capture holds nothing until replay, so it is not kept)."""
    table = _DEVICE_TABLES.get(device)
    if table is not None:
        return table
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return e2m1_from_codes(torch.arange(16, device=device))
    table = e2m1_table(device)
    _DEVICE_TABLES[device] = table
    return table


def padded_k(in_features: int, group_size: int = GROUP_SIZE) -> int:
    """Input width as stored: rounded up to a whole number of scale groups."""
    return math.ceil(in_features / group_size) * group_size


def nvfp4_shapes(out_features: int, in_features: int, group_size: int = GROUP_SIZE) -> dict[str, tuple[int, ...]]:
    """Checkpoint shapes of one NVFP4 linear (Model Optimizer names)."""
    kp = padded_k(in_features, group_size)
    return {"weight": (out_features, kp // 2), "weight_scale": (out_features, kp // group_size), "weight_scale_2": (), "input_scale": ()}


def unpack_codes(packed: torch.Tensor) -> torch.Tensor:
    """uint8 (..., K/2) -> uint8 codes (..., K): the low nibble is the even element."""
    if packed.dtype != torch.uint8:
        raise QuantizationError(f"packed NVFP4 data must be uint8, got {packed.dtype}")
    low = packed & 0x0F
    high = packed >> 4
    return torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes (..., K) with K even -> (..., K/2), element 2j in the low nibble."""
    if codes.shape[-1] % 2:
        raise QuantizationError(f"an even number of codes is needed to pack, got {codes.shape[-1]}")
    codes = codes.to(torch.uint8)
    return (codes[..., 1::2] << 4) | codes[..., 0::2]


def round_to_e2m1(values: torch.Tensor) -> torch.Tensor:
    """float values (already divided by their scales) -> uint8 e2m1 codes.

    Nearest e2m1 magnitude, ties to the even code, magnitudes above 6 saturate to 6; the sign bit is set for
    negative values only (so -0.0 gives code 0), as Model Optimizer's ``_cast_fp4`` does.
    """
    bounds = torch.tensor(_E2M1_BOUNDS, dtype=values.dtype, device=values.device)
    sign = (values < 0).to(torch.uint8)
    magnitude = values.abs()
    code = torch.searchsorted(bounds, magnitude, out_int32=True).to(torch.uint8)
    on_odd_bound = (magnitude.unsqueeze(-1) == bounds[[1, 3, 5]]).any(dim=-1).to(torch.uint8)
    return (sign << 3) + code + on_odd_bound


def global_scale(amax: torch.Tensor | float) -> torch.Tensor:
    """``weight_scale_2`` (or ``input_scale``) for a tensor whose absolute maximum is ``amax``."""
    amax = torch.as_tensor(amax)
    return amax.float() / (E2M1_MAX * E4M3_MAX)


def quantize_nvfp4(
    weight: torch.Tensor, scale_2: torch.Tensor | None = None, group_size: int = GROUP_SIZE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, K) floating weight -> (packed uint8, weight_scale float8_e4m3fn, weight_scale_2 float32 scalar).

    ``scale_2`` overrides the per-tensor scale (Model Optimizer shares one across layers that read the same
    input, e.g. q/k/v). K is zero-padded to a multiple of ``group_size``.
    """
    if weight.dim() != 2 or not weight.is_floating_point():
        raise QuantizationError(f"quantize_nvfp4 takes a 2-d floating weight, got {weight.dim()}-d {weight.dtype}")
    n, k = weight.shape
    kp = padded_k(k, group_size)
    if kp != k:
        weight = torch.nn.functional.pad(weight, (0, kp - k))
    if scale_2 is None:
        scale_2 = global_scale(weight.abs().amax())
    scale_2 = torch.as_tensor(scale_2, dtype=torch.float32, device=weight.device).reshape(())
    blocks = weight.view(n, kp // group_size, group_size)
    block_amax = blocks.abs().amax(dim=-1).float()
    block_scale = block_amax / (E2M1_MAX * scale_2)
    block_scale[block_scale == 0] = 1.0
    scale = block_scale.clamp(min=2**-9, max=E4M3_MAX).to(torch.float8_e4m3fn)
    scaled = blocks / (scale.to(torch.float32) * scale_2).unsqueeze(-1)
    codes = round_to_e2m1(scaled.reshape(n, kp))
    return pack_codes(codes), scale, scale_2


def dequantize_nvfp4(
    packed: torch.Tensor,
    scale: torch.Tensor,
    scale_2: torch.Tensor,
    *,
    in_features: int | None = None,
    dtype: torch.dtype = torch.float32,
    reciprocal: bool = False,
) -> torch.Tensor:
    """The reference dequantization: (N, Kp/2) packed + scales -> (N, in_features) in ``dtype``.

    Leading dimensions are allowed (stacked experts: (E, N, Kp/2) with scales (E, N, Kp/16) and ``scale_2``
    of shape (E,) or scalar). Computed in float32, cast once at the end. ``reciprocal``: ``scale_2`` is
    stored inverted (compressed-tensors' ``weight_global_scale``), so the block scale is divided by it.
    """
    if scale.dtype != torch.float8_e4m3fn:
        raise QuantizationError(f"NVFP4 weight_scale must be float8_e4m3fn, got {scale.dtype}")
    kp = packed.shape[-1] * 2
    if scale.shape[:-1] != packed.shape[:-1] or kp % scale.shape[-1] or kp // scale.shape[-1] != GROUP_SIZE:
        raise QuantizationError(
            f"weight_scale shape {tuple(scale.shape)} does not fit packed weight {tuple(packed.shape)} "
            f"(expected {(*packed.shape[:-1], kp // GROUP_SIZE)})"
        )
    values = _device_e2m1_table(packed.device)[unpack_codes(packed).long()]
    scale_2 = scale_2.to(torch.float32)
    if scale_2.numel() == 1:
        scale_2 = scale_2.reshape(())
    scale_2 = scale_2.reshape(*scale_2.shape, *([1] * (scale.dim() - scale_2.dim())))
    per_block = scale.to(torch.float32) / scale_2 if reciprocal else scale.to(torch.float32) * scale_2
    out = (values.view(*packed.shape[:-1], kp // GROUP_SIZE, GROUP_SIZE) * per_block.unsqueeze(-1)).reshape(
        *packed.shape[:-1], kp
    )
    if in_features is not None:
        out = out[..., :in_features]
    return out.to(dtype)


def dequantize_fp8(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-tensor FP8 (Model Optimizer FP8): ``float(weight) * weight_scale``."""
    return (weight.to(torch.float32) * scale.to(torch.float32)).to(dtype)


def dequantize_fp8_block(
    weight: torch.Tensor, scale_inv: torch.Tensor, block_size: tuple[int, int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Fine-grained FP8 (DeepSeek-V3): each (block_n x block_k) tile times its ``weight_scale_inv`` entry."""
    n, k = weight.shape[-2:]
    bn, bk = block_size
    expanded = scale_inv.to(torch.float32).repeat_interleave(bn, dim=-2).repeat_interleave(bk, dim=-1)
    return (weight.to(torch.float32) * expanded[..., :n, :k]).to(dtype)


def fake_quantize_nvfp4(weight: torch.Tensor, scale_2: torch.Tensor | None = None) -> torch.Tensor:
    """``dequantize(quantize(weight))`` in ``weight``'s shape and dtype: the weight an NVFP4 model really uses."""
    packed, scale, s2 = quantize_nvfp4(weight, scale_2)
    return dequantize_nvfp4(packed, scale, s2, in_features=weight.shape[1], dtype=weight.dtype)
