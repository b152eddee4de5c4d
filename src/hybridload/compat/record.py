"""Which thread is inside a compat window, and the records its firing entries are written to.

Everything the layer installs process-wide (module ``__getattr__`` hooks, the config-subclass hook, the
post-init hook) asks :func:`active` before acting, so a thread outside any window sees plain transformers.
No lock is held for a window's duration (a real load may open a meta build inside it), only for the
short install/uninstall steps.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

_local = threading.local()


@dataclass
class CompatRecord:
    """What one compat window did. ``fired`` lists entry ids in first-fired order (plan/signature headers)."""

    cpu_scalars: bool = False
    fired: list[str] = field(default_factory=list)
    #: entry id -> details (names imported from which module, attributes read on which config class, ...)
    details: dict[str, list[str]] = field(default_factory=dict)
    #: remote-code lines that read a meta tensor's value ("file:line (function) op")
    value_reads: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _fire(self, entry_id: str, detail: str | None) -> None:
        with self._lock:
            if entry_id not in self.fired:
                self.fired.append(entry_id)
            if detail is not None:
                seen = self.details.setdefault(entry_id, [])
                if detail not in seen:
                    seen.append(detail)

    def header(self) -> list[str]:
        """Sorted entry ids, the form a plan or a signature header stores."""
        return sorted(self.fired)

    def differs_from(self, expected: list[str] | tuple[str, ...] | set[str]) -> tuple[list[str], list[str]]:
        """``(missing, extra)`` against the ids a plan recorded (both empty when this side applied the same)."""
        fired, wanted = set(self.fired), set(expected)
        return sorted(wanted - fired), sorted(fired - wanted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fired": self.header(),
            "details": {k: list(v) for k, v in sorted(self.details.items())},
            "value_reads": list(self.value_reads),
            "cpu_scalars": self.cpu_scalars,
        }

    def __bool__(self) -> bool:
        return bool(self.fired)


def _stack() -> list[CompatRecord]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def push(record: CompatRecord) -> None:
    _stack().append(record)


def pop(record: CompatRecord) -> None:
    stack = _stack()
    if stack and stack[-1] is record:
        stack.pop()
    elif record in stack:
        stack.remove(record)


def active() -> bool:
    """True for a thread inside a compat window."""
    return bool(getattr(_local, "stack", None))


def current() -> CompatRecord | None:
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def fire(entry_id: str, detail: str | None = None) -> None:
    """Record that ``entry_id`` served something, in every window open on this thread (nested ones too) and
    in every :func:`observe` record of this thread."""
    for record in list(getattr(_local, "stack", None) or ()) + list(getattr(_local, "observers", None) or ()):
        record._fire(entry_id, detail)


@contextlib.contextmanager
def observe() -> Iterator[CompatRecord]:
    """Collect what compat windows opened by this thread meanwhile fired, without opening one.

    A plan uses it around "load config, build on meta" to learn which entries the model needs, whichever
    integration opened the windows (``AutoConfig.from_pretrained``, ``from_config``).
    """
    observers = getattr(_local, "observers", None)
    if observers is None:
        observers = _local.observers = []
    record = CompatRecord()
    observers.append(record)
    try:
        yield record
    finally:
        observers.remove(record)
