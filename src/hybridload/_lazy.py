"""Lazy package exports: a name is imported from its module on first attribute access (PEP 562).

Importing hybridload (or one of its packages) then imports neither torch nor transformers; each package keeps
one table ``public name -> defining module`` and gets its ``__getattr__``/``__dir__`` from here.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(package: str, table: Mapping[str, str], namespace: dict[str, Any],
                 public: list[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: a name in ``table`` is imported from its module and cached in
    the package ``namespace``; anything else is an AttributeError. ``public`` is the package's ``__all__``."""

    def __getattr__(name: str) -> Any:
        module_name = table.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return public

    return __getattr__, __dir__
