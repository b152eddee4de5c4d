"""Stand-ins for transformers APIs that 5.x removed and that remote code only needs at run time.

A stand-in is a class, so remote code can import it, subclass it, name it in annotations or ``isinstance``
checks (always False) at import and build time. Calling or instantiating it raises
RemovedTransformersAPIError naming the removed API: never a silent replacement.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import RemovedTransformersAPIError

if TYPE_CHECKING:  # pragma: no cover
    from .catalog import CompatEntry


def removed_message(entry: CompatEntry, why: str) -> str:
    return (
        f"{entry.what} was removed in transformers {entry.removed_in} ({why}). The remote code imports it; "
        f"hybridload served a stand-in so the model could be imported and built, but this code path cannot run "
        f"on this transformers. Use a transformers release before {entry.removed_in} for this model, or update "
        f"its remote code (compat entry {entry.id!r})."
    )


class _RemovedAPIMeta(type):
    """Metaclass of stand-ins: calling the class (instantiating, or calling it as a function) raises."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise RemovedTransformersAPIError(cls.__hybridload_message__)

    def __repr__(cls) -> str:
        return f"<hybridload stand-in for removed {cls.__hybridload_what__}>"


def removed_api_stand_in(entry: CompatEntry, why: str) -> type:
    """A class standing in for ``entry.what``; subclasses raise too when instantiated."""
    return _RemovedAPIMeta(
        entry.name,
        (),
        {
            "__module__": entry.modules[0] if entry.modules else "transformers",
            "__qualname__": entry.name,
            "__doc__": removed_message(entry, why),
            "__hybridload_compat__": entry.id,
            "__hybridload_what__": entry.what,
            "__hybridload_message__": removed_message(entry, why),
        },
    )


def is_compat_stand_in(obj: Any) -> bool:
    """True for stand-ins of removed transformers APIs (and classes derived from them)."""
    return isinstance(obj, _RemovedAPIMeta)
