"""The substitute registry: symbol path -> reference / twin / triton, user registrations over defaults.

Keys are the dotted path as user code imports the symbol (``fla.modules.ShortConvolution``) or as its defining
module names it (``fla.modules.convolution.ShortConvolution``); defaults list both. Defaults are loaded on first
lookup, so importing this module imports neither torch nor the implementation packages.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Literal

Kind = Literal["reference", "twin", "triton"]
KINDS: tuple[Kind, ...] = ("reference", "twin", "triton")

_lock = threading.Lock()
_user: dict[Kind, dict[str, Any]] = {kind: {} for kind in KINDS}
_defaults: dict[Kind, dict[str, Any]] = {}


@dataclass(frozen=True)
class Substitutes:
    """Every substitute registered for one symbol path (None where there is none)."""

    path: str
    reference: Callable[..., Any] | None
    twin: type | None
    triton: Callable[..., Any] | None


def _load_defaults(kind: Kind) -> dict[str, Any]:
    with _lock:
        table = _defaults.get(kind)
    if table is not None:
        return table
    if kind == "reference":
        table = dict(importlib.import_module("hybridload.reference").DEFAULT_REFERENCES)
    elif kind == "twin":
        table = dict(importlib.import_module("hybridload.twins").DEFAULT_TWINS)
    else:  # "module:function" targets, imported on lookup (importing a kernel module needs no triton)
        table = dict(importlib.import_module("hybridload.kernels").FALLBACKS)
    with _lock:
        return _defaults.setdefault(kind, table)


def _lookup(kind: Kind, path: str) -> Any:
    with _lock:
        if path in _user[kind]:
            return _user[kind][path]
    value = _load_defaults(kind).get(path)
    if kind == "triton" and isinstance(value, str):
        from ..kernels import resolve

        value = resolve(value)
    return value


def reference_for(path: str) -> Callable[..., Any] | None:
    """The pure-PyTorch reference for ``path`` (run by stand-ins on meta/fake tensors), or None."""
    return _lookup("reference", path)


def twin_for(path: str) -> type | None:
    """The structural twin class for ``path`` (built by stand-ins in ``__init__``), or None."""
    return _lookup("twin", path)


def triton_for(path: str) -> Callable[..., Any] | None:
    """hybridload's Triton kernel with ``path``'s signature (served-side fallback), or None."""
    return _lookup("triton", path)


def substitutes_for(path: str) -> Substitutes:
    return Substitutes(path, reference_for(path), twin_for(path), triton_for(path))


def _register(kind: Kind, path: str, value: Any) -> Any:
    if not isinstance(path, str) or not path or path.startswith(".") or " " in path:
        raise ValueError(f"a substitute is registered for a dotted symbol path such as 'pkg.module.fn', got {path!r}")

    def add(item: Any) -> Any:
        with _lock:
            _user[kind][path] = item
        return item

    return add if value is None else add(value)


def register_reference(path: str, fn: Callable[..., Any] | None = None) -> Any:
    """Register a pure-PyTorch reference for ``path``; usable as a decorator."""
    return _register("reference", path, fn)


def register_twin(path: str, twin: type | None = None) -> Any:
    """Register a structural twin class (a ``torch.nn.Module``) for ``path``; usable as a class decorator."""
    return _register("twin", path, twin)


def register_triton(path: str, fn: Callable[..., Any] | None = None) -> Any:
    """Register a Triton kernel with ``path``'s exact signature as its served-side fallback; usable as a decorator."""
    return _register("triton", path, fn)


def unregister(path: str, kind: Kind | None = None) -> None:
    """Remove user registrations of ``path`` (all kinds, or one); defaults cannot be removed, only overridden."""
    with _lock:
        for each in KINDS if kind is None else (kind,):
            _user[each].pop(path, None)
