"""Remote-code modules hold the device answers they read at import: execute them under the window's profile,
and never let such a module outlive the window.

transformers re-executes a cached dynamic module only when its source changes, so a module imported earlier
(truthfully, or under another profile) keeps its module-level answers (``SUPPORT_BF16 = ...``). On entry, a
window whose profile differs from this machine evicts the resident remote modules of every remote package
whose source mentions ``cuda`` (a module-level answer can only come from such a package; its other modules may
have imported the answer from it); on exit it evicts every remote module executed meanwhile, and the
Auto-class registrations pointing into them, so later truthful builds and real loads re-execute them.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from ..shim.eviction import PREFIX, Snapshot

_mentions: dict[tuple[str, float], bool] = {}  # (file, mtime) -> source mentions "cuda"


def _remote_modules() -> dict[str, Any]:
    return {
        name: module
        for name, module in list(sys.modules.items())
        if name.startswith(PREFIX) and module is not None and not hasattr(module, "__path__")
    }


def _mentions_cuda(module: Any) -> bool:
    path = getattr(module, "__file__", None)
    if not path:
        return True  # unknown source: assume it may read the device
    try:
        stamp = (path, os.stat(path).st_mtime)
        cached = _mentions.get(stamp)
        if cached is None:
            with open(path, encoding="utf-8", errors="replace") as fh:
                cached = _mentions[stamp] = "cuda" in fh.read()
        return cached
    except OSError:
        return True


def evict(names: set[str]) -> None:
    """Drop ``names`` from sys.modules and the Auto-class registrations that point into them."""
    from ..shim.eviction import _auto_mappings

    for name in names:
        sys.modules.pop(name, None)
    for mapping in _auto_mappings():
        for key, value in list(mapping._extra_content.items()):
            if getattr(value, "__module__", "") in names or getattr(key, "__module__", "") in names:
                del mapping._extra_content[key]


class ModuleTags:
    """Module bookkeeping of one outermost window whose profile differs from this machine."""

    def __init__(self, profile_key: str) -> None:
        self.profile_key = profile_key
        self._snapshot: Snapshot | None = None

    def evict_stale(self) -> list[str]:
        """Evict resident remote modules of packages that may read the device; then remember what is left."""
        modules = _remote_modules()
        packages = {name.rpartition(".")[0] for name, module in modules.items() if _mentions_cuda(module)}
        stale = {name for name in modules if name.rpartition(".")[0] in packages}
        if stale:
            evict(stale)
        self._snapshot = Snapshot()
        return sorted(stale)

    def evict_executed(self) -> list[str]:
        """Evict the remote modules executed (or re-executed) since :meth:`evict_stale`."""
        if self._snapshot is None:
            return []
        snapshot, self._snapshot = self._snapshot, None
        return snapshot.evict_changed()
