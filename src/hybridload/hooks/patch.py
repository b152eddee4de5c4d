"""``Patch``: replace one attribute of a foreign object by a wrapper of it, reversibly and only while held.

One primitive serves every patch hybridload makes (transformers, nnsight, torch, builtins, importlib):

* it is reference-counted: a window ``acquire()``s it for its duration, ``install()`` for the process; the first
  holder applies it, the last one releases it;
* it restores the original only if the attribute is still ours; if another library wrapped over it meanwhile,
  ours stays in their chain but is *inert*: every wrapper is a gate that calls the original whenever the patch
  is not held;
* each foreign attribute is wrapped at most once: a second, different patch of the same attribute is refused
  (:class:`~hybridload.errors.InternalError`), so the order in which parts install cannot change behaviour;
* one marker (:data:`MARKER`) on every wrapper names the patch, so anyone can tell a hybridload wrapper.

Functions, classmethods and staticmethods are wrapped as such; an attribute the owner does not have (a
module ``__getattr__``) is added and removed again.
"""
from __future__ import annotations

import functools
import logging
import threading
from typing import Any, Callable

from ..errors import InternalError
from .passthrough import passes_through

logger = logging.getLogger(__name__)

MARKER = "__hybridload_patch__"
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "<missing>", "__bool__": lambda self: False})()

_registry_lock = threading.Lock()
_applied: dict[tuple[int, str], "Patch"] = {}  # (id(owner), name) -> the patch currently applied there


def is_patched(value: Any) -> bool:
    """True for a hybridload wrapper (function, classmethod or staticmethod)."""
    return getattr(getattr(value, "__func__", value), MARKER, None) is not None


def _own(owner: Any, name: str) -> Any:
    try:
        return vars(owner).get(name, MISSING)
    except TypeError:  # objects without __dict__
        return getattr(owner, name, MISSING)


def _inherited(owner: Any, name: str) -> Any:
    """The attribute a class inherits (its descriptor as found in the MRO), or MISSING."""
    for base in getattr(owner, "__mro__", ())[1:]:
        if name in vars(base):
            return vars(base)[name]
    return MISSING


class Patch:
    """``owner.name`` -> ``make(original)`` while held (see the module docstring).

    ``owner`` is the object, or a zero-argument callable returning it (``lazy=True``), resolved at the first
    ``acquire`` so that defining a patch imports nothing. ``make`` receives the original *function* (the
    ``__func__`` of a classmethod/staticmethod) or :data:`MISSING`, and returns the replacement function.
    """

    def __init__(self, owner: Any, name: str, make: Callable[[Any], Callable[..., Any]], *, lazy: bool = False, key: str | None = None) -> None:
        self._owner_spec = owner
        self._lazy = lazy
        self.name = name
        self._make = make
        if key is None:
            key = name if lazy else f"{getattr(owner, '__qualname__', getattr(owner, '__name__', 'object'))}.{name}"
        self.key = key
        self._lock = threading.RLock()
        self._count = 0
        self._state: tuple[Any, Any, Any] | None = None  # (owner, original descriptor or MISSING, installed value)
        self.applications = 0  # how many times it was applied (tests: each window applies it once)

    # -- holding -------------------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        return self._count > 0

    def acquire(self) -> bool:
        """Hold the patch; the first holder applies it. False when the owner lacks the attribute's owner."""
        with self._lock:
            if self._count == 0:
                self._apply()
            self._count += 1
            return self._state is not None

    def release(self) -> None:
        """Let go; the last holder restores the original (only if the attribute is still ours)."""
        with self._lock:
            if self._count == 0:
                raise InternalError(f"patch {self.key} released more often than acquired")
            self._count -= 1
            if self._count == 0:
                self._restore()

    def __enter__(self) -> "Patch":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- applying ------------------------------------------------------------------------------------------
    def owner(self) -> Any:
        return self._owner_spec() if self._lazy else self._owner_spec

    def _apply(self) -> None:
        owner = self.owner()
        if owner is None:
            return
        original = _own(owner, self.name)
        effective = original if original is not MISSING else _inherited(owner, self.name)
        if is_patched(effective):
            mine = getattr(getattr(effective, "__func__", effective), MARKER)
            raise InternalError(
                f"{owner!r}.{self.name} is already wrapped by hybridload patch {mine!r}; patch {self.key!r} "
                "would wrap it twice (each foreign attribute has exactly one hybridload patch)"
            )
        kind = type(effective) if isinstance(effective, (classmethod, staticmethod)) else None
        function = effective.__func__ if kind is not None else effective
        installed = self._wrap(function, kind)
        try:
            setattr(owner, self.name, installed)
        except (AttributeError, TypeError) as exc:  # a read-only owner: nothing to restore
            logger.debug("cannot patch %r.%s: %s", owner, self.name, exc)
            return
        self._state = (owner, original, installed)
        self.applications += 1
        with _registry_lock:
            _applied[(id(owner), self.name)] = self

    def _wrap(self, function: Any, kind: type | None) -> Any:
        made = self._make(function)
        patch = self
        name = self.name

        @passes_through
        def gate(*args: Any, **kwargs: Any) -> Any:
            if patch._count:
                return made(*args, **kwargs)
            if function is MISSING:
                owner_name = getattr(patch._state[0] if patch._state else None, "__name__", "object")
                raise AttributeError(f"{owner_name!r} has no attribute {args[-1] if args else name!r}")
            return function(*args, **kwargs)

        if function is not MISSING and callable(function):
            functools.update_wrapper(gate, function)
            gate.__wrapped__ = function  # type: ignore[attr-defined]
        else:
            gate.__name__ = gate.__qualname__ = name
        setattr(gate, MARKER, self.key)
        return kind(gate) if kind is not None else gate

    def _restore(self) -> None:
        state, self._state = self._state, None
        if state is None:
            return
        owner, original, installed = state
        with _registry_lock:
            if _applied.get((id(owner), self.name)) is self:
                del _applied[(id(owner), self.name)]
        if _own(owner, self.name) is not installed:
            # someone wrapped over ours: leave their wrapper; ours (in their chain) is an inert gate now
            logger.debug("%r.%s was patched over; leaving the inert hybridload gate in place", owner, self.name)
            return
        if original is MISSING:
            delattr(owner, self.name)
        else:
            setattr(owner, self.name, original)

    def __repr__(self) -> str:
        return f"<hybridload Patch {self.key} held={self._count}>"


def applied_patches() -> list[Patch]:
    """The patches applied right now (tests and ``hybridload doctor``)."""
    with _registry_lock:
        return list(_applied.values())
