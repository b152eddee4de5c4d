"""Read checkpoint tensors ahead of the conversion, within a byte budget.

A strictly sequential loader leaves the disk idle while a group converts and the GPU idle while a tensor
is read. A few worker threads read (``preadv`` releases the GIL) and move tensors to their device in the
order the conversions will ask for them, but never hold more than ``budget_bytes`` of results that have
not been consumed yet -- that budget is what keeps host memory near one group. A tensor asked for out of
order is read on the spot, so a wrong order guess costs speed, never a deadlock.
"""
from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

import torch

from .checkpoint import CheckpointReader

WORKERS = 4  # transformers' GLOBAL_WORKERS: more threads slow reads down


@dataclass(frozen=True)
class PlannedRead:
    key: str
    device: torch.device
    dtype: torch.dtype
    nbytes: int


class Prefetcher:
    """Hands out ``read(key).to(device, dtype)`` results, reading ahead in the planned order."""

    def __init__(self, reader: CheckpointReader, reads: list[PlannedRead], budget_bytes: int) -> None:
        self.reader = reader
        self._pending: OrderedDict[str, PlannedRead] = OrderedDict((r.key, r) for r in reads)
        self._inflight: dict[str, tuple[Future, int]] = {}
        self._inflight_bytes = 0
        self._budget = budget_bytes
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="hybridload-read")

    def _task(self, read: PlannedRead) -> torch.Tensor:
        # transformers' _materialize_copy: cast and move each source before its conversion runs
        return self.reader.read_to(read.key, read.device, read.dtype)

    def _fill(self) -> None:
        while self._pending:
            key, read = next(iter(self._pending.items()))
            if self._inflight and self._inflight_bytes + read.nbytes > self._budget:
                return
            del self._pending[key]
            self._inflight[key] = (self._pool.submit(self._task, read), read.nbytes)
            self._inflight_bytes += read.nbytes

    def get(self, key: str) -> torch.Tensor:
        entry = self._inflight.pop(key, None)
        if entry is None:  # not scheduled yet: the conversion asked out of order
            read = self._pending.pop(key)
            self._fill()
            return self._task(read)
        future, nbytes = entry
        try:
            return future.result()
        finally:
            self._inflight_bytes -= nbytes
            self._fill()

    def loader(self, key: str) -> Callable[[], torch.Tensor]:
        return lambda: self.get(key)

    def fill(self, pairs: list[tuple[str, torch.Tensor]]) -> None:
        """Read each key into its destination (slices of one stacked tensor) on the worker threads.

        Returns once every read has finished, successful or not, so no thread still writes into memory the
        caller frees after an error; then raises the first error."""
        futures = [self._pool.submit(self.reader.read_into, key, out) for key, out in pairs]
        wait(futures)
        for future in futures:
            future.result()

    def start(self) -> "Prefetcher":
        self._fill()
        return self

    def close(self) -> None:
        """Stop reading ahead and drop whatever was read but not consumed."""
        self._pending.clear()
        for future, _ in self._inflight.values():
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._inflight.clear()
        self._inflight_bytes = 0

    def __enter__(self) -> "Prefetcher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
