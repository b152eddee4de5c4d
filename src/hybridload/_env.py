"""Environment switches, read at the time they matter (never cached), so tests and operators can flip them."""
from __future__ import annotations

import os

_TRUE = {"1", "true", "yes", "on"}


def flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in _TRUE


def csv(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def disabled() -> bool:
    """HYBRIDLOAD_DISABLE=1 turns the import-time integration off."""
    return flag("HYBRIDLOAD_DISABLE")
