"""The two :class:`~.conversion.TensorSource` kinds a group converts from: meta tensors of the header shapes
(the shape check before any read) and the streaming reader (the load itself)."""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from .checkpoint import TensorEntry
from .prefetch import Prefetcher


class MetaSource:
    """Header shapes as meta tensors: runs every conversion for its shapes, reads nothing."""

    def __init__(self, entries: Mapping[str, TensorEntry], dtype: torch.dtype) -> None:
        self._entries = entries
        self._dtype = dtype

    def deferred(self, key: str) -> Callable[[], torch.Tensor]:
        return lambda: torch.empty(self._entries[key].shape, dtype=self._dtype, device="meta")

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key].shape

    def empty(self, shape: list[int]) -> torch.Tensor:
        return torch.empty(shape, dtype=self._dtype, device="meta")

    def fill(self, pairs: list[tuple[str, torch.Tensor]]) -> None:
        for key, out in pairs:
            if tuple(out.shape) != self.shape(key):
                raise RuntimeError(f"{key} has shape {self.shape(key)}, its slot {tuple(out.shape)}")


class StreamSource:
    """A group's tensors from the checkpoint, on the group's read device and in its dtype."""

    def __init__(self, prefetcher: Prefetcher, device: torch.device, dtype: torch.dtype) -> None:
        self._prefetcher = prefetcher
        self._device = device
        self._dtype = dtype

    def deferred(self, key: str) -> Callable[[], torch.Tensor]:
        return self._prefetcher.loader(key)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._prefetcher.reader.entries[key].shape

    def empty(self, shape: list[int]) -> torch.Tensor:
        return torch.empty(shape, dtype=self._dtype, device=self._device)

    def fill(self, pairs: list[tuple[str, torch.Tensor]]) -> None:
        self._prefetcher.fill(pairs)
