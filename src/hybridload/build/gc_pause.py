"""``collector_paused()``: no garbage collection while a big module tree is built; its objects join the old
generation afterwards without scheduling a full collection.

Building a 75,000-module tree creates about 1.3 million container objects that all stay alive. CPython
runs a full (oldest-generation) collection whenever the objects promoted since the last one exceed a
quarter of the long-lived heap, so a DeepSeek-V3-sized meta build traverses the whole heap (torch,
transformers and the growing tree) several times: about half of its build time once initialisation is
skipped. If collections are only deferred, the first allocations after the build pay one full collection
of the now much larger heap (about a second at that size).

While a window is open the collector is disabled. When the last window closes, ``gc.freeze()`` then
``gc.unfreeze()`` moves every tracked object into the oldest generation (they are long-lived: a young
collection would have promoted them there) without counting them as newly promoted, so no full collection
is scheduled because of the build; the next one happens when the program allocates enough long-lived
objects of its own, as it would have, and then scans the tree like everything else. Nothing is ever
exempted from collection. Where the process uses ``gc.freeze()`` itself (a pre-fork server), its frozen
objects are left frozen and the young objects are left where they are.

Also used while a checkpoint's tensor index of 100k+ tensors is read and mapped (half a million acyclic
dicts, lists and tuples; ``hybridload.serve.coverage``).

Process-wide (the collector is): the first window to open disables it (if it was enabled), the last to
close re-enables it (unless someone re-enabled it meanwhile). Garbage cycles made while a window is open
are freed by the next full collection.
"""
from __future__ import annotations

import functools
import gc
import threading
from typing import Any, Callable

_lock = threading.Lock()
_open = 0
_disabled_by_us = False


class collector_paused:  # noqa: N801 - used like a function
    """Disable the cyclic garbage collector while open. Re-entrant, thread-safe, reversible."""

    def __enter__(self) -> "collector_paused":
        global _open, _disabled_by_us
        with _lock:
            if _open == 0:
                _disabled_by_us = gc.isenabled()
                if _disabled_by_us:
                    gc.disable()
            _open += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        global _open, _disabled_by_us
        with _lock:
            _open -= 1
            if _open > 0:
                return
            if _disabled_by_us and not gc.isenabled():
                if gc.get_freeze_count() == 0:
                    gc.freeze()  # every tracked object -> permanent generation (young counts reset) ...
                    gc.unfreeze()  # ... -> oldest generation, not counted as promoted
                gc.enable()
            _disabled_by_us = False

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with collector_paused():
                return fn(*args, **kwargs)

        return wrapper


def windows_open() -> int:
    return _open
