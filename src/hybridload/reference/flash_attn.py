"""Pure-PyTorch references for the flash-attn 2 functions that remote code (and transformers) calls.

Semantics follow flash-attn 2.8.3: causal masks aligned to the bottom-right corner when
``seqlen_q != seqlen_k``, sliding windows ``[i + sk - sq - left, i + sk - sq + right]``, ALiBi,
softcapping, MQA/GQA by head grouping, rows with no visible key produce zeros (and an infinite LSE), the
output has q's dtype and the log-sum-exp is float32. Dropout, when asked for, is applied with torch's RNG
(the kernel's Philox stream cannot be reproduced).

Packed-sequence (varlen) calls need the values of ``cu_seqlens``; on meta/fake inputs they take a
shape-only path.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ._common import is_data_free

__all__ = [
    "apply_rotary_emb",
    "apply_rotary_emb_func",
    "apply_rotary_emb_kv_",
    "apply_rotary_emb_qkv_",
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "rms_norm",
]


def _round_multiple(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def _attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    dropout_p: float,
    softmax_scale: float | None,
    causal: bool,
    window_size: tuple[int, int],
    softcap: float,
    alibi_slopes: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense attention for q ``[B, Sq, H, D]``, k/v ``[B, Sk, Hk, D]``. Returns (out, lse ``[B, H, Sq]``)."""
    batch, seqlen_q, heads, head_dim = q.shape
    seqlen_k, kv_heads = k.shape[1], k.shape[2]
    if heads % kv_heads != 0:
        raise ValueError(f"Number of heads in key/value ({kv_heads}) must divide number of heads in query ({heads})")
    if softmax_scale is None:
        softmax_scale = head_dim**-0.5
    group = heads // kv_heads
    k = k.float().repeat_interleave(group, dim=2)
    v = v.float().repeat_interleave(group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k) * softmax_scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)

    rows = torch.arange(seqlen_q, device=q.device).unsqueeze(-1) + (seqlen_k - seqlen_q)
    cols = torch.arange(seqlen_k, device=q.device).unsqueeze(0)
    if alibi_slopes is not None:
        slopes = alibi_slopes.float()
        slopes = slopes.view(1, heads, 1, 1) if slopes.dim() == 1 else slopes.view(batch, heads, 1, 1)
        scores = scores - slopes * (rows - cols).abs()
    left, right = window_size
    if left >= seqlen_k:
        left = -1
    if right >= seqlen_k:
        right = -1
    if causal:
        right = 0
    visible = torch.ones((seqlen_q, seqlen_k), dtype=torch.bool, device=q.device)
    if left >= 0:
        visible = visible & (cols >= rows - left)
    if right >= 0:
        visible = visible & (cols <= rows + right)
    scores = scores.masked_fill(~visible, float("-inf"))

    lse = torch.logsumexp(scores, dim=-1)
    empty = torch.isneginf(lse)
    probs = torch.exp(scores - lse.masked_fill(empty, 0.0).unsqueeze(-1))
    probs = probs.masked_fill(empty.unsqueeze(-1), 0.0)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v)
    return out.to(q.dtype), lse.masked_fill(empty, float("inf"))


def _dropout_mask_placeholder(
    q: torch.Tensor, batch: int, heads: int, seqlen_q: int, seqlen_k: int, dropout_p: float
) -> torch.Tensor:
    """The ``S_dmask`` slot: empty unless dropout was on (then the kernel's padded [B, H, Sq, Sk] layout)."""
    if dropout_p > 0:
        shape = (batch, heads, _round_multiple(seqlen_q, 128), _round_multiple(seqlen_k, 128))
        return torch.zeros(shape, dtype=q.dtype, device=q.device)
    return torch.empty((0,), dtype=q.dtype, device=q.device)


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``flash_attn.flash_attn_func``: q ``[B, Sq, H, D]``, k/v ``[B, Sk, Hk, D]`` -> out ``[B, Sq, H, D]``."""
    out, lse = _attention(
        q, k, v, dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal,
        window_size=tuple(window_size), softcap=softcap, alibi_slopes=alibi_slopes,
    )  # fmt: skip
    if not return_attn_probs:
        return out
    batch, seqlen_q, heads, _ = q.shape
    return out, lse, _dropout_mask_placeholder(q, batch, heads, seqlen_q, k.shape[1], dropout_p)


def flash_attn_qkvpacked_func(
    qkv: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Any:
    """``flash_attn.flash_attn_qkvpacked_func``: qkv ``[B, S, 3, H, D]``."""
    return flash_attn_func(
        qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], dropout_p, softmax_scale, causal, window_size, softcap,
        alibi_slopes, deterministic, return_attn_probs,
    )  # fmt: skip


def flash_attn_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Any:
    """``flash_attn.flash_attn_kvpacked_func``: kv ``[B, Sk, 2, Hk, D]``."""
    return flash_attn_func(
        q, kv[:, :, 0], kv[:, :, 1], dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
        deterministic, return_attn_probs,
    )  # fmt: skip


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``flash_attn.flash_attn_varlen_func``: packed q ``[total_q, H, D]``, k/v ``[total_k, Hk, D]``.

    With ``block_table`` (paged KV cache) k/v are ``[num_blocks, block_size, Hk, D]`` and sequence ``i``
    reads the blocks listed in ``block_table[i]``.
    """
    total_q, heads, _ = q.shape
    n_seq = cu_seqlens_q.shape[0] - 1
    if is_data_free(q, k, v, cu_seqlens_q, cu_seqlens_k, block_table):
        out = torch.empty((total_q, heads, v.shape[-1]), dtype=q.dtype, device=q.device)
        lse = torch.empty((heads, total_q), dtype=torch.float32, device=q.device)
    else:
        out = torch.zeros((total_q, heads, v.shape[-1]), dtype=q.dtype, device=q.device)
        lse = torch.empty((heads, total_q), dtype=torch.float32, device=q.device)
        q_edges = [int(x) for x in cu_seqlens_q.tolist()]
        k_edges = [int(x) for x in cu_seqlens_k.tolist()]
        slopes = alibi_slopes
        for i in range(n_seq):
            q_seq = q[q_edges[i] : q_edges[i + 1]]
            k_len = k_edges[i + 1] - k_edges[i]
            if block_table is None:
                k_seq = k[k_edges[i] : k_edges[i + 1]]
                v_seq = v[k_edges[i] : k_edges[i + 1]]
            else:
                k_seq = k[block_table[i]].flatten(0, 1)[:k_len]
                v_seq = v[block_table[i]].flatten(0, 1)[:k_len]
            if alibi_slopes is not None and alibi_slopes.dim() == 2:
                slopes = alibi_slopes[i]
            o_seq, lse_seq = _attention(
                q_seq.unsqueeze(0), k_seq.unsqueeze(0), v_seq.unsqueeze(0), dropout_p=dropout_p,
                softmax_scale=softmax_scale, causal=causal, window_size=tuple(window_size), softcap=softcap,
                alibi_slopes=slopes,
            )  # fmt: skip
            out[q_edges[i] : q_edges[i + 1]] = o_seq[0]
            lse[:, q_edges[i] : q_edges[i + 1]] = lse_seq[0]
    if not return_attn_probs:
        return out
    return out, lse, _dropout_mask_placeholder(q, n_seq, heads, max_seqlen_q, max_seqlen_k, dropout_p)


def flash_attn_varlen_qkvpacked_func(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Any:
    """``flash_attn.flash_attn_varlen_qkvpacked_func``: qkv ``[total, 3, H, D]``."""
    return flash_attn_varlen_func(
        qkv[:, 0], qkv[:, 1], qkv[:, 2], cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p,
        softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic, return_attn_probs,
    )  # fmt: skip


def flash_attn_varlen_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
) -> Any:
    """``flash_attn.flash_attn_varlen_kvpacked_func``: kv ``[total_k, 2, Hk, D]``."""
    return flash_attn_varlen_func(
        q, kv[:, 0], kv[:, 1], cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
        softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic, return_attn_probs,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- rotary


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Rotate the first ``2 * cos.shape[-1]`` channels of x (float32 math); cos/sin broadcast against x."""
    rot = cos.shape[-1] * 2
    xr = x[..., :rot].float()
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    else:
        x1, x2 = xr[..., : rot // 2], xr[..., rot // 2 :]
        rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return torch.cat((rotated.to(x.dtype), x[..., rot:]), dim=-1)


def _positions(
    x: torch.Tensor, seqlen_offsets: int | torch.Tensor, cu_seqlens: torch.Tensor | None
) -> torch.Tensor:
    """Rotary table row of every token: ``[B, S]`` (batched) or ``[total]`` (packed)."""
    if cu_seqlens is None:
        steps = torch.arange(x.shape[1], device=x.device)
        if isinstance(seqlen_offsets, torch.Tensor):
            return steps.unsqueeze(0) + seqlen_offsets.to(x.device).view(-1, 1)
        return (steps + seqlen_offsets).unsqueeze(0).expand(x.shape[0], -1)
    if is_data_free(cu_seqlens):
        return torch.arange(x.shape[0], device=x.device)
    edges = [int(e) for e in cu_seqlens.tolist()]
    parts = []
    for i in range(len(edges) - 1):
        offset = seqlen_offsets[i] if isinstance(seqlen_offsets, torch.Tensor) else seqlen_offsets
        parts.append(torch.arange(edges[i + 1] - edges[i], device=x.device) + offset)
    return torch.cat(parts)


def apply_rotary_emb(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool = False,
    inplace: bool = False,
    seqlen_offsets: int | torch.Tensor = 0,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
) -> torch.Tensor:
    """``flash_attn.layers.rotary.apply_rotary_emb``: x ``[B, S, H, D]`` (or ``[total, H, D]`` packed),
    cos/sin ``[seqlen_ro, rotary_dim / 2]``; rotates the first ``rotary_dim`` channels."""
    if is_data_free(x, cos, sin):
        return x if inplace else torch.empty_like(x)
    pos = _positions(x, seqlen_offsets, cu_seqlens)
    cos_t = cos.float()[pos].unsqueeze(-2)  # [..., 1, rot/2]: broadcast over heads
    sin_t = sin.float()[pos].unsqueeze(-2)
    out = _rotate(x, cos_t, sin_t, interleaved)
    if inplace:
        x.copy_(out)
        return x
    return out


#: flash-attn keeps the old name as an alias (``from flash_attn.layers.rotary import apply_rotary_emb_func``)
apply_rotary_emb_func = apply_rotary_emb


def apply_rotary_emb_qkv_(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cos_k: torch.Tensor | None = None,
    sin_k: torch.Tensor | None = None,
    interleaved: bool = False,
    seqlen_offsets: int | torch.Tensor = 0,
    num_heads_q: int | None = None,
) -> torch.Tensor:
    """``flash_attn.layers.rotary.apply_rotary_emb_qkv_``: rotates Q and K of a packed qkv *in place*.

    qkv is ``[B, S, 3, H, D]``, or ``[B, S, Hq + 2 * Hk, D]`` with ``num_heads_q`` given (MQA/GQA).
    """
    cos_k = cos if cos_k is None else cos_k
    sin_k = sin if sin_k is None else sin_k
    if qkv.dim() == 5:
        q, k = qkv[:, :, 0], qkv[:, :, 1]
    else:
        if num_heads_q is None:
            raise ValueError("qkv of shape [B, S, Hq + 2 * Hk, D] needs num_heads_q")
        num_heads_k = (qkv.shape[2] - num_heads_q) // 2
        q, k = qkv[:, :, :num_heads_q], qkv[:, :, num_heads_q : num_heads_q + num_heads_k]
    apply_rotary_emb(q, cos, sin, interleaved, True, seqlen_offsets)
    apply_rotary_emb(k, cos_k, sin_k, interleaved, True, seqlen_offsets)
    return qkv


def apply_rotary_emb_kv_(
    kv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool = False,
    seqlen_offsets: int | torch.Tensor = 0,
) -> torch.Tensor:
    """``flash_attn.layers.rotary.apply_rotary_emb_kv_``: rotates K of kv ``[B, S, 2, H, D]`` in place."""
    apply_rotary_emb(kv[:, :, 0], cos, sin, interleaved, True, seqlen_offsets)
    return kv


# ------------------------------------------------------------------------------------------------ norm


def rms_norm(x: torch.Tensor, weight: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``flash_attn.ops.rms_norm.rms_norm``: float32 statistics, output in x's dtype."""
    if is_data_free(x, weight):
        return torch.empty_like(x)
    h = x.float()
    y = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + epsilon) * weight.float()
    return y.to(x.dtype)
