"""A kernel that only streams an NVFP4 weight's packed words and scale bytes, as the W4A16 GEMV does (each
program a tile of rows over its K range), with no decode and no arithmetic beyond an xor: the time the
memory system alone needs for the bytes the GEMV reads, launch and tail included."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def stream_packed_kernel(W, S, SINK, N, KG, G_PER_SPLIT, stride_wn, stride_sn,
                         BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < N
    g_begin = pid_k * G_PER_SPLIT
    g_end = tl.minimum(g_begin + G_PER_SPLIT, KG)
    w_rows = W + offs_n.to(tl.int64)[:, None] * stride_wn
    s_rows = S + offs_n.to(tl.int64)[:, None] * stride_sn
    acc = tl.zeros((BLOCK_N, BLOCK_G), dtype=tl.int64)
    for g0 in range(g_begin, g_end, BLOCK_G):
        offs_g = g0 + tl.arange(0, BLOCK_G)
        mask = n_mask[:, None] & (offs_g < g_end)[None, :]
        acc ^= tl.load(w_rows + offs_g[None, :], mask=mask, other=0)
        acc ^= tl.load(s_rows + offs_g[None, :], mask=mask, other=0).to(tl.int64)
    tl.store(SINK + pid_k.to(tl.int64) * N + offs_n, tl.xor_sum(acc, axis=1), mask=n_mask)
