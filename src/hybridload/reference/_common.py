"""Helpers shared by the reference implementations (no kernel semantics live here)."""
from __future__ import annotations

import sys
from typing import Any

import torch


def is_data_free(*values: Any) -> bool:
    """True when every tensor among ``values`` carries no data (meta, or a FakeTensor under fake mode).

    References take a shape-only path for such inputs: the per-token loops that compute real values would
    only burn time on tensors that hold nothing, and data-dependent sizes (``cu_seqlens``) cannot be read.
    """
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        return False
    fake = sys.modules.get("torch._subclasses.fake_tensor")
    for tensor in tensors:
        if tensor.is_meta:
            continue
        if fake is not None and isinstance(tensor, fake.FakeTensor):
            continue
        return False
    return True


def sequence_bounds(cu_seqlens: torch.Tensor | None, batch: int, length: int) -> list[tuple[int, int, int]]:
    """``(batch index, start, end)`` of every sequence: rows of the batch, or packed ``cu_seqlens`` spans."""
    if cu_seqlens is None:
        return [(b, 0, length) for b in range(batch)]
    if batch != 1:
        raise ValueError(
            f"with cu_seqlens the batch size must be 1 (packed sequences), got {batch}; flatten the inputs first"
        )
    edges = [int(x) for x in cu_seqlens.tolist()]
    return [(0, edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def num_sequences(cu_seqlens: torch.Tensor | None, batch: int) -> int:
    """How many sequences a call covers; known from shapes alone, so it works on meta tensors too."""
    return batch if cu_seqlens is None else cu_seqlens.shape[0] - 1
