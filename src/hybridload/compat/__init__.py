"""Remote code written for transformers 4.x, built on transformers 5.x the same way on client and server.

``compat_window()`` serves what 5.x removed or moved (names, capability probes, removed run-time APIs as
stand-ins that raise when used, 4.x config defaults, 4.x weight tying) to remote code only, only inside the
window, and records which entries fired. See docs/compat.md for every entry.

Importing this package imports neither torch nor transformers.
"""
from __future__ import annotations

from ..errors import CompatEntryError, RemovedTransformersAPIError, ValueDependentInitError
from .catalog import (
    CompatEntry,
    alias,
    config_default,
    entries,
    get_entry,
    moved,
    probe,
    register_entry,
    removed,
    unregister_entry,
)
from .removed_api import is_compat_stand_in
from .record import CompatRecord, observe
from .compat_window import compat_options, compat_window, cpu_scalars_requested, real_load_window

__all__ = [
    "CompatEntry",
    "CompatEntryError",
    "CompatRecord",
    "RemovedTransformersAPIError",
    "ValueDependentInitError",
    "alias",
    "compat_options",
    "compat_window",
    "config_default",
    "cpu_scalars_requested",
    "entries",
    "get_entry",
    "is_compat_stand_in",
    "moved",
    "observe",
    "probe",
    "real_load_window",
    "register_entry",
    "removed",
    "unregister_entry",
]
