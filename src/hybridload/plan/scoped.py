"""Reference-counted attribute overrides that exist only while at least one window is open.

The wrapper installed here is gated by a ``ContextVar`` the window sets, so code running outside any
window (another thread, or this thread after the window closed) always reaches the original. When the
last window closes the original attribute is put back, unless someone patched over the wrapper meanwhile,
in which case the wrapper stays but is inert (it always delegates).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

logger = logging.getLogger(__name__)


class ScopedOverride:
    """``owner.name`` -> ``make_wrapper(original)`` while :meth:`acquire` calls outnumber :meth:`release` calls."""

    def __init__(self, owner: Callable[[], Any], name: str, make_wrapper: Callable[[Callable], Callable]) -> None:
        self._owner = owner
        self._name = name
        self._make_wrapper = make_wrapper
        self._lock = threading.Lock()
        self._count = 0
        self._installed: tuple[Any, Any, Any] | None = None  # (owner, original, wrapper)

    def acquire(self) -> None:
        with self._lock:
            if self._count == 0:
                owner = self._owner()
                original = owner.__dict__.get(self._name) if isinstance(owner, type) else getattr(owner, self._name, None)
                if original is None:  # this library version has no such attribute: nothing to override
                    self._count += 1
                    return
                wrapper = self._make_wrapper(original)
                wrapper.__hybridload_scoped__ = True  # type: ignore[attr-defined]
                setattr(owner, self._name, wrapper)
                self._installed = (owner, original, wrapper)
            self._count += 1

    def release(self) -> None:
        with self._lock:
            self._count -= 1
            if self._count > 0 or self._installed is None:
                return
            owner, original, wrapper = self._installed
            self._installed = None
            current = owner.__dict__.get(self._name) if isinstance(owner, type) else getattr(owner, self._name, None)
            if current is wrapper:
                setattr(owner, self._name, original)
            else:  # patched over by someone else: leave theirs in place; ours is gated and delegates
                logger.debug("%s.%s was patched over; leaving the (inert) wrapper in place", owner, self._name)

    @property
    def active(self) -> bool:
        return self._count > 0
