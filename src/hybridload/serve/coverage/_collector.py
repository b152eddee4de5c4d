"""Pause the cyclic garbage collector while an index of 100k tensors is built and mapped.

Reading and mapping the index of a 671B MoE allocates about half a million dicts, lists and tuples, none of
them in a reference cycle. With the collector on, every generation-2 pass walks every object of the process
(torch, transformers, the meta tree): reading DeepSeek-V3's index took about twice the CPU time with the
collector running (``benchmarks/coverage.py``, ``read_index_cpu_s_collector_on``). The pause is scoped, reference-counted across threads, and undone by the last
one out, which turns the collector back on only if the first one in turned it off.
"""
from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_turned_off = False


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    global _depth, _turned_off
    with _lock:
        if _depth == 0:
            _turned_off = gc.isenabled()
            if _turned_off:
                gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _turned_off:
                _turned_off = False
                gc.enable()
