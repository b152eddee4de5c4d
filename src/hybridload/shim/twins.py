"""Structural twins: pure-PyTorch classes built in place of kernel-provided classes inside a shim window.

A twin has the real class's constructor signature, parameters, buffers and relevant base class, so a meta
tree built with twins equals the tree the server builds with the real package. Keys are the symbol's
dotted path as the *defining* module names it (``fla.modules.convolution.ShortConvolution``) or as user
code imports it (``fla.modules.ShortConvolution``); both are looked up.
"""
from __future__ import annotations

import importlib
import threading
from typing import Callable

_lock = threading.Lock()
_user_twins: dict[str, type] = {}
_defaults: dict[str, type] | None = None


def _default_twins() -> dict[str, type]:
    global _defaults
    if _defaults is None:
        try:
            module = importlib.import_module("hybridload.twins")
        except ModuleNotFoundError as exc:  # pragma: no cover - only while the package is being built
            if exc.name != "hybridload.twins":
                raise
            _defaults = {}
        else:
            _defaults = dict(getattr(module, "DEFAULT_TWINS", {}))
    return _defaults


def register_twin(symbol_path: str, twin: type | None = None) -> Callable[[type], type] | type:
    """Register ``twin`` (a torch.nn.Module subclass) for ``symbol_path``; usable as a class decorator."""

    def _register(cls: type) -> type:
        with _lock:
            _user_twins[symbol_path] = cls
        return cls

    return _register if twin is None else _register(twin)


def unregister_twin(symbol_path: str) -> None:
    with _lock:
        _user_twins.pop(symbol_path, None)


def twin_for(symbol_path: str) -> type | None:
    """The twin class for a stand-in path, user registrations first, else None."""
    with _lock:
        if symbol_path in _user_twins:
            return _user_twins[symbol_path]
    return _default_twins().get(symbol_path)
