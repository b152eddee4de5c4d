"""Evict remote-code modules (and their Auto-class registrations) that ran while stand-ins were visible.

transformers re-executes a cached dynamic module only when its source hash changes, and ``from_config``
registers the remote class in the Auto mappings, after which ``from_config``/``from_pretrained`` reuse that
class object without re-executing anything. Either way a later real load would call the stand-ins. So, on
exit from a window that served stand-ins: modules (not packages) under ``transformers_modules`` that appeared
or were re-executed are removed from ``sys.modules``, and Auto-mapping entries added or changed meanwhile that
point into an evicted module are reverted. Objects already built from them keep working.
"""
from __future__ import annotations

import sys
from typing import Any

from ..hooks.sys_modules import modules_snapshot

PREFIX = "transformers_modules."
_AUTO_PREFIX = "transformers.models.auto."


def _fingerprint(module: object) -> tuple[int, str | None]:
    return id(module), getattr(module, "__transformers_module_hash__", None)


def _auto_mappings() -> list[Any]:
    found: dict[int, Any] = {}
    for name, module in modules_snapshot().items():
        if not name.startswith(_AUTO_PREFIX) or module is None:
            continue
        for value in list(vars(module).values()):
            extra = getattr(value, "_extra_content", None) if not isinstance(value, type) else None
            if isinstance(extra, dict):
                found[id(value)] = value
    return list(found.values())


class Snapshot:
    """Remote-code modules and Auto-mapping registrations as they were when the window opened."""

    def __init__(self) -> None:
        self.modules = {n: _fingerprint(m) for n, m in modules_snapshot().items() if n.startswith(PREFIX)}
        self.mappings = [(m, dict(m._extra_content)) for m in _auto_mappings()]

    def evict_changed(self) -> list[str]:
        evicted = []
        for name, module in modules_snapshot().items():
            if not name.startswith(PREFIX) or hasattr(module, "__path__"):
                continue
            if self.modules.get(name) != _fingerprint(module):
                sys.modules.pop(name, None)
                evicted.append(name)
        if evicted:
            self._revert_registrations(set(evicted))
        return sorted(evicted)

    def _revert_registrations(self, evicted: set[str]) -> None:
        before = {id(m): saved for m, saved in self.mappings}
        for mapping in _auto_mappings():
            saved = before.get(id(mapping), {})
            for key, value in list(mapping._extra_content.items()):
                if saved.get(key, _MISSING) is value:
                    continue
                if getattr(value, "__module__", "") in evicted or getattr(key, "__module__", "") in evicted:
                    if key in saved:
                        mapping._extra_content[key] = saved[key]
                    else:
                        del mapping._extra_content[key]


_MISSING = object()


def _binds_stand_in(module: Any) -> bool:
    from .standins import is_stand_in

    return any(
        is_stand_in(value) or getattr(value, "__hybridload_fallback_for__", None) is not None
        for value in list(vars(module).values())
    )


def evict_tainted() -> list[str]:
    """Evict every remote-code module whose globals hold a stand-in or a hybridload Triton fallback (and the
    Auto registrations into it).

    Run before a real load: whatever window a module last ran in, a real load must re-execute it and bind what
    this load's policy says.
    """
    tainted = sorted(
        name
        for name, module in modules_snapshot().items()
        if name.startswith(PREFIX) and module is not None and not hasattr(module, "__path__") and _binds_stand_in(module)
    )
    for name in tainted:
        sys.modules.pop(name, None)
    if tainted:
        gone = set(tainted)
        for mapping in _auto_mappings():
            for key, value in list(mapping._extra_content.items()):
                if getattr(value, "__module__", "") in gone or getattr(key, "__module__", "") in gone:
                    del mapping._extra_content[key]
    return tainted
