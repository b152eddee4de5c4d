"""Consistent views of ``sys.modules`` while other threads import.

Iterating ``sys.modules`` (or its ``items()``) while another thread imports raises ``dictionary changed size
during iteration``; ``dict.copy()`` is one C call that holds the GIL throughout, so every scan in hybridload
starts from a copy.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import Any


def modules_snapshot() -> dict[str, Any]:
    """A shallow copy of ``sys.modules`` taken atomically."""
    return sys.modules.copy()


def modules_under(package: str) -> dict[str, ModuleType]:
    """``package`` and its submodules currently in ``sys.modules`` (atomic copy)."""
    prefix = package + "."
    return {name: module for name, module in modules_snapshot().items() if name == package or name.startswith(prefix)}
