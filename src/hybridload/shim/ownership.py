"""Who owns the open kernel-shim window, and which packages are stood in for right now.

Windows are serialised across threads by one re-entrant lock (nesting in a thread re-enters it): stand-in
modules live in the process-global ``sys.modules``, so two threads' windows must not interleave. The owner's
identity decides who sees stand-ins; other threads read these plain attributes (immutable values) without
waiting on the lock.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

window_lock = threading.RLock()


class _State:
    owner: int | None = None  # thread ident inside the window, None when no window is open
    depth: int = 0
    served: frozenset[str] = frozenset()  # top-level packages with a stand-in in sys.modules
    triton: bool = False  # stood-in symbols resolve to hybridload's Triton kernels where one exists (served side)


state = _State()
_local = threading.local()


def in_window() -> bool:
    """True for the thread that owns the open window (and only while the finder is not suspended)."""
    return state.owner == threading.get_ident() and not getattr(_local, "suspended", 0)


def owns_window() -> bool:
    return state.owner == threading.get_ident()


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Hide stand-ins from this thread (used while trying a real import or answering truthfully)."""
    _local.suspended = getattr(_local, "suspended", 0) + 1
    try:
        yield
    finally:
        _local.suspended -= 1


def mark_served(package: str) -> None:
    state.served = state.served | {package}
