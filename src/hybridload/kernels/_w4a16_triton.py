"""Triton kernels behind :mod:`hybridload.kernels.w4a16` (imports triton; load it lazily).

NVFP4 weights stay packed in GPU memory; each kernel decodes them on the fly. The decode kernels read the
packed weight as 64-bit words, one per 16-input scale group, and are bound by how few instructions turn a
word into arithmetic:

* on sm_89+ inline PTX maps an e2m1 nibble ``s e e m`` to the e4m3 byte ``s 0 0 e e m 0 0``, which is the
  code's value times 2^-6 exactly (e4m3 has subnormals where e2m1 has them, so 0.5 is exact too), with two
  shifts and masks per four codes; the hardware's ``cvt.rn.f16x2.e4m3x2`` widens two codes at a time;
* code x block scale x 2^-6 has at most 6 significant bits and lies in [2^-16, 42]: exact in fp16, so the
  tensor-core kernel's fp16 A tile is the exact weight up to the per-tensor scale and a power of two;
* older GPUs and Triton's CPU interpreter take the same arithmetic in plain Triton (``ASM=False``).

Kernels:

* ``_gemv_kernel`` -- one row (decode) or one routed (token, expert) pair per program row: the 16 products of
  a group are summed on CUDA cores (as fp16x2 for 16-bit inputs, ``F16_DOT``; in fp32 for fp32 inputs) and
  multiplied by the group's scale once, groups accumulating in fp32;
* ``_mma_gemv_kernel`` -- up to 16 rows: the decoded fp16 tile is the A operand of ``tl.dot`` (wgmma on
  Hopper), x^T scaled by 2^-4 into fp16 is B, fp32 accumulation;
* ``_splitk_reduce_kernel`` -- sums the fp32 partials of a split-K launch, applies the per-tensor scale, bias;
* ``_dequant16_kernel`` -- the whole weight to bf16/fp16/fp32 with vectorised stores, for long prefills
  handed to cuBLAS; in fp32 it is bit-exact against the reference (code x (block scale x per-tensor scale));
* byte-wise kernels for a packed weight whose storage is not 16-byte aligned: ``_gemm_kernel`` (skinny
  tensor-core GEMM, value x block scale exact in the dot dtype), ``_moe_kernel`` (grouped MoE: each program
  reads its expert id from device memory, so only active experts are read and no host sync happens; also
  the path for many routed pairs), ``_dequant_kernel``.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from triton.compiler import CompiledKernel

from ._runtime import device_guard

_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}

# one 32-bit word (byte j: code 2j in the low nibble, 2j + 1 in the high one) -> {lo}: e4m3 bytes of codes 0, 2, 4,
# 6 and {hi}: of codes 1, 3, 5, 7; each e4m3 byte is the code's value times 2^-6
_E4M3_SPLIT = """
    shr.b32 t, {w}, 2;
    and.b32 t, t, 0x1C1C1C1C;
    and.b32 {hi}, {w}, 0x80808080;
    or.b32 {hi}, {hi}, t;
    shl.b32 t, {w}, 2;
    and.b32 t, t, 0x1C1C1C1C;
    shl.b32 u, {w}, 4;
    and.b32 u, u, 0x80808080;
    or.b32 {lo}, t, u;
"""
_WIDEN_TO_F32 = """
    mov.b32 {{l0, l1}}, lo;
    mov.b32 {{h0, h1}}, hi;
    cvt.rn.f16x2.e4m3x2 f0, l0;
    cvt.rn.f16x2.e4m3x2 f1, l1;
    cvt.rn.f16x2.e4m3x2 f2, h0;
    cvt.rn.f16x2.e4m3x2 f3, h1;
    mov.b32 {{v0, v1}}, f0;
    mov.b32 {{v2, v3}}, f1;
    mov.b32 {{v4, v5}}, f2;
    mov.b32 {{v6, v7}}, f3;
    cvt.f32.f16 ${o0}, v0;
    cvt.f32.f16 ${o2}, v1;
    cvt.f32.f16 ${o4}, v2;
    cvt.f32.f16 ${o6}, v3;
    cvt.f32.f16 ${o1}, v4;
    cvt.f32.f16 ${o3}, v5;
    cvt.f32.f16 ${o5}, v6;
    cvt.f32.f16 ${o7}, v7;
"""


def _decode16_ptx() -> str:
    """One 64-bit word ($16) -> 16 fp32 outputs, code p of the word times 2^-6 in output p."""
    body = [" mov.b64 {w0, w1}, $16;"]
    for word, base in (("w0", 0), ("w1", 8)):
        body.append(_E4M3_SPLIT.format(w=word, lo="lo", hi="hi"))
        body.append(_WIDEN_TO_F32.format(**{f"o{i}": base + i for i in range(8)}))
    regs = " .reg .b32 w0, w1, t, u, lo, hi, f0, f1, f2, f3;\n .reg .b16 l0, l1, h0, h1, v0, v1, v2, v3, v4, v5, v6, v7;\n"
    return "{\n" + regs + "\n".join(body) + "\n}"


_DECODE16_PTX = tl.constexpr(_decode16_ptx())
_DECODE16_CONSTRAINTS = tl.constexpr("=r," * 16 + "l")

_PAIR = """
    prmt.b32 p, {a}, {b}, {sel};
    mov.b32 {{x, y}}, p;
    cvt.rn.f16x2.e4m3x2 ${o0}, x;
    cvt.rn.f16x2.e4m3x2 ${o1}, y;
    mul.rn.f16x2 ${o0}, ${o0}, $18;
    mul.rn.f16x2 ${o1}, ${o1}, $18;
"""


def _decode_pairs_ptx() -> str:
    """Two 64-bit words A, B ($16, $17) and their two fp16 block scales ($18, one f16x2) -> 16 f16x2 outputs:
    output p holds code p of A and of B, each times its block scale and 2^-6 (exact in fp16)."""
    body = [" mov.b64 {a0, a1}, $16;", " mov.b64 {b0, b1}, $17;"]
    for word in ("a0", "a1", "b0", "b1"):
        body.append(_E4M3_SPLIT.format(w=word, lo="l" + word, hi="h" + word))
    for half, base in ((0, 0), (1, 8)):
        a, b = f"a{half}", f"b{half}"
        body.append(_PAIR.format(a="l" + a, b="l" + b, sel="0x5140", o0=base + 0, o1=base + 2))  # codes 0, 2
        body.append(_PAIR.format(a="l" + a, b="l" + b, sel="0x7362", o0=base + 4, o1=base + 6))  # codes 4, 6
        body.append(_PAIR.format(a="h" + a, b="h" + b, sel="0x5140", o0=base + 1, o1=base + 3))  # codes 1, 3
        body.append(_PAIR.format(a="h" + a, b="h" + b, sel="0x7362", o0=base + 5, o1=base + 7))  # codes 5, 7
    regs = " .reg .b32 a0, a1, b0, b1, t, u, p, la0, ha0, la1, ha1, lb0, hb0, lb1, hb1;\n .reg .b16 x, y;\n"
    return "{\n" + regs + "\n".join(body) + "\n}"


# with pack=2 each asm call sees two words and two scales, and each f16 output register holds two values
_DECODE_PAIRS_PTX = tl.constexpr(_decode_pairs_ptx())
_DECODE_PAIRS_CONSTRAINTS = tl.constexpr("=r," * 16 + "l,l,r")


_HALF_DOT = """
    prmt.b32 p, lo, hi, 0x5140;
    mov.b32 {{c0, c1}}, p;
    cvt.rn.f16x2.e4m3x2 v, c0;
    {first}.rn.f16x2 acc, v, {x0}{acc};
    cvt.rn.f16x2.e4m3x2 v, c1;
    fma.rn.f16x2 acc, v, {x1}, acc;
    prmt.b32 p, lo, hi, 0x7362;
    mov.b32 {{c0, c1}}, p;
    cvt.rn.f16x2.e4m3x2 v, c0;
    fma.rn.f16x2 acc, v, {x2}, acc;
    cvt.rn.f16x2.e4m3x2 v, c1;
    fma.rn.f16x2 acc, v, {x3}, acc;
"""


def _group_dot_f16_ptx() -> str:
    """One 64-bit word of codes ($1) and the group's 16 fp16 inputs, four to a 64-bit word in memory order
    ($2..$5) -> $0: the fp32 sum of the 16 products (code x 2^-6 x input), accumulated as fp16x2 on CUDA cores.

    ``prmt`` interleaves the split's even- and odd-code bytes back into memory order, so each e4m3 pair
    widens to the fp16x2 that multiplies the matching input pair."""
    body = [" mov.b64 {w0, w1}, $1;", " mov.b64 {x0, x1}, $2;", " mov.b64 {x2, x3}, $3;", " mov.b64 {x4, x5}, $4;",
            " mov.b64 {x6, x7}, $5;"]
    for word, xs in (("w0", ("x0", "x1", "x2", "x3")), ("w1", ("x4", "x5", "x6", "x7"))):
        body.append(_E4M3_SPLIT.format(w=word, lo="lo", hi="hi"))
        first = word == "w0"
        body.append(_HALF_DOT.format(first="mul" if first else "fma", acc="" if first else ", acc",
                                     x0=xs[0], x1=xs[1], x2=xs[2], x3=xs[3]))
    body.append(" mov.b32 {h0, h1}, acc;\n cvt.f32.f16 f0, h0;\n cvt.f32.f16 f1, h1;\n add.f32 $0, f0, f1;")
    regs = (" .reg .b32 w0, w1, t, u, lo, hi, p, v, acc, x0, x1, x2, x3, x4, x5, x6, x7;\n .reg .b16 c0, c1, h0, h1;\n"
            " .reg .f32 f0, f1;\n")
    return "{\n" + regs + "\n".join(body) + "\n}"


_GROUP_DOT_F16_PTX = tl.constexpr(_group_dot_f16_ptx())
_GROUP_DOT_F16_CONSTRAINTS = tl.constexpr("=r,l,l,l,l,l")


_PAIRS_IN_ORDER = """
    prmt.b32 p, lo, hi, 0x5140;
    mov.b32 {{c0, c1}}, p;
    cvt.rn.f16x2.e4m3x2 ${o0}, c0;
    cvt.rn.f16x2.e4m3x2 ${o1}, c1;
    prmt.b32 p, lo, hi, 0x7362;
    mov.b32 {{c0, c1}}, p;
    cvt.rn.f16x2.e4m3x2 ${o2}, c0;
    cvt.rn.f16x2.e4m3x2 ${o3}, c1;
"""


def _codes_f16x2_ptx() -> str:
    """One 64-bit word of codes ($8) -> $0..$7: its 16 codes x 2^-6 as fp16x2 pairs in memory order, the operands
    ``_group_dot_f16_ptx`` widens inline (so a dot of these pairs rounds as that one does)."""
    body = [" mov.b64 {w0, w1}, $8;"]
    for word, base in (("w0", 0), ("w1", 4)):
        body.append(_E4M3_SPLIT.format(w=word, lo="lo", hi="hi"))
        body.append(_PAIRS_IN_ORDER.format(o0=base, o1=base + 1, o2=base + 2, o3=base + 3))
    return "{\n .reg .b32 w0, w1, t, u, lo, hi, p;\n .reg .b16 c0, c1;\n" + "\n".join(body) + "\n}"


def _pairs_dot_f16_ptx() -> str:
    """8 fp16x2 code pairs ($1..$8, from ``_codes_f16x2_ptx``) and the group's 16 fp16 inputs ($9..$12) -> $0: the
    fp32 sum of the products, with ``_group_dot_f16_ptx``'s operations in its order (the same bits)."""
    body = [" mov.b64 {x0, x1}, $9;", " mov.b64 {x2, x3}, $10;", " mov.b64 {x4, x5}, $11;", " mov.b64 {x6, x7}, $12;",
            " mul.rn.f16x2 acc, $1, x0;"]
    body += [f" fma.rn.f16x2 acc, ${i + 1}, x{i}, acc;" for i in range(1, 8)]
    body.append(" mov.b32 {h0, h1}, acc;\n cvt.f32.f16 f0, h0;\n cvt.f32.f16 f1, h1;\n add.f32 $0, f0, f1;")
    regs = " .reg .b32 acc, x0, x1, x2, x3, x4, x5, x6, x7;\n .reg .b16 h0, h1;\n .reg .f32 f0, f1;\n"
    return "{\n" + regs + "\n".join(body) + "\n}"


_CODES_F16X2_PTX = tl.constexpr(_codes_f16x2_ptx())
_CODES_F16X2_CONSTRAINTS = tl.constexpr("=r," * 8 + "l")
_PAIRS_DOT_F16_PTX = tl.constexpr(_pairs_dot_f16_ptx())
_PAIRS_DOT_F16_CONSTRAINTS = tl.constexpr("=r," + "r," * 8 + "l,l,l,l")


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
def _store_output(total, y_ptrs, mask, bias_ptrs, bias_mask, G, HAS_BIAS: tl.constexpr, RECIPROCAL: tl.constexpr,
                  BIAS_COLUMN: tl.constexpr):
    """``total`` x per-tensor scale + bias, stored at ``y_ptrs`` in the output's dtype. BIAS_COLUMN: the outputs
    run along dim 0 (the tensor-core kernel's transposed tile)."""
    out = total * _global_scale(G, RECIPROCAL)
    if HAS_BIAS:
        bias = tl.load(bias_ptrs, mask=bias_mask, other=0.0).to(tl.float32)
        if BIAS_COLUMN:
            bias = bias[:, None]
        out += bias
    tl.store(y_ptrs, out.to(y_ptrs.dtype.element_ty), mask=mask)


@triton.jit
def _write_result(total, y_ptrs, p_ptrs, split_stride, C, mask, bias_ptrs, bias_mask, G,
                  SPLIT_K: tl.constexpr, SERIAL: tl.constexpr, HAS_BIAS: tl.constexpr, RECIPROCAL: tl.constexpr,
                  BIAS_COLUMN: tl.constexpr = False):
    """Write a decode program's fp32 sums ``total`` (elements at ``y_ptrs`` of the output).

    K unsplit: to the output (``_store_output``). K split: to this split's slot of the fp32 partials (``p_ptrs``
    is slot 0, slots ``split_stride`` apart); a reduce launch sums them, or with SERIAL the last of the tile's
    SPLIT_K programs to arrive does, in split order (the reduce kernel's order: the same bits). The tile's
    arrival counter in ``C`` (one per (program row, program column)) is zero at launch and is left zero (serial
    split-K with a self-resetting semaphore, as CUTLASS does): the CTA's partial stores are ordered before one
    thread's release-add by a barrier; the last arrival's acquire orders its L1-bypassing (``.cg``) loads of the
    other partials after."""
    if SPLIT_K == 1:
        _store_output(total, y_ptrs, mask, bias_ptrs, bias_mask, G, HAS_BIAS, RECIPROCAL, BIAS_COLUMN)
    else:
        pid_k = tl.program_id(2)
        tl.store(p_ptrs + pid_k.to(tl.int64) * split_stride, total, mask=mask)
        if SERIAL:
            counter = C + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
            tl.debug_barrier()
            arrived = tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu")
            if arrived == SPLIT_K - 1:
                tl.debug_barrier()  # the acquire (one thread) before any thread's loads of the other partials
                tl.store(counter, 0)
                acc = tl.load(p_ptrs, mask=mask, other=0.0, cache_modifier=".cg")
                for s in tl.static_range(1, SPLIT_K):
                    acc += tl.load(p_ptrs + s * split_stride, mask=mask, other=0.0, cache_modifier=".cg")
                _store_output(acc, y_ptrs, mask, bias_ptrs, bias_mask, G, HAS_BIAS, RECIPROCAL, BIAS_COLUMN)


@triton.jit
def _weight_tile(W, S, offs_n, n_mask, k0, KH, stride_wn, stride_sn, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 DOT_DTYPE: tl.constexpr, scale_factor=1.0):
    """(low, high): the even- and odd-column weight values of a [BLOCK_N, BLOCK_K] tile, scaled by their
    block scales (exact) times ``scale_factor``, as [BLOCK_N, BLOCK_K // 2] tiles of DOT_DTYPE."""
    offs_h = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    h_mask = offs_h < KH
    packed = tl.load(W + offs_n[:, None] * stride_wn + offs_h[None, :], mask=n_mask[:, None] & h_mask[None, :], other=0)
    offs_g = k0 // 16 + tl.arange(0, BLOCK_K // 16)
    g_mask = offs_g < KH // 8
    raw = tl.load(S + offs_n[:, None] * stride_sn + offs_g[None, :], mask=n_mask[:, None] & g_mask[None, :], other=0)
    scale = (_e4m3_to_f32(raw) * scale_factor)[:, :, None]
    low = tl.reshape(_e2m1_to_f32(packed & 15), (BLOCK_N, BLOCK_K // 16, 8)) * scale
    high = tl.reshape(_e2m1_to_f32(packed >> 4), (BLOCK_N, BLOCK_K // 16, 8)) * scale
    low = tl.reshape(low, (BLOCK_N, BLOCK_K // 2)).to(DOT_DTYPE)
    high = tl.reshape(high, (BLOCK_N, BLOCK_K // 2)).to(DOT_DTYPE)
    return low, high


@triton.jit
def _bytewise_step(W, S, x_rows, row_mask, offs_n, n_mask, offs_h, k0, KH, K, stride_wn, stride_sn, acc,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_DTYPE: tl.constexpr, IEEE: tl.constexpr):
    """acc + x[:, k0 : k0 + BLOCK_K] @ W-tile.T: the low / high nibble tiles dotted with the even / odd inputs."""
    low, high = _weight_tile(W, S, offs_n, n_mask, k0, KH, stride_wn, stride_sn, BLOCK_N, BLOCK_K, DOT_DTYPE)
    k_even = k0 + 2 * offs_h
    xe = tl.load(x_rows + k_even[None, :], mask=row_mask[:, None] & (k_even < K)[None, :], other=0.0).to(DOT_DTYPE)
    xo = tl.load(x_rows + (k_even + 1)[None, :], mask=row_mask[:, None] & (k_even + 1 < K)[None, :], other=0.0).to(DOT_DTYPE)
    if IEEE:
        acc = tl.dot(xe, tl.trans(low), acc, input_precision="ieee")
        acc = tl.dot(xo, tl.trans(high), acc, input_precision="ieee")
    else:
        acc = tl.dot(xe, tl.trans(low), acc)
        acc = tl.dot(xo, tl.trans(high), acc)
    return acc


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
        acc = _bytewise_step(W, S, x_rows, m_mask, offs_n, n_mask, offs_h, k0, KH, K, stride_wn, stride_sn, acc,
                             BLOCK_N, BLOCK_K, DOT_DTYPE, IEEE)
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
        acc = _bytewise_step(w_e, s_e, x_rows, r_mask, offs_n, n_mask, offs_h, k0, KH, K, stride_wn, stride_sn, acc,
                             BLOCK_N, BLOCK_K, DOT_DTYPE, IEEE)
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
    g = _global_scale(G, RECIPROCAL)  # code x (scale x global): the reference's rounding
    low, high = _weight_tile(W, S, offs_n, n_mask, k0, KH, stride_wn, stride_sn, BLOCK_N, BLOCK_K, tl.float32, g)
    k_even = k0 + 2 * tl.arange(0, BLOCK_K // 2)
    rows = OUT + offs_n.to(tl.int64)[:, None] * stride_on
    tl.store(rows + k_even[None, :], low.to(OUT.dtype.element_ty), mask=n_mask[:, None] & (k_even < K)[None, :])
    tl.store(rows + (k_even + 1)[None, :], high.to(OUT.dtype.element_ty), mask=n_mask[:, None] & (k_even + 1 < K)[None, :])


@triton.jit
def _code(w, p: tl.constexpr):
    """Code ``p`` (0..15) of each 64-bit word as fp32, times 2^-6 (plain Triton; what the PTX computes)."""
    c = ((w >> (4 * p)) & 15).to(tl.int16)
    bits = ((c & 8) << 12) | ((c & 7) << 9)
    return bits.to(tl.float16, bitcast=True).to(tl.float32) * 256.0


@triton.jit
def _decode16(w, ASM: tl.constexpr):
    """The 16 codes of each 64-bit word (one scale group) as 16 fp32 tensors, each the code's value x 2^-6."""
    if ASM:
        return tl.inline_asm_elementwise(
            _DECODE16_PTX, _DECODE16_CONSTRAINTS, [w], dtype=(tl.float32,) * 16, is_pure=True, pack=1
        )
    else:
        return (_code(w, 0), _code(w, 1), _code(w, 2), _code(w, 3), _code(w, 4), _code(w, 5), _code(w, 6), _code(w, 7),
                _code(w, 8), _code(w, 9), _code(w, 10), _code(w, 11), _code(w, 12), _code(w, 13), _code(w, 14), _code(w, 15))


@triton.jit
def _scaled_codes_f16(w, scale_f16, ASM: tl.constexpr):
    """The 16 codes of each word times its fp16 block scale and 2^-6, as 16 fp16 tensors (exact)."""
    if ASM:
        return tl.inline_asm_elementwise(
            _DECODE_PAIRS_PTX, _DECODE_PAIRS_CONSTRAINTS, [w, scale_f16], dtype=(tl.float16,) * 16, is_pure=True, pack=2
        )
    else:
        s = scale_f16.to(tl.float32)
        return ((_code(w, 0) * s).to(tl.float16), (_code(w, 1) * s).to(tl.float16), (_code(w, 2) * s).to(tl.float16),
                (_code(w, 3) * s).to(tl.float16), (_code(w, 4) * s).to(tl.float16), (_code(w, 5) * s).to(tl.float16),
                (_code(w, 6) * s).to(tl.float16), (_code(w, 7) * s).to(tl.float16), (_code(w, 8) * s).to(tl.float16),
                (_code(w, 9) * s).to(tl.float16), (_code(w, 10) * s).to(tl.float16), (_code(w, 11) * s).to(tl.float16),
                (_code(w, 12) * s).to(tl.float16), (_code(w, 13) * s).to(tl.float16), (_code(w, 14) * s).to(tl.float16),
                (_code(w, 15) * s).to(tl.float16))


@triton.jit
def _expert_operands(expert, W, S, G, stride_we, stride_se):
    """The words, scales and per-tensor scale of one expert of the stacked (E, N, ...) operands."""
    return W + expert * stride_we, S + expert * stride_se, G + expert


@triton.jit
def _row_stream(W, S, pid_n, pid_k, N, KG, G_PER_SPLIT, stride_wn, stride_sn, BLOCK_N: tl.constexpr):
    """A decode program's BLOCK_N weight rows (offsets, mask, word and scale row pointers) and its K range in
    groups [g_begin, g_end)."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    w_rows = W + offs_n.to(tl.int64)[:, None] * stride_wn
    s_rows = S + offs_n.to(tl.int64)[:, None] * stride_sn
    g_begin = pid_k * G_PER_SPLIT
    g_end = tl.minimum(g_begin + G_PER_SPLIT, KG)
    return offs_n, n_mask, w_rows, s_rows, g_begin, g_end


@triton.jit
def _step_tiles(w_rows, s_rows, n_mask, offs_g, g_end):
    """The [BLOCK_N, BLOCK_G] words and raw e4m3 scale bytes of groups ``offs_g`` (zero past ``g_end``)."""
    mask = n_mask[:, None] & (offs_g < g_end)[None, :]
    return (tl.load(w_rows + offs_g[None, :], mask=mask, other=0),
            tl.load(s_rows + offs_g[None, :], mask=mask, other=0))


@triton.jit
def _interleave16(d, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr):
    """16 [BLOCK_N, BLOCK_G] tensors (code p of each group) -> [BLOCK_N, 16 BLOCK_G], code p of group g at 16 g + p."""
    q0 = tl.join(d[0], d[8])
    q1 = tl.join(d[1], d[9])
    q2 = tl.join(d[2], d[10])
    q3 = tl.join(d[3], d[11])
    q4 = tl.join(d[4], d[12])
    q5 = tl.join(d[5], d[13])
    q6 = tl.join(d[6], d[14])
    q7 = tl.join(d[7], d[15])
    r0 = tl.join(q0, q4)
    r1 = tl.join(q1, q5)
    r2 = tl.join(q2, q6)
    r3 = tl.join(q3, q7)
    return tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (BLOCK_N, BLOCK_G * 16))


@triton.jit
def _follow_previous_kernel(PDL: tl.constexpr):
    """Programmatic dependent launch: let the stream's next PDL launch schedule its programs now (they too wait
    here), then wait until the previous kernel has finished and its writes are visible. Before the wait a
    kernel reads at most the weight's words and scales (parameters: no kernel of a forward writes them); its
    input, routing ids, output, partials and counters only after, so it sees what a plainly ordered launch
    would."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()


@triton.jit
def _mma_gemv_kernel(
    X, W, S, G, B, Y, P, C, IDS,
    M, N, K, KG, G_PER_SPLIT, TOPK, E,
    stride_xm, stride_ym, stride_we, stride_wn, stride_se, stride_sn,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, SPLIT_K: tl.constexpr, SERIAL: tl.constexpr, PREFETCH: tl.constexpr,
    MOE: tl.constexpr, HAS_BIAS: tl.constexpr, RECIPROCAL: tl.constexpr, ASM: tl.constexpr, PDL: tl.constexpr = False,
):
    """y[m] = x[m] @ dequant(W).T for up to 16 rows on tensor cores: the packed tile is decoded to fp16 in
    registers (code x block scale x 2^-6, exact) and is the MMA's A operand; x^T (x 2^-4 in fp16, its rows
    padded to 16) is B; fp32 accumulation. MOE: one routed (token, expert) pair per program row."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    _follow_previous_kernel(PDL)
    offs_r = tl.arange(0, 16)
    if MOE:
        expert = tl.load(IDS + pid_m).to(tl.int64)
        if (expert < 0) | (expert >= E):  # a padded or dropped slot
            return
        W, S, G = _expert_operands(expert, W, S, G, stride_we, stride_se)
        x_rows = X + (pid_m // TOPK).to(tl.int64) * stride_xm + offs_r * 0
        out_rows = pid_m + offs_r * 0
        r_mask = offs_r == 0
    else:
        out_rows = pid_m * 16 + offs_r
        r_mask = out_rows < M
        x_rows = X + out_rows.to(tl.int64) * stride_xm
    offs_n, n_mask, w_rows, s_rows, g_begin, g_end = _row_stream(W, S, pid_n, pid_k, N, KG, G_PER_SPLIT,
                                                                 stride_wn, stride_sn, BLOCK_N)
    acc = tl.zeros((BLOCK_N, 16), dtype=tl.float32)
    if PREFETCH:
        w_next, s_next = _step_tiles(w_rows, s_rows, n_mask, g_begin + tl.arange(0, BLOCK_G), g_end)
    for g0 in range(g_begin, g_end, BLOCK_G):
        offs_g = g0 + tl.arange(0, BLOCK_G)
        if PREFETCH:  # this step's tiles were loaded last step; the next step's are in flight meanwhile
            w = w_next
            s = s_next
            w_next, s_next = _step_tiles(w_rows, s_rows, n_mask, offs_g + BLOCK_G, g_end)
        else:
            w, s = _step_tiles(w_rows, s_rows, n_mask, offs_g, g_end)
        s = s.to(tl.float8e4nv, bitcast=True).to(tl.float16)
        a = _interleave16(_scaled_codes_f16(w, s, ASM), BLOCK_N, BLOCK_G)
        k = g0 * 16 + tl.arange(0, BLOCK_G * 16)
        xr = tl.load(x_rows[:, None] + k[None, :], mask=r_mask[:, None] & (k < K)[None, :], other=0.0)
        b = tl.trans((xr.to(tl.float32) * 0.0625).to(tl.float16))
        acc = tl.dot(a, b, acc)
    acc = acc * 1024.0  # the decode's 2^-6 and the input's 2^-4
    mask = n_mask[:, None] & r_mask[None, :]
    rows = out_rows.to(tl.int64)[None, :]
    _write_result(acc, Y + rows * stride_ym + offs_n[:, None], P + rows * N + offs_n[:, None], M * N,
                  C, mask, B + offs_n, n_mask, G, SPLIT_K, SERIAL, HAS_BIAS, RECIPROCAL, BIAS_COLUMN=True)


@triton.jit
def _split16(x):
    """[R, 16] -> the 16 columns as [R] tensors, in order."""
    R: tl.constexpr = x.shape[0]
    x = tl.reshape(x, (R, 2, 2, 2, 2))
    a, b = tl.split(x)
    a0, a1 = tl.split(a)
    b0, b1 = tl.split(b)
    a00, a01 = tl.split(a0)
    a10, a11 = tl.split(a1)
    b00, b01 = tl.split(b0)
    b10, b11 = tl.split(b1)
    p0, p8 = tl.split(a00)
    p4, p12 = tl.split(a01)
    p2, p10 = tl.split(a10)
    p6, p14 = tl.split(a11)
    p1, p9 = tl.split(b00)
    p5, p13 = tl.split(b01)
    p3, p11 = tl.split(b10)
    p7, p15 = tl.split(b11)
    return p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15


@triton.jit
def _input_tile(x_row, offs_g, k_limit):
    """[BLOCK_G, 16] in x's dtype: the inputs of groups ``offs_g`` (0 at or past ``k_limit``: K's padding)."""
    k = offs_g[:, None] * 16 + tl.arange(0, 16)[None, :]
    return tl.load(x_row + k, mask=k < k_limit, other=0.0)


@triton.jit
def _group_dot(d, xg, F16_INPUTS: tl.constexpr = False):
    """Per (weight row, group): sum over the group's 16 inputs ``xg`` ([BLOCK_G, 16]) of code x input, in fp32.
    F16_INPUTS: the inputs x 2^-4 rounded to fp16 first, as the fp16x2 path sees them."""
    xg = xg.to(tl.float32)
    if F16_INPUTS:
        xg = (xg * 0.0625).to(tl.float16).to(tl.float32)
    x = _split16(xg)
    t = d[0] * x[0][None, :]
    for p in tl.static_range(1, 16):
        t += d[p] * x[p][None, :]
    return t


@triton.jit
def _input_words_f16(xg):
    """Each group's 16 inputs x 2^-4 rounded to fp16, four to an int64 word in memory order: 4 [BLOCK_G] tensors.

    Built once per step on the small [BLOCK_G, 16] input tile, so the per-(row, group) PTX reads ready pairs."""
    xg = xg.to(tl.float32) * 0.0625
    bits = xg.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int64) & 0xFFFF
    R: tl.constexpr = bits.shape[0]
    lo, hi = tl.split(tl.reshape(bits, (R, 4, 2, 2)))
    pairs = lo | (hi << 16)  # (R, 4, 2): the fp16 pair of inputs 4i + 2j, 4i + 2j + 1
    p0, p1 = tl.split(pairs)
    even, odd = tl.split(tl.reshape(p0 | (p1 << 32), (R, 2, 2)))  # word i = 2a + b: even b = 0, odd b = 1
    w0, w2 = tl.split(even)
    w1, w3 = tl.split(odd)
    return w0, w1, w2, w3


@triton.jit
def _group_dot_f16(w, xg, ASM: tl.constexpr):
    """Per (weight row, group): sum of code x 2^-6 x (input x 2^-4 in fp16) over the group's 16 inputs ``xg``.
    With ASM the products accumulate as fp16x2 (8 per lane) and the two lanes are added in fp32; without, the
    same fp16 inputs are summed in fp32."""
    if ASM:
        x0, x1, x2, x3 = _input_words_f16(xg)
        return tl.inline_asm_elementwise(
            _GROUP_DOT_F16_PTX, _GROUP_DOT_F16_CONSTRAINTS, [w, x0[None, :], x1[None, :], x2[None, :], x3[None, :]],
            dtype=tl.float32, is_pure=True, pack=1,
        )
    else:
        return _group_dot(_decode16(w, False), xg, True)


@triton.jit
def _decoded_step(w, s, ASM: tl.constexpr):
    """A step's words decoded ahead of its inputs (``DECODE_AHEAD``), with its block scales in fp32: with ASM 8
    fp16x2 pairs per word (``_codes_f16x2_ptx``), without the 16 fp32 codes of ``_decode16``."""
    if ASM:
        pairs = tl.inline_asm_elementwise(
            _CODES_F16X2_PTX, _CODES_F16X2_CONSTRAINTS, [w], dtype=(tl.int32,) * 8, is_pure=True, pack=1
        )
    else:
        pairs = _decode16(w, False)
    return pairs, s.to(tl.float8e4nv, bitcast=True).to(tl.float32)


@triton.jit
def _decoded_dot_f16(d, xg, ASM: tl.constexpr):
    """``_group_dot_f16`` of a step decoded by ``_decoded_step``: the same sums, the same bits."""
    if ASM:
        x0, x1, x2, x3 = _input_words_f16(xg)
        return tl.inline_asm_elementwise(
            _PAIRS_DOT_F16_PTX, _PAIRS_DOT_F16_CONSTRAINTS,
            [d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], x0[None, :], x1[None, :], x2[None, :], x3[None, :]],
            dtype=tl.float32, is_pure=True, pack=1,
        )
    else:
        return _group_dot(d, xg, True)


@triton.jit
def _gemv_kernel(
    X, W, S, G, B, Y, P, C, IDS,
    M, N, K, KG, G_PER_SPLIT, TOPK, E,
    stride_xm, stride_ym, stride_we, stride_wn, stride_se, stride_sn,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, SPLIT_K: tl.constexpr, SERIAL: tl.constexpr, PREFETCH: tl.constexpr,
    MOE: tl.constexpr, HAS_BIAS: tl.constexpr, RECIPROCAL: tl.constexpr, ASM: tl.constexpr, F16_DOT: tl.constexpr,
    PDL: tl.constexpr = False, DECODE_AHEAD: tl.constexpr = False,
):
    """y[m] = x[m] @ dequant(W).T, one row per program row (dense), or one routed (token, expert) pair (MOE).

    W is the packed weight viewed as int64 words, (E,) N x KG with KG = ceil(K/16): one word per scale group.
    Each program streams BLOCK_N weight rows over its K range once, PREFETCH steps of words and scales ahead
    in registers while the current step computes. DECODE_AHEAD (dense rows, F16_DOT): the steps loaded before
    ``_follow_previous_kernel`` are decoded before it too, so a short K range leaves little but the products
    after the wait."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    if MOE:
        _follow_previous_kernel(PDL)  # the expert ids are the router's output
        expert = tl.load(IDS + pid_m).to(tl.int64)
        if (expert < 0) | (expert >= E):  # a padded or dropped slot
            return
        W, S, G = _expert_operands(expert, W, S, G, stride_we, stride_se)
        x_row = X + (pid_m // TOPK).to(tl.int64) * stride_xm
    else:
        x_row = X + pid_m.to(tl.int64) * stride_xm
    offs_n, n_mask, w_rows, s_rows, g_begin, g_end = _row_stream(W, S, pid_n, pid_k, N, KG, G_PER_SPLIT,
                                                                 stride_wn, stride_sn, BLOCK_N)
    acc = tl.zeros((BLOCK_N, BLOCK_G), dtype=tl.float32)
    offs_g = g_begin + tl.arange(0, BLOCK_G)
    w_next, s_next = _step_tiles(w_rows, s_rows, n_mask, offs_g, g_end)
    if PREFETCH > 1:
        w_after, s_after = _step_tiles(w_rows, s_rows, n_mask, offs_g + BLOCK_G, g_end)
    g_loop = g_begin
    if DECODE_AHEAD:  # the first PREFETCH steps peeled off the loop and decoded now; the loop's first tiles loaded
        d0, s0 = _decoded_step(w_next, s_next, ASM)
        if PREFETCH > 1:
            d1, s1 = _decoded_step(w_after, s_after, ASM)
        g_loop = g_begin + PREFETCH * BLOCK_G
        w_next, s_next = _step_tiles(w_rows, s_rows, n_mask, g_loop + tl.arange(0, BLOCK_G), g_end)
        if PREFETCH > 1:
            w_after, s_after = _step_tiles(w_rows, s_rows, n_mask, g_loop + BLOCK_G + tl.arange(0, BLOCK_G), g_end)
    if not MOE:  # the first steps' words and scales are in flight (or decoded) while the previous kernel drains
        _follow_previous_kernel(PDL)
    if DECODE_AHEAD:
        k_end = tl.minimum(K, g_end * 16)  # a peeled step past this program's K range reads no input
        acc += _decoded_dot_f16(d0, _input_tile(x_row, g_begin + tl.arange(0, BLOCK_G), k_end), ASM) * s0
        if PREFETCH > 1:
            acc += _decoded_dot_f16(d1, _input_tile(x_row, g_begin + BLOCK_G + tl.arange(0, BLOCK_G), k_end), ASM) * s1
    for g0 in range(g_loop, g_end, BLOCK_G):
        offs_g = g0 + tl.arange(0, BLOCK_G)
        w = w_next
        s = s_next.to(tl.float8e4nv, bitcast=True).to(tl.float32)
        if PREFETCH > 1:
            w_next = w_after
            s_next = s_after
            w_after, s_after = _step_tiles(w_rows, s_rows, n_mask, offs_g + 2 * BLOCK_G, g_end)
        else:
            w_next, s_next = _step_tiles(w_rows, s_rows, n_mask, offs_g + PREFETCH * BLOCK_G, g_end)
        xg = _input_tile(x_row, offs_g, K)
        if F16_DOT:
            acc += _group_dot_f16(w, xg, ASM) * s
        else:
            acc += _group_dot(_decode16(w, ASM), xg) * s
    if F16_DOT:  # undo the decode's 2^-6 and the input's 2^-4
        total = tl.sum(acc, axis=1) * 1024.0
    else:
        total = tl.sum(acc, axis=1) * 64.0
    _write_result(total, Y + pid_m.to(tl.int64) * stride_ym + offs_n, P + pid_m.to(tl.int64) * N + offs_n, M * N,
                  C, n_mask, B + offs_n, n_mask, G, SPLIT_K, SERIAL, HAS_BIAS, RECIPROCAL)


@triton.jit
def _dequant16_kernel(
    W, S, G, OUT, N, K, KG, stride_wn, stride_sn, stride_on,
    BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, RECIPROCAL: tl.constexpr, ASM: tl.constexpr,
):
    """OUT[n, k] = code x scale x global, written 16 contiguous values per group (vectorised stores)."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_g = tl.program_id(1) * BLOCK_G + tl.arange(0, BLOCK_G)
    n_mask = offs_n < N
    mask = n_mask[:, None] & (offs_g < KG)[None, :]
    w = tl.load(W + offs_n.to(tl.int64)[:, None] * stride_wn + offs_g[None, :], mask=mask, other=0)
    s = tl.load(S + offs_n.to(tl.int64)[:, None] * stride_sn + offs_g[None, :], mask=mask, other=0)
    scale = s.to(tl.float8e4nv, bitcast=True).to(tl.float32) * (_global_scale(G, RECIPROCAL) * 64.0)
    d = _decode16(w, ASM)
    # join in the order that makes the reshape put code p of group g at column 16 g + p
    q0 = tl.join(d[0] * scale, d[8] * scale)
    q1 = tl.join(d[1] * scale, d[9] * scale)
    q2 = tl.join(d[2] * scale, d[10] * scale)
    q3 = tl.join(d[3] * scale, d[11] * scale)
    q4 = tl.join(d[4] * scale, d[12] * scale)
    q5 = tl.join(d[5] * scale, d[13] * scale)
    q6 = tl.join(d[6] * scale, d[14] * scale)
    q7 = tl.join(d[7] * scale, d[15] * scale)
    r0 = tl.join(q0, q4)
    r1 = tl.join(q1, q5)
    r2 = tl.join(q2, q6)
    r3 = tl.join(q3, q7)
    u0 = tl.join(r0, r2)
    u1 = tl.join(r1, r3)
    tile = tl.reshape(tl.join(u0, u1), (BLOCK_N, BLOCK_G * 16))
    cols = tl.program_id(1) * BLOCK_G * 16 + tl.arange(0, BLOCK_G * 16)
    out = OUT + offs_n.to(tl.int64)[:, None] * stride_on + cols[None, :]
    tl.store(out, tile.to(OUT.dtype.element_ty), mask=n_mask[:, None] & (cols < K)[None, :])


# -- launchers (arguments already validated by hybridload.kernels.w4a16) ---------------------------------

def _cdiv(a: int, b: int) -> int:
    """Ceiling division in plain Python (``triton.cdiv`` is a constexpr function: microseconds per host call)."""
    return -(-a // b)


#: compiled kernels by specialization key (see _launch); filled by the first launch of each specialization
_COMPILED: dict[tuple, tuple[object, tuple[str, ...]]] = {}


def _specialization(value: object) -> object:
    """What Triton specializes a launch argument on, or finer: a tensor's dtype and 16-byte alignment, an
    integer's width and whether it is 1 or a multiple of 16; other values by type."""
    kind = type(value)
    if kind is int:
        return value == 1, value % 16 == 0, -(2**31) <= value < 2**31
    if isinstance(value, torch.Tensor):
        return value.dtype, value.data_ptr() % 16 == 0
    return kind, value if kind is bool else None


def _launch(kernel, grid: tuple[int, ...], like: torch.Tensor, args: tuple, num_warps: int, num_stages: int | None = None,
            launch_pdl: bool = False, kept: list | None = None, **constexprs: object) -> None:
    """``kernel[grid](*args, **constexprs)`` on ``like``'s device. The first launch of a specialization goes
    through Triton's JIT, which compiles (or finds) the kernel; later launches call that compiled kernel
    directly, skipping Triton's per-call argument specialization and cache lookup (most of an eager call's host
    time: w4a16-launch-overhead-h100.md). The key holds all Triton specializes on (``_specialization`` of each
    argument), the constexprs, warps, stages, the launch attribute and the device, so a reused kernel is the one
    the JIT would pick. ``launch_pdl``: launch with programmatic stream serialization (the kernel must wait with
    ``griddepcontrol.wait`` before touching what a previous kernel may write: ``_follow_previous_kernel``).
    ``kept``: append ``(call, args)``, where ``call(*args)`` launches the same kernel on the same grid again (on
    the current stream of the current device): what a layer replays for the next input of the same layout."""
    with device_guard(like):
        key = (kernel, like.device.index, num_warps, num_stages, launch_pdl, tuple(constexprs.items()),
               tuple(_specialization(value) for value in args))
        entry = _COMPILED.get(key)
        if entry is None:
            options = {"num_warps": num_warps} if num_stages is None else {"num_warps": num_warps, "num_stages": num_stages}
            if launch_pdl:
                options["launch_pdl"] = True
            compiled = kernel[grid](*args, **constexprs, **options)
            if hasattr(compiled, "result"):  # an asynchronous compile's future
                compiled = compiled.result()
            if not isinstance(compiled, CompiledKernel):  # Triton's interpreter compiles nothing to keep
                if kept is not None:
                    kept.append((functools.partial(_interpret, kernel, grid, constexprs, options), args))
                return
            entry = _COMPILED[key] = (compiled, tuple(kernel.arg_names[len(args):]))
            if kept is not None:
                kept.append((functools.partial(_run_compiled, *_compiled_runner(entry, grid, constexprs)), args))
            return
        runner, values = _compiled_runner(entry, grid, constexprs)
        runner(*args, *values)
        if kept is not None:
            kept.append((functools.partial(_run_compiled, runner, values), args))


def _compiled_runner(entry: tuple, grid: tuple[int, ...], constexprs: dict) -> tuple:
    """The kept compiled kernel's runner on ``grid`` (it reads 3 dims) and the constexpr values it takes last."""
    compiled, names = entry
    return compiled[(*grid, 1, 1)[:3]], tuple(constexprs[name] for name in names)


def _run_compiled(runner, values: tuple, *args: object) -> None:
    """A kept compiled launch again, on the current stream of the current device."""
    runner(*args, *values)


def _interpret(kernel, grid: tuple[int, ...], constexprs: dict, options: dict, *args: object) -> None:
    """A kept launch under Triton's interpreter: the JIT call again (it keeps no compiled kernel)."""
    with device_guard(args[0]):
        kernel[grid](*args, **constexprs, **options)


def _reduce_partials(partials: torch.Tensor, gscale: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
                     reciprocal: bool) -> None:
    """out = sum of the (SPLIT_K, M, N) fp32 partials x per-tensor scale + bias (a second launch, fixed order)."""
    split_k, m, n = partials.shape
    block = 1024
    _launch(_splitk_reduce_kernel, (_cdiv(m * n, block),), out,
            (partials, gscale, bias if bias is not None else out, out, m, n, out.stride(0)), 4,
            SPLIT_K=split_k, BLOCK=block, HAS_BIAS=bias is not None, RECIPROCAL=reciprocal)


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
    k_steps = _cdiv(2 * kh, block_k)
    split_k = max(1, min(split_k, k_steps))
    k_per_split = _cdiv(k_steps, split_k) * block_k
    split_k = _cdiv(2 * kh, k_per_split)
    partials = torch.empty((split_k, m, n), dtype=torch.float32, device=x2.device) if split_k > 1 else out
    dot_dtype, ieee = _dot_dtype(x2.dtype)
    grid = (_cdiv(n, block_n), split_k, _cdiv(m, block_m))
    _launch(_gemm_kernel, grid, x2, (
        x2, weight, scale_u8, gscale, bias if bias is not None else out, out, partials,
        m, n, k, kh, k_per_split,
        x2.stride(0), out.stride(0), weight.stride(0), scale_u8.stride(0),
    ), config["num_warps"], config["num_stages"],
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, SPLIT_K=split_k,
        HAS_BIAS=bias is not None, RECIPROCAL=reciprocal, DOT_DTYPE=dot_dtype, IEEE=ieee)
    if split_k > 1:
        _reduce_partials(partials, gscale, bias, out, reciprocal)
    return out


def moe(
    x2: torch.Tensor, weight: torch.Tensor, scale_u8: torch.Tensor, gscale: torch.Tensor, out: torch.Tensor,
    tile_expert: torch.Tensor, row_map: torch.Tensor | None, topk: int, k: int, reciprocal: bool, config: dict,
) -> torch.Tensor:
    e, n, kh = weight.shape
    block_m, block_n, block_k = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    dot_dtype, ieee = _dot_dtype(x2.dtype)
    grid = (tile_expert.shape[0], _cdiv(n, block_n))
    _launch(_moe_kernel, grid, x2, (
        x2, weight, scale_u8, gscale, out, tile_expert, row_map if row_map is not None else tile_expert,
        n, k, kh, e, topk,
        x2.stride(0), out.stride(0), weight.stride(0), weight.stride(1), scale_u8.stride(0), scale_u8.stride(1),
    ), config["num_warps"], config["num_stages"],
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PER_PAIR=row_map is None,
        RECIPROCAL=reciprocal, DOT_DTYPE=dot_dtype, IEEE=ieee)
    return out


@functools.lru_cache(maxsize=None)
def _has_e4m3_cvt(index: int) -> bool:
    """``cvt.rn.f16x2.e4m3x2`` exists from sm_89 (Ada, Hopper) on; older GPUs take the plain-Triton decode."""
    return torch.cuda.get_device_capability(index) >= (8, 9)


@functools.lru_cache(maxsize=None)
def _has_pdl(index: int) -> bool:
    """Programmatic dependent launch (``griddepcontrol``) exists from sm_90 on, and in Triton from 3.4."""
    return torch.cuda.get_device_capability(index) >= (9, 0) and hasattr(tl.extra.cuda, "gdc_wait")


def pdl_supported(device: torch.device) -> bool:
    """Whether the decode kernels can launch with programmatic dependent launch on ``device``."""
    if device.type != "cuda":  # Triton's CPU interpreter runs no PTX
        return False
    return _has_pdl(device.index if device.index is not None else torch.cuda.current_device())


def _asm(device: torch.device) -> bool:
    if device.type != "cuda":  # Triton's CPU interpreter runs no PTX
        return False
    return _has_e4m3_cvt(device.index if device.index is not None else torch.cuda.current_device())


def _launch_decode(
    kernel, rows_per_program: int, x2: torch.Tensor, w64: torch.Tensor, scale_u8: torch.Tensor, gscale: torch.Tensor,
    bias: torch.Tensor | None, out: torch.Tensor, k: int, reciprocal: bool, config: dict,
    topk_ids: torch.Tensor | None, topk: int, prefetch: int, stages: int, counters: torch.Tensor | None,
    pdl: bool, kept: list | None = None, **variant: bool,
) -> torch.Tensor:
    """One launch of a word-decoding kernel (dense rows or routed pairs). When K is split, the partials are
    summed in the same launch if ``counters`` (int32 zeros, one per output tile) is given and large enough,
    else by a second launch (the reduce). ``pdl``: launch with programmatic dependent launch where the GPU and
    Triton support it; the reduce launch is always plainly ordered. ``kept``: see ``_launch``; a call that needs
    the reduce launch appends None after it (two launches: not one to replay)."""
    moe = topk_ids is not None
    n, kg = w64.shape[-2], w64.shape[-1]
    m = out.shape[0]
    block_n, block_g = config["BLOCK_N"], config["BLOCK_G"]
    split_k = 1 if moe else max(1, min(config["SPLIT_K"], _cdiv(kg, block_g)))
    g_per_split = _cdiv(_cdiv(kg, split_k), block_g) * block_g
    split_k = _cdiv(kg, g_per_split)
    partials = torch.empty((split_k, m, n), dtype=torch.float32, device=x2.device) if split_k > 1 else out
    experts = w64.shape[0] if moe else 1
    grid = (m if moe else _cdiv(m, rows_per_program), _cdiv(n, block_n), split_k)
    serial = split_k > 1 and counters is not None and counters.numel() >= grid[0] * grid[1]
    pdl = pdl and pdl_supported(x2.device)
    _launch(kernel, grid, x2, (
        x2, w64, scale_u8, gscale, bias if bias is not None else out, out, partials, counters if serial else gscale,
        topk_ids if moe else gscale,
        m, n, k, kg, g_per_split, topk, experts,
        x2.stride(0), out.stride(0), w64.stride(0) if moe else 0, w64.stride(-2),
        scale_u8.stride(0) if moe else 0, scale_u8.stride(-2),
    ), config["num_warps"], stages, pdl, kept,
        BLOCK_N=block_n, BLOCK_G=block_g, SPLIT_K=split_k, SERIAL=serial, PREFETCH=prefetch, MOE=moe,
        HAS_BIAS=bias is not None, RECIPROCAL=reciprocal, ASM=_asm(x2.device), PDL=pdl, **variant)
    if split_k > 1 and not serial:
        _reduce_partials(partials, gscale, bias, out, reciprocal)
        if kept is not None:
            kept.append(None)
    return out


def gemv(
    x2: torch.Tensor, w64: torch.Tensor, scale_u8: torch.Tensor, gscale: torch.Tensor, bias: torch.Tensor | None,
    out: torch.Tensor, k: int, reciprocal: bool, config: dict,
    topk_ids: torch.Tensor | None = None, topk: int = 1, counters: torch.Tensor | None = None, pdl: bool | None = None,
    kept: list | None = None,
) -> torch.Tensor:
    """Decode GEMV: ``out`` rows = x rows @ dequant(W).T (each row streams the weight: meant for one), or with
    ``topk_ids`` one row per routed (token, expert) pair. ``w64``: (E,) N x KG int64 words; ``config``:
    BLOCK_N, BLOCK_G, SPLIT_K, num_warps, PREFETCH (steps loaded ahead, 1 or 2), F16_DOT (16-bit inputs: sum
    each group's products as fp16x2, default on; fp32 inputs always sum in fp32), DECODE_AHEAD (dense rows
    with F16_DOT: decode the prefetched steps before waiting for the previous kernel; default off).
    ``counters``, ``kept``: see ``_launch_decode``; ``pdl``: None launches as ``GEMV_PDL`` says."""
    f16_dot = x2.dtype != torch.float32 and config.get("F16_DOT", True)
    decode_ahead = topk_ids is None and f16_dot and config.get("DECODE_AHEAD", False)
    return _launch_decode(_gemv_kernel, 1, x2, w64, scale_u8, gscale, bias, out, k, reciprocal, config,
                          topk_ids, topk, config.get("PREFETCH", 1), 1, counters, GEMV_PDL if pdl is None else pdl,
                          kept, F16_DOT=f16_dot, DECODE_AHEAD=decode_ahead)


def mma_gemv(
    x2: torch.Tensor, w64: torch.Tensor, scale_u8: torch.Tensor, gscale: torch.Tensor, bias: torch.Tensor | None,
    out: torch.Tensor, k: int, reciprocal: bool, config: dict,
    topk_ids: torch.Tensor | None = None, topk: int = 1, counters: torch.Tensor | None = None, pdl: bool | None = None,
    kept: list | None = None,
) -> torch.Tensor:
    """Tensor-core decode GEMM: ``out`` rows = x rows (16 a program) @ dequant(W).T, or one row per routed pair.
    ``config``: BLOCK_N, BLOCK_G, SPLIT_K, num_warps, num_stages, PREFETCH (0 or 1). ``counters``,
    ``kept``: see ``_launch_decode``; ``pdl``: None launches as ``MMA_PDL`` says."""
    return _launch_decode(_mma_gemv_kernel, 16, x2, w64, scale_u8, gscale, bias, out, k, reciprocal, config,
                          topk_ids, topk, config.get("PREFETCH", 0), config["num_stages"], counters,
                          MMA_PDL if pdl is None else pdl, kept)


def dequantize(
    weight: torch.Tensor, scale_u8: torch.Tensor, gscale: torch.Tensor, out: torch.Tensor, k: int, reciprocal: bool,
    w64: torch.Tensor | None = None,
) -> torch.Tensor:
    """The whole weight into ``out``; from its int64 words ``w64`` when given (vectorised), else byte-wise."""
    n, kh = weight.shape
    if w64 is None:  # storage not 16-byte aligned: the byte-wise kernel
        block_n, block_k = 32, 256
        grid = (_cdiv(n, block_n), _cdiv(2 * kh, block_k))
        _launch(_dequant_kernel, grid, weight,
                (weight, scale_u8, gscale, out, n, k, kh, weight.stride(0), scale_u8.stride(0), out.stride(0)), 4,
                BLOCK_N=block_n, BLOCK_K=block_k, RECIPROCAL=reciprocal)
        return out
    kg = w64.shape[1]
    block_n, block_g = DEQUANT_BLOCK
    grid = (_cdiv(n, block_n), _cdiv(kg, block_g))
    _launch(_dequant16_kernel, grid, weight,
            (w64, scale_u8, gscale, out, n, k, kg, w64.stride(0), scale_u8.stride(0), out.stride(0)), 4,
            BLOCK_N=block_n, BLOCK_G=block_g, RECIPROCAL=reciprocal, ASM=_asm(weight.device))
    return out


#: (BLOCK_N, BLOCK_G) of the dequantize kernel
DEQUANT_BLOCK = (16, 16)
#: launch the GEMV (one row, or one routed pair a program row) with programmatic dependent launch where supported
#: (``pdl_supported``): its programs are scheduled, and a dense call's first weight words and scales read, while
#: the previous kernel drains (``benchmarks/w4a16.py`` times both orderings side by side; docs/quantized.md)
GEMV_PDL = True
#: the GEMV loads each step's inputs one step ahead, as it does the words and scales
#: the tensor-core decode GEMM (2 to 16 rows) launches plainly: launched as a dependent (its programs wait before
#: their first load) it measured slower at most decode shapes on an H100 (docs/quantized.md)
MMA_PDL = False
