"""Process-wide shim state: which thread owns the open window(s), and which packages are stood in for.

Windows are serialized across threads by one re-entrant lock (nesting in a thread re-enters it); the
owner's identity decides who sees stand-ins. Reads from other threads (the import guards) use plain
attribute reads of immutable values, so they never wait on the lock.
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
