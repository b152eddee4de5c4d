"""Errors of the remote-code compatibility layer (derived from ``hybridload.errors``; the lead may re-export them)."""
from __future__ import annotations

from ..errors import HybridloadError


class RemovedTransformersAPIError(HybridloadError, ImportError, RuntimeError):
    """Remote code used a transformers API that this transformers release removed.

    The layer served a stand-in so the module could be imported and the model built; using it (calling,
    instantiating) raises this. Subclasses ImportError (the API is gone) and RuntimeError (it surfaces when
    the code path runs).
    """


class ValueDependentInitError(HybridloadError, RuntimeError):
    """Remote ``__init__`` read the *value* of a meta tensor (``.item()``, ``.tolist()``, ``bool()``...).

    ``location`` is ``"file:line (function)"`` of the remote-code line that asked for the value.
    """

    def __init__(self, message: str, location: str | None = None, operation: str | None = None) -> None:
        super().__init__(message)
        self.location = location
        self.operation = operation


class CompatEntryError(HybridloadError, ValueError):
    """A compatibility entry given to the registry is malformed or clashes with an existing one."""


__all__ = ["RemovedTransformersAPIError", "ValueDependentInitError", "CompatEntryError"]
