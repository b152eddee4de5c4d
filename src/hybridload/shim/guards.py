"""Keep everyone but the window's own imports truthful while stand-ins sit in ``sys.modules``.

Two things would otherwise leak out of a window:

* transformers' availability helpers (``is_mamba_2_ssm_available`` ...) consult ``_is_package_available``,
  which would find the stand-in. It is wrapped for the window to answer from the real environment, and any
  ``lru_cache`` of ``transformers.utils.import_utils`` that gained entries during the window is cleared on
  exit, so no answer computed while stand-ins were visible outlives it.
* framework probes: torch & co. must get the truthful answer even in the window's thread (requester.py).
* other threads: ``sys.modules`` is process-global. While a window is open, ``builtins.__import__``,
  ``importlib.import_module`` and ``importlib.util.find_spec`` are wrapped so that a thread outside the
  window asking for a stood-in package gets what it would get without hybridload (the recorded
  ImportError, ``None``, or the real spec). Direct ``sys.modules[...]`` reads are not covered.
"""
from __future__ import annotations

import builtins
import importlib
import importlib.util
import sys
from typing import Any

from . import probe
from .registry import kernel_packages, top_level
from .requester import is_framework, requester_from_stack
from .standins import StandInModule
from .state import owns_window, state, suspended

_IMPORT_UTILS = "transformers.utils.import_utils"


def _served_verdict(name: str) -> probe.Verdict | None:
    package = top_level(name)
    if package in state.served and isinstance(sys.modules.get(package), StandInModule):
        return probe.known(package) or probe.Verdict(package, "absent")
    return None


def _hidden(requester: str | None) -> bool:
    """Whether a stood-in package must look as it really is to this requester."""
    return not owns_window() or is_framework(requester)


def _hidden_verdict(name: str, requester: str | None) -> probe.Verdict | None:
    """The verdict to answer with when ``name`` is stood in for but this requester must see the truth."""
    if name.startswith(".") or not state.served or not _hidden(requester):
        return None
    return _served_verdict(name)


class ImportGuards:
    """The import-function wrappers of one outermost window; ``restore`` puts the originals back."""

    def __init__(self) -> None:
        self._import = original_import = builtins.__import__
        self._import_module = original_import_module = importlib.import_module
        self._find_spec = original_find_spec = importlib.util.find_spec

        def guarded_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
            if level == 0:
                verdict = _hidden_verdict(name, globals.get("__name__") if isinstance(globals, dict) else None)
                if verdict is not None:
                    raise verdict.import_error()
            return original_import(name, globals, locals, fromlist, level)

        def guarded_import_module(name: str, package: str | None = None) -> Any:
            verdict = _hidden_verdict(name, requester_from_stack(sys._getframe(1))) if state.served else None
            if verdict is not None:
                raise verdict.import_error()
            return original_import_module(name, package)

        def guarded_find_spec(name: str, package: str | None = None) -> Any:
            verdict = _hidden_verdict(name, requester_from_stack(sys._getframe(1))) if state.served else None
            if verdict is not None:
                return None if verdict.status == "absent" or name != verdict.package else verdict.real_spec
            return original_find_spec(name, package)

        self.guarded = (guarded_import, guarded_import_module, guarded_find_spec)
        builtins.__import__ = guarded_import
        importlib.import_module = guarded_import_module
        importlib.util.find_spec = guarded_find_spec

    def restore(self) -> None:
        guarded_import, guarded_import_module, guarded_find_spec = self.guarded
        # only undo what is still ours: never clobber a wrapper somebody installed after us
        if builtins.__import__ is guarded_import:
            builtins.__import__ = self._import
        if importlib.import_module is guarded_import_module:
            importlib.import_module = self._import_module
        if importlib.util.find_spec is guarded_find_spec:
            importlib.util.find_spec = self._find_spec


def _lru_functions(module: Any) -> list[Any]:
    seen: dict[int, Any] = {}
    for value in vars(module).values():
        if callable(getattr(value, "cache_info", None)) and callable(getattr(value, "cache_clear", None)):
            seen[id(value)] = value
    return list(seen.values())


class AvailabilityGuard:
    """Truthful ``_is_package_available`` for the window; cache hygiene on exit."""

    def __init__(self) -> None:
        self._module = sys.modules.get(_IMPORT_UTILS)
        self._sizes: dict[int, int] = {}
        self._original = None
        if self._module is None:
            return
        for fn in _lru_functions(self._module):
            self._sizes[id(fn)] = fn.cache_info().currsize
        original = self._original = getattr(self._module, "_is_package_available", None)
        if original is None:
            return

        def _is_package_available(pkg_name: str, return_version: bool = False) -> Any:
            package = top_level(pkg_name)
            if package not in kernel_packages():
                return original(pkg_name, return_version)
            with suspended():
                verdict = _served_verdict(pkg_name)
                if verdict is None:
                    return original(pkg_name, return_version)
            exists = verdict.status == "broken" and verdict.real_spec is not None
            if not exists:
                return (False, "N/A") if return_version else (False, None)
            if not return_version:
                return True, None
            if verdict.dist_version is None:
                # without metadata transformers imports the package, which fails here: mirror that
                raise verdict.import_error()
            return True, verdict.dist_version

        _is_package_available.__wrapped__ = original  # type: ignore[attr-defined]
        self._patched = _is_package_available
        self._module._is_package_available = _is_package_available

    def restore(self) -> list[str]:
        """Undo the wrapper; clear caches that grew inside the window. Returns the cleared names."""
        module = self._module
        if module is None:
            module = sys.modules.get(_IMPORT_UTILS)
            if module is None:
                return []
            # transformers was first imported inside the window: every cache entry is suspect
            functions = _lru_functions(module)
            for fn in functions:
                fn.cache_clear()
            return sorted(getattr(fn, "__name__", "?") for fn in functions)
        if self._original is not None and getattr(module, "_is_package_available", None) is self._patched:
            module._is_package_available = self._original
        cleared = []
        for fn in _lru_functions(module):
            if fn.cache_info().currsize != self._sizes.get(id(fn), 0):
                fn.cache_clear()
                cleared.append(getattr(fn, "__name__", "?"))
        return sorted(cleared)
