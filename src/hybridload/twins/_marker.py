"""How a class declares which kernel class it is the twin of, and under which import paths it is served."""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T", bound=type)


def twin_of(real: str, *aliases: str) -> Callable[[T], T]:
    """Mark ``cls`` as the structural twin of ``real`` (``"<defining module>.<qualname>"``).

    ``real`` is what tree signatures record for the twin, so a client tree built with twins compares equal
    to the server tree built with the real class. ``aliases`` are the other paths user code imports the
    class from (package re-exports, old module names); the twin is registered under all of them.
    """

    def mark(cls: T) -> T:
        cls.__hybridload_twin_of__ = real  # type: ignore[attr-defined]
        cls.__hybridload_twin_paths__ = (real, *aliases)  # type: ignore[attr-defined]
        return cls

    return mark


def real_name(cls: type) -> str:
    """The class path tree signatures record: the twinned class for a twin, else module + qualname.

    Read from the class's own ``__dict__`` so a subclass of a twin (remote code's ``class MyNorm(RMSNorm)``)
    keeps its own name.
    """
    marked = cls.__dict__.get("__hybridload_twin_of__")
    return marked if isinstance(marked, str) else f"{cls.__module__}.{cls.__qualname__}"
