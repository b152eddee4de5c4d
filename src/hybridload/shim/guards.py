"""Keep everyone but the window's own imports truthful while stand-ins sit in ``sys.modules``.

Three things would otherwise leak out of a window:

* transformers' availability helpers (``is_mamba_2_ssm_available`` ...) consult ``_is_package_available``,
  which would find the stand-in. It is wrapped for the window to answer from the real environment, and any
  ``lru_cache`` of ``transformers.utils.import_utils`` that gained entries during the window is cleared on
  exit, so no answer computed while stand-ins were visible outlives it.
* framework probes: torch & co. must get the truthful answer even in the window's thread (requester.py).
* other threads: ``sys.modules`` is process-global. While a window is open, ``builtins.__import__``,
  ``importlib.import_module`` and ``importlib.util.find_spec`` are wrapped so that a thread outside the
  window asking for a stood-in package gets what it would get without hybridload (the recorded
  ImportError, the real module of a driverless package, ``None``, or the real spec). The check runs before
  *and after* the real import machinery: a thread that passed the first check while the window's thread was
  still importing the package would otherwise receive the stand-in the window just put into ``sys.modules``.
  Direct ``sys.modules[...]`` reads are not covered.

All four wrappers are :class:`~hybridload.hooks.Patch` objects held by the outermost window.
"""
from __future__ import annotations

import builtins
import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any, Callable

from ..hooks.passthrough import passes_through
from ..hooks.patch import Patch
from . import probe
from .ownership import owns_window, state, suspended
from .packages import kernel_packages, top_level
from .requester import is_framework, requester_from_stack
from .standins import STAND_IN_ORIGIN, StandInModule

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


def _truth(verdict: probe.Verdict, name: str) -> ModuleType:
    """What a plain import of ``name`` gives on this machine: the real module of a driverless package, else
    the import error a plain import raises."""
    real = verdict.real_modules.get(name) if verdict.real_modules else None
    if real is not None:
        return real
    raise verdict.import_error(name)


def _import_result(verdict: probe.Verdict, name: str, fromlist: Any) -> ModuleType:
    """``__import__``'s return value from the truthful modules: the top-level package unless ``fromlist``."""
    module = _truth(verdict, name)
    return module if fromlist else _truth(verdict, top_level(name))


def _after(result: Any, name: str, requester: str | None, fromlist: Any = None) -> Any:
    """A stand-in the real import machinery returned to someone who must see the truth: replace it."""
    if not isinstance(result, StandInModule) or not _hidden(requester):
        return result
    verdict = _served_verdict(name) or probe.known(top_level(name)) or probe.Verdict(top_level(name), "absent")
    return _truth(verdict, name) if fromlist is None else _import_result(verdict, name, fromlist)


def _make_import(original: Callable[..., Any]) -> Callable[..., Any]:
    @passes_through
    def __import__(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level != 0:
            return original(name, globals, locals, fromlist, level)
        requester = globals.get("__name__") if isinstance(globals, dict) else None
        verdict = _hidden_verdict(name, requester) if state.served else None
        if verdict is not None:
            return _import_result(verdict, name, fromlist)
        # even with nothing served when we looked, a window may put its stand-in in place meanwhile
        return _after(original(name, globals, locals, fromlist, level), name, requester, fromlist)

    return __import__


def _make_import_module(original: Callable[..., Any]) -> Callable[..., Any]:
    @passes_through
    def import_module(name: str, package: str | None = None) -> Any:
        requester = requester_from_stack(sys._getframe(1)) if state.served else None
        verdict = _hidden_verdict(name, requester) if state.served else None
        if verdict is not None:
            return _truth(verdict, name)
        result = original(name, package)
        if isinstance(result, StandInModule):
            return _after(result, name, requester_from_stack(sys._getframe(1)))
        return result

    return import_module


def _make_find_spec(original: Callable[..., Any]) -> Callable[..., Any]:
    @passes_through
    def find_spec(name: str, package: str | None = None) -> Any:
        verdict = _hidden_verdict(name, requester_from_stack(sys._getframe(1))) if state.served else None
        if verdict is None:
            spec = original(name, package)
            if spec is None or getattr(spec, "origin", None) != STAND_IN_ORIGIN:
                return spec
            if not _hidden(requester_from_stack(sys._getframe(1))):
                return spec
            verdict = _served_verdict(name) or probe.known(top_level(name)) or probe.Verdict(top_level(name), "absent")
        if verdict.status == "absent":
            return None
        real = verdict.real_modules.get(name) if verdict.real_modules else None
        if real is not None:
            return real.__spec__
        return verdict.real_spec if name == verdict.package else None

    return find_spec


#: the import functions a window guards, held by the outermost window
IMPORT_PATCHES = (
    Patch(builtins, "__import__", _make_import, key="builtins.__import__"),
    Patch(importlib, "import_module", _make_import_module, key="importlib.import_module"),
    Patch(importlib.util, "find_spec", _make_find_spec, key="importlib.util.find_spec"),
)


def lru_functions(module: Any) -> list[Any]:
    """The ``functools.lru_cache``/``cache`` functions defined in ``module`` (availability caches)."""
    seen: dict[int, Any] = {}
    for value in list(vars(module).values()):
        if callable(getattr(value, "cache_info", None)) and callable(getattr(value, "cache_clear", None)):
            seen[id(value)] = value
    return list(seen.values())


def _make_is_package_available(original: Callable[..., Any]) -> Callable[..., Any]:
    @passes_through
    def _is_package_available(pkg_name: str, return_version: bool = False) -> Any:
        package = top_level(pkg_name)
        if package not in kernel_packages():
            return original(pkg_name, return_version)
        with suspended():
            verdict = _served_verdict(pkg_name)
            if verdict is None:
                return original(pkg_name, return_version)
        exists = verdict.status in ("broken", "driverless") and verdict.real_spec is not None
        if not exists:
            return (False, "N/A") if return_version else (False, None)
        if not return_version:
            return True, None
        if verdict.dist_version is None:
            if verdict.status == "driverless":
                return True, getattr(verdict.real_modules.get(package), "__version__", "N/A")
            # without metadata transformers imports the package, which fails here: mirror that
            raise verdict.import_error()
        return True, verdict.dist_version

    return _is_package_available


AVAILABILITY_PATCH = Patch(
    lambda: sys.modules.get(_IMPORT_UTILS), "_is_package_available", _make_is_package_available, lazy=True,
    key="transformers.utils.import_utils._is_package_available",
)


class AvailabilityGuard:
    """Truthful ``_is_package_available`` for the window; cache hygiene on exit."""

    def __init__(self) -> None:
        self._module = sys.modules.get(_IMPORT_UTILS)
        self._sizes = {id(fn): fn.cache_info().currsize for fn in lru_functions(self._module)} if self._module else {}
        self._acquired = self._module is not None
        if self._acquired:
            AVAILABILITY_PATCH.acquire()

    def restore(self) -> list[str]:
        """Undo the wrapper; clear caches that grew inside the window. Returns the cleared names."""
        if self._acquired:
            AVAILABILITY_PATCH.release()
        module = self._module
        if module is None:
            module = sys.modules.get(_IMPORT_UTILS)
            if module is None:
                return []
            # transformers was first imported inside the window: every cache entry is suspect
            functions = lru_functions(module)
            for fn in functions:
                fn.cache_clear()
            return sorted(getattr(fn, "__name__", "?") for fn in functions)
        cleared = []
        for fn in lru_functions(module):
            if fn.cache_info().currsize != self._sizes.get(id(fn), 0):
                fn.cache_clear()
                cleared.append(getattr(fn, "__name__", "?"))
        return sorted(cleared)
