"""Give freed host memory back to the OS between groups.

glibc raises its mmap threshold after large blocks are freed, so the per-expert buffers of the next
group come from the heap, where freed space is kept (and fragmented) instead of returned: without a
trim, resident memory creeps up by a group or two over a long load. ``malloc_trim(0)`` returns the free
pages; it changes no allocator setting. A no-op where glibc is absent (macOS, musl).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Callable

_lock = threading.Lock()
_trim: Callable[[int], int] | None = None
_looked_up = False

# trimming costs a heap walk; only worth it after groups that freed at least this much
TRIM_MIN_BYTES = 4 * 2**20


def _malloc_trim() -> Callable[[int], int] | None:
    global _trim, _looked_up
    with _lock:
        if not _looked_up:
            _looked_up = True
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _trim = libc.malloc_trim
                _trim.argtypes = [ctypes.c_size_t]
                _trim.restype = ctypes.c_int
            except (OSError, AttributeError):
                _trim = None
        return _trim


def release_freed_host_memory(freed_bytes: int) -> None:
    """Return free heap pages to the OS if a group just freed ``freed_bytes`` (or more) of host buffers."""
    if freed_bytes < TRIM_MIN_BYTES:
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
