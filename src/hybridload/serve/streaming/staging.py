"""Copy a byte range of a file straight into an accelerator tensor through a few small bounce buffers.

``tensor.to("cuda")`` from a freshly read host tensor copies every byte twice on the host: once from the
page cache into the tensor, once more inside the CUDA driver into its pinned staging memory, before the
DMA. Reading the file into *pinned* buffers removes the second copy, lets the DMA of one chunk overlap the
read of the next, and keeps host memory at ``slots x chunk_bytes`` whatever the tensor or group size (the
way vLLM's and fastsafetensors' loaders do it). Each slot is reused only after the event recorded behind
its last copy has completed; a tensor is handed out only after the caller's stream waits for its copies.

Devices other than CUDA (and CPU tests) get the same chunking with pageable buffers and synchronous copies.
"""
from __future__ import annotations

import ctypes
import os
import queue
from dataclasses import dataclass
from typing import Any, Callable

import torch

CHUNK_BYTES = 4 * 2**20  # the largest chunk: past ~1 MiB a DMA runs at full rate
MIN_CHUNK_BYTES = 256 * 2**10
SLOTS = 8  # two per prefetch worker: one being read while the other's DMA runs

# fills ``size`` bytes at ``address`` from the file at ``offset``; returns bytes read (0 at end of file)
ReadAt = Callable[[int, int, int], int]


def chunk_bytes_for(largest_group_bytes: int) -> int:
    """Chunk size for a load whose largest converted group is given: all slots together hold at most a
    quarter of that group (so pinning never dominates host memory) and at most ``SLOTS x CHUNK_BYTES``."""
    chunk = min(CHUNK_BYTES, largest_group_bytes // (4 * SLOTS))
    return max(MIN_CHUNK_BYTES, chunk - chunk % (64 * 2**10))


@dataclass
class _Slot:
    buffer: torch.Tensor  # uint8, pinned on CUDA
    event: Any = None  # the event recorded after the slot's last copy (CUDA only)


class StagedCopier:
    """Host bounce buffers for one device, shared by the loader's threads (each holds one slot at a time)."""

    def __init__(self, device: torch.device, *, chunk_bytes: int = CHUNK_BYTES, slots: int = SLOTS) -> None:
        if chunk_bytes <= 0 or slots <= 0:
            raise ValueError("chunk_bytes and slots must be positive")
        self.device = device
        self.chunk_bytes = chunk_bytes
        self._cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if self._cuda else None
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        self._all: list[_Slot] = []
        for _ in range(slots):
            slot = _Slot(torch.empty(chunk_bytes, dtype=torch.uint8, pin_memory=self._cuda))
            self._all.append(slot)
            self._free.put(slot)

    @property
    def host_bytes(self) -> int:
        return self.chunk_bytes * len(self._all)

    def copy_into(self, out: torch.Tensor, read_at: ReadAt, offset: int, nbytes: int) -> None:
        """Fill the contiguous tensor ``out`` (on this copier's device) with ``nbytes`` from ``offset``.

        Raises EOFError if the file ends early. On return the calling thread's current stream is ordered
        after every copy into ``out``."""
        if nbytes == 0:
            return
        flat = out.view(-1).view(torch.uint8)
        done = 0
        try:
            while done < nbytes:
                size = min(self.chunk_bytes, nbytes - done)
                slot = self._free.get()
                try:
                    if slot.event is not None:
                        slot.event.synchronize()  # its previous DMA has read the buffer
                    _read_exactly(read_at, slot.buffer.data_ptr(), size, offset + done)
                    self._copy(flat[done : done + size], slot, size)
                finally:
                    self._free.put(slot)
                done += size
        except BaseException:
            if self._stream is not None:
                self._stream.synchronize()  # no DMA may still write into memory the caller will free
            raise
        if self._stream is not None:
            finished = torch.cuda.Event()
            finished.record(self._stream)
            torch.cuda.current_stream(self.device).wait_event(finished)

    def _copy(self, target: torch.Tensor, slot: _Slot, size: int) -> None:
        if self._stream is None:
            target.copy_(slot.buffer[:size])
            return
        with torch.cuda.stream(self._stream):
            target.copy_(slot.buffer[:size], non_blocking=True)
            if slot.event is None:
                slot.event = torch.cuda.Event()
            slot.event.record(self._stream)

    def close(self) -> None:
        """Wait for outstanding copies and give the pinned memory back."""
        if self._stream is not None:
            self._stream.synchronize()
        self._all.clear()
        while not self._free.empty():
            self._free.get()
        if self._cuda:
            empty_host_cache = getattr(torch._C, "_host_emptyCache", None)
            if empty_host_cache is not None:  # the caching host allocator would keep the pinned pages resident
                empty_host_cache()


def _read_exactly(read_at: ReadAt, address: int, size: int, offset: int) -> None:
    done = 0
    while done < size:
        got = read_at(address + done, size - done, offset + done)
        if got <= 0:
            raise EOFError(f"file ends {size - done} bytes short of the tensor's data at offset {offset + done}")
        done += got


def pread_into(fd: int) -> ReadAt:
    """A ``ReadAt`` for an open file descriptor: ``preadv`` straight into the memory, no GIL held."""
    if hasattr(os, "preadv"):

        def read_at(address: int, size: int, offset: int) -> int:
            return os.preadv(fd, [(ctypes.c_ubyte * size).from_address(address)], offset)

    else:  # pragma: no cover - Windows: no preadv; a positioned read through a private file object

        def read_at(address: int, size: int, offset: int) -> int:
            with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:
                fh.seek(offset)
                return fh.readinto((ctypes.c_ubyte * size).from_address(address)) or 0

    return read_at


def read_into_host(out: torch.Tensor, read_at: ReadAt, offset: int, nbytes: int) -> None:
    """Fill the contiguous CPU tensor ``out`` straight from the file: the only copy a CPU load makes."""
    if nbytes:
        _read_exactly(read_at, out.data_ptr(), nbytes, offset)
