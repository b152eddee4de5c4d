"""Reversible attribute patches: every ``set`` remembers what was there so ``restore_all`` undoes it exactly."""
from __future__ import annotations

import threading
from typing import Any

_MISSING = object()


class PatchSet:
    """An ordered, thread-safe record of attribute replacements that can be undone in reverse order."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._saved: list[tuple[Any, str, Any]] = []
        self._keys: set[tuple[int, str]] = set()

    def set(self, owner: Any, name: str, value: Any) -> None:
        """Replace ``owner.name`` (class dict entry for classes) with ``value``; first original wins."""
        with self._lock:
            key = (id(owner), name)
            if key not in self._keys:
                original = owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else getattr(owner, name, _MISSING)
                self._saved.append((owner, name, original))
                self._keys.add(key)
            setattr(owner, name, value)

    def restore_all(self) -> None:
        with self._lock:
            while self._saved:
                owner, name, original = self._saved.pop()
                if original is _MISSING:
                    try:
                        delattr(owner, name)
                    except AttributeError:
                        pass
                else:
                    setattr(owner, name, original)
            self._keys.clear()

    def __len__(self) -> int:
        return len(self._saved)
