"""Triton kernels behind :mod:`hybridload.kernels.w4a16` (imports triton; load it lazily).

NVFP4 weights stay packed in GPU memory; each kernel decodes them on the fly:

* an e2m1 code ``c`` becomes the fp16 bit pattern ``(c & 8) << 12 | (c & 7) << 9``, which is the code's
  value times 2^-14 (exact, subnormals included); an e4m3 scale byte ``b`` becomes ``(b & 0x80) << 8 |
  (b & 0x7f) << 7``, its value times 2^-8. No lookup table, no fp8 hardware conversion needed;
* value x block scale has at most 6 significant bits and lies in [2^-10, 2688], so it is exact in bf16 and
  fp16: the tile handed to ``tl.dot`` is the exact weight divided by the per-tensor scale, and the
  per-tensor scale multiplies the fp32 accumulator once at the end;
* the packed byte ``j`` of a row holds input elements ``2j`` (low nibble) and ``2j + 1`` (high nibble), so
  the low and high nibbles are dotted with the even and odd input columns: no interleave shuffle.

Kernels: ``_gemm_kernel`` (skinny GEMM for decode/short prefill: M tiles of 16 rows, optional split-K into
fp32 partials reduced by ``_splitk_reduce_kernel``), ``_moe_kernel`` (grouped: each program reads its
expert id from device memory, so only the active experts' bytes are read and no host sync happens), and
``_dequant_kernel`` (whole weight to bf16/fp16, for long prefills handed to cuBLAS).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._runtime import device_guard

_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}


@triton.jit
def _e2m1_to_f32(codes):
    c = codes.to(tl.int16)
    bits = ((c & 8) << 12) | ((c & 7) << 9)
    return bits.to(tl.float16, bitcast=True).to(tl.float32) * 16384.0


@triton.jit
def _e4m3_to_f32(raw):
    b = raw.to(tl.int16)
    bits = ((b & 0x80) << 8) | ((b & 0x7F) << 7)
    return bits.to(tl.float16, bitcast=True).to(tl.float32) * 256.0


@triton.jit
def _global_scale(G, RECIPROCAL: tl.constexpr):
    g = tl.load(G).to(tl.float32)
    if RECIPROCAL:
        g = 1.0 / g
    return g


@triton.jit
def _weight_tile(W, S, offs_n, n_mask, k0, KH, stride_wn, stride_sn, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_DTYPE: tl.constexpr):
    """(low, high): the even- and odd-column weight values of a [BLOCK_N, BLOCK_K] tile, scaled by their
    block scales (exact), as [BLOCK_N, BLOCK_K // 2] tiles of DOT_DTYPE."""
    offs_h = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    h_mask = offs_h < KH
    packed = tl.load(W + offs_n[:, None] * stride_wn + offs_h[None, :], mask=n_mask[:, None] & h_mask[None, :], other=0)
    offs_g = k0 // 16 + tl.arange(0, BLOCK_K // 16)
    g_mask = offs_g < KH // 8
    raw = tl.load(S + offs_n[:, None] * stride_sn + offs_g[None, :], mask=n_mask[:, None] & g_mask[None, :], other=0)
    scale = _e4m3_to_f32(raw)[:, :, None]
    low = tl.reshape(_e2m1_to_f32(packed & 15), (BLOCK_N, BLOCK_K // 16, 8)) * scale
    high = tl.reshape(_e2m1_to_f32(packed >> 4), (BLOCK_N, BLOCK_K // 16, 8)) * scale
    low = tl.reshape(low, (BLOCK_N, BLOCK_K // 2)).to(DOT_DTYPE)
    high = tl.reshape(high, (BLOCK_N, BLOCK_K // 2)).to(DOT_DTYPE)
    return low, high


@triton.jit
def _gemm_kernel(
    X, W, S, G, B, Y, P,
    M, N, K, KH, K_PER_SPLIT,
    stride_xm, stride_ym, stride_wn, stride_sn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, RECIPROCAL: tl.constexpr, DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    offs_h = tl.arange(0, BLOCK_K // 2)
    x_rows = X + offs_m.to(tl.int64)[:, None] * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_begin = pid_k * K_PER_SPLIT
    for k0 in range(k_begin, k_begin + K_PER_SPLIT, BLOCK_K):
        low, high = _weight_tile(W, S, offs_n, n_mask, k0, KH, stride_wn, stride_sn, BLOCK_N, BLOCK_K, DOT_DTYPE)
        k_even = k0 + 2 * offs_h
        xe = tl.load(x_rows + k_even[None, :], mask=m_mask[:, None] & (k_even < K)[None, :], other=0.0).to(DOT_DTYPE)
        xo = tl.load(x_rows + (k_even + 1)[None, :], mask=m_mask[:, None] & (k_even + 1 < K)[None, :], other=0.0).to(DOT_DTYPE)
        if IEEE:
            acc = tl.dot(xe, tl.trans(low), acc, input_precision="ieee")
            acc = tl.dot(xo, tl.trans(high), acc, input_precision="ieee")
        else:
            acc = tl.dot(xe, tl.trans(low), acc)
            acc = tl.dot(xo, tl.trans(high), acc)
    mask = m_mask[:, None] & n_mask[None, :]
    if SPLIT_K == 1:
        out = acc * _global_scale(G, RECIPROCAL)
        if HAS_BIAS:
            out += tl.load(B + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(Y + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :], out.to(Y.dtype.element_ty), mask=mask)
    else:
        part = P + pid_k * M * N + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
        tl.store(part, acc, mask=mask)


@triton.jit
def _splitk_reduce_kernel(
    P, G, B, Y, M, N, stride_ym,
    SPLIT_K: tl.constexpr, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr, RECIPROCAL: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < M * N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(SPLIT_K):
        acc += tl.load(P + s * M * N + offs, mask=mask, other=0.0)
    acc = acc * _global_scale(G, RECIPROCAL)
    row = offs // N
    col = offs % N
    if HAS_BIAS:
        acc += tl.load(B + col, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row.to(tl.int64) * stride_ym + col, acc.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _moe_kernel(
    X, W, S, G, Y, TILE_EXPERT, ROW_MAP,
    N, K, KH, E, TOPK,
    stride_xm, stride_ym, stride_we, stride_wn, stride_se, stride_sn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PER_PAIR: tl.constexpr, RECIPROCAL: tl.constexpr, DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = tl.load(TILE_EXPERT + pid_t).to(tl.int64)
    if (expert < 0) | (expert >= E):
        return
    offs_r = tl.arange(0, BLOCK_M)
    if PER_PAIR:  # one (token, slot) pair per tile: the tile index is the pair index
        pairs = pid_t + offs_r * 0
        r_mask = offs_r == 0
    else:
        pairs = tl.load(ROW_MAP + pid_t * BLOCK_M + offs_r)
        r_mask = pairs >= 0
        pairs = tl.where(r_mask, pairs, 0)
    tokens = (pairs // TOPK).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    offs_h = tl.arange(0, BLOCK_K // 2)
    x_rows = X + tokens[:, None] * stride_xm
    w_e = W + expert * stride_we
    s_e = S + expert * stride_se
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, 2 * KH, BLOCK_K):
        low, high = _weight_tile(w_e, s_e, offs_n, n_mask, k0, KH, stride_wn, stride_sn, BLOCK_N, BLOCK_K, DOT_DTYPE)
        k_even = k0 + 2 * offs_h
        xe = tl.load(x_rows + k_even[None, :], mask=r_mask[:, None] & (k_even < K)[None, :], other=0.0).to(DOT_DTYPE)
        xo = tl.load(x_rows + (k_even + 1)[None, :], mask=r_mask[:, None] & (k_even + 1 < K)[None, :], other=0.0).to(DOT_DTYPE)
        if IEEE:
            acc = tl.dot(xe, tl.trans(low), acc, input_precision="ieee")
            acc = tl.dot(xo, tl.trans(high), acc, input_precision="ieee")
        else:
            acc = tl.dot(xe, tl.trans(low), acc)
            acc = tl.dot(xo, tl.trans(high), acc)
    out = acc * _global_scale(G + expert, RECIPROCAL)
    y = Y + pairs.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
    tl.store(y, out.to(Y.dtype.element_ty), mask=r_mask[:, None] & n_mask[None, :])


@triton.jit
def _dequant_kernel(
    W, S, G, OUT, N, K, KH, stride_wn, stride_sn, stride_on,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, RECIPROCAL: tl.constexpr,
):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    k0 = tl.program_id(1) * BLOCK_K
    low, high = _weight_tile(W, S, offs_n, n_mask, k0, KH, stride_wn, stride_sn, BLOCK_N, BLOCK_K, tl.float32)
    g = _global_scale(G, RECIPROCAL)
    k_even = k0 + 2 * tl.arange(0, BLOCK_K // 2)
    rows = OUT + offs_n.to(tl.int64)[:, None] * stride_on
    tl.store(rows + k_even[None, :], (low * g).to(OUT.dtype.element_ty), mask=n_mask[:, None] & (k_even < K)[None, :])
    tl.store(rows + (k_even + 1)[None, :], (high * g).to(OUT.dtype.element_ty), mask=n_mask[:, None] & (k_even + 1 < K)[None, :])


# -- launchers (arguments already validated by hybridload.kernels.w4a16) ---------------------------------


def _dot_dtype(dtype: torch.dtype) -> tuple[object, bool]:
    return _TL_DTYPES[dtype], dtype == torch.float32


def gemm(
    x2: torch.Tensor, weight: torch.Tensor, scale_u8: torch.Tensor, gscale: torch.Tensor, bias: torch.Tensor | None,
    out: torch.Tensor, k: int, reciprocal: bool, config: dict,
) -> torch.Tensor:
    m, n = x2.shape[0], weight.shape[0]
    kh = weight.shape[1]
    block_m, block_n, block_k = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    split_k = config["SPLIT_K"]
    k_steps = triton.cdiv(2 * kh, block_k)
    split_k = max(1, min(split_k, k_steps))
    k_per_split = triton.cdiv(k_steps, split_k) * block_k
    split_k = triton.cdiv(2 * kh, k_per_split)
    partials = torch.empty((split_k, m, n), dtype=torch.float32, device=x2.device) if split_k > 1 else out
    dot_dtype, ieee = _dot_dtype(x2.dtype)
    grid = (triton.cdiv(n, block_n), split_k, triton.cdiv(m, block_m))
    with device_guard(x2):
        _gemm_kernel[grid](
            x2, weight, scale_u8, gscale, bias if bias is not None else out, out, partials,
            m, n, k, kh, k_per_split,
            x2.stride(0), out.stride(0), weight.stride(0), scale_u8.stride(0),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k,
            HAS_BIAS=bias is not None, RECIPROCAL=reciprocal, DOT_DTYPE=dot_dtype, IEEE=ieee,
            num_warps=config["num_warps"], num_stages=config["num_stages"],
        )
        if split_k > 1:
            block = 1024
            _splitk_reduce_kernel[(triton.cdiv(m * n, block),)](
                partials, gscale, bias if bias is not None else out, out, m, n, out.stride(0),
                SPLIT_K=split_k, BLOCK=block, HAS_BIAS=bias is not None, RECIPROCAL=reciprocal, num_warps=4,
            )
    return out


def moe(
    x2: torch.Tensor, weight: torch.Tensor, scale_u8: torch.Tensor, gscale: torch.Tensor, out: torch.Tensor,
    tile_expert: torch.Tensor, row_map: torch.Tensor | None, topk: int, k: int, reciprocal: bool, config: dict,
) -> torch.Tensor:
    e, n, kh = weight.shape
    block_m, block_n, block_k = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    dot_dtype, ieee = _dot_dtype(x2.dtype)
    grid = (tile_expert.shape[0], triton.cdiv(n, block_n))
    with device_guard(x2):
        _moe_kernel[grid](
            x2, weight, scale_u8, gscale, out, tile_expert, row_map if row_map is not None else tile_expert,
            n, k, kh, e, topk,
            x2.stride(0), out.stride(0), weight.stride(0), weight.stride(1), scale_u8.stride(0), scale_u8.stride(1),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PER_PAIR=row_map is None,
            RECIPROCAL=reciprocal, DOT_DTYPE=dot_dtype, IEEE=ieee,
            num_warps=config["num_warps"], num_stages=config["num_stages"],
        )
    return out


def dequantize(
    weight: torch.Tensor, scale_u8: torch.Tensor, gscale: torch.Tensor, out: torch.Tensor, k: int, reciprocal: bool
) -> torch.Tensor:
    n, kh = weight.shape
    block_n, block_k = 32, 256
    grid = (triton.cdiv(n, block_n), triton.cdiv(2 * kh, block_k))
    with device_guard(weight):
        _dequant_kernel[grid](
            weight, scale_u8, gscale, out, n, k, kh, weight.stride(0), scale_u8.stride(0), out.stride(0),
            BLOCK_N=block_n, BLOCK_K=block_k, RECIPROCAL=reciprocal, num_warps=4,
        )
    return out
