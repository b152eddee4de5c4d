"""Pure-PyTorch reference implementations of kernel functions, run by stand-ins on meta/fake tensors.

With only meta or fake tensors there is no data, so running the reference only propagates shapes and
dtypes (what nnsight's ``scan()`` needs). With real tensors a stand-in still raises
KernelUnavailableError: hybridload never silently swaps a kernel for a slow path on real data.
"""
from __future__ import annotations

import importlib
import threading
from typing import Callable

_lock = threading.Lock()
_user_refs: dict[str, Callable] = {}
_defaults: dict[str, Callable] | None = None


def _default_references() -> dict[str, Callable]:
    global _defaults
    if _defaults is None:
        try:
            module = importlib.import_module("hybridload.reference")
        except ModuleNotFoundError as exc:  # pragma: no cover - only while the package is being built
            if exc.name != "hybridload.reference":
                raise
            _defaults = {}
        else:
            _defaults = dict(getattr(module, "DEFAULT_REFERENCES", {}))
    return _defaults


def register_reference(symbol_path: str, fn: Callable | None = None) -> Callable:
    """Register a pure-torch reference for ``symbol_path``; usable as a decorator."""

    def _register(f: Callable) -> Callable:
        with _lock:
            _user_refs[symbol_path] = f
        return f

    return _register if fn is None else _register(fn)


def unregister_reference(symbol_path: str) -> None:
    with _lock:
        _user_refs.pop(symbol_path, None)


def reference_for(symbol_path: str) -> Callable | None:
    with _lock:
        if symbol_path in _user_refs:
            return _user_refs[symbol_path]
    return _default_references().get(symbol_path)
