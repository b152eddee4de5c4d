"""The PEP 451 finder/loader pair that serves stand-ins for absent or broken kernel packages.

Only the thread that owns the open shim window sees it. For a registered top-level package it:

* returns None when the package really imports (its verdict is "real"): the real package is used;
* for a present package with no verdict yet, returns the real spec with a guarding loader that runs the
  real import with stand-ins hidden; if that import raises, the partial modules are removed and a stand-in
  takes the module's place in ``sys.modules`` (verdict "broken");
* for an absent package (verdict "absent") or a broken one, returns a stand-in spec.
Submodules of a stood-in package are stand-ins at any depth.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Callable

from ..hooks.sys_modules import modules_snapshot, modules_under
from . import probe
from .packages import kernel_packages, top_level
from .requester import is_framework, requester_from_stack
from .standins import STAND_IN_ORIGIN, StandInModule, new_module
from .ownership import in_window, mark_served, suspended

ORIGIN = STAND_IN_ORIGIN


def displace_real_modules(top: StandInModule, displaced: dict[str, ModuleType]) -> None:
    """Replace the package's non-stand-in modules (stale halves of an earlier failed import) by stand-ins.

    The originals are put back when the window closes, so ``sys.modules`` ends as it began; meanwhile they
    cannot mix real, half-built submodules into the stand-in package.
    """
    package = top.__name__
    stale = sorted(
        name
        for name, module in modules_snapshot().items()
        if name.startswith(package + ".") and not isinstance(module, StandInModule)
    )
    if package in sys.modules and not isinstance(sys.modules[package], StandInModule):
        displaced.setdefault(package, sys.modules.pop(package))
    made: dict[str, ModuleType] = {package: top}
    for name in stale:  # sorted: parents before children
        displaced.setdefault(name, sys.modules.pop(name))
        spec = importlib.machinery.ModuleSpec(name, top.__spec__.loader, origin=ORIGIN, is_package=True)
        module = new_module(name, top.__hybridload_package__, top.__hybridload_reason__, spec)
        sys.modules[name] = made[name] = module
        parent, _, child = name.rpartition(".")
        if parent in made:
            setattr(made[parent], child, module)


class StandInLoader(importlib.abc.Loader):
    def __init__(self, package: str, reason: str, on_module: Callable[[str, str], None], displaced: dict[str, ModuleType]) -> None:
        self.package = package
        self.reason = reason
        self._on_module = on_module
        self._displaced = displaced

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = new_module(spec.name, self.package, self.reason, spec)
        if spec.name == self.package:
            displace_real_modules(module, self._displaced)
        mark_served(self.package)
        self._on_module(self.package, spec.name)
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Stand-in modules have no code; their attributes are made on first access."""


class _GuardedRealLoader(importlib.abc.Loader):
    """Runs the real loader with stand-ins hidden; turns a failed real import into a stand-in."""

    def __init__(self, finder: "StandInFinder", real_spec: importlib.machinery.ModuleSpec) -> None:
        self._finder = finder
        self._real_spec = real_spec
        self._real_loader = real_spec.loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._real_loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        package = module.__name__
        before = {name: m for name, m in modules_under(package).items() if name != package}  # submodules only
        try:
            with suspended():
                self._real_loader.exec_module(module)
        except Exception as exc:
            probe.drop_partial_modules(package, keep=set(before))
            verdict = probe.record(probe.broken(package, exc, self._real_spec))
            sys.modules[package] = self._finder.make_stand_in_module(package, verdict)
            return
        module.__loader__ = self._real_loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._real_loader
        verdict = probe.real_or_driverless(package, module, self._real_spec)
        if verdict.status == "driverless":  # imports, cannot run here: the window's code gets a stand-in
            sys.modules[package] = self._finder.make_stand_in_module(package, verdict)


class StandInFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder installed for the duration of the outermost shim window."""

    def __init__(self, on_module: Callable[[str, str], None]) -> None:
        self._on_module = on_module
        self.displaced: dict[str, ModuleType] = {}  # put back into sys.modules when the window closes

    def _spec(self, fullname: str, verdict: probe.Verdict) -> importlib.machinery.ModuleSpec:
        loader = StandInLoader(verdict.package, verdict.reason, self._on_module, self.displaced)
        return importlib.machinery.ModuleSpec(fullname, loader, origin=ORIGIN, is_package=True)

    def make_stand_in_module(self, fullname: str, verdict: probe.Verdict) -> StandInModule:
        spec = self._spec(fullname, verdict)
        return spec.loader.create_module(spec)  # type: ignore[union-attr]

    def stand_in_for_loaded(self, package: str) -> None:
        """A driverless package imported before the window: its stand-in takes its place until the window closes."""
        module = sys.modules.get(package)
        if module is None or isinstance(module, StandInModule):
            return
        verdict = probe.known(package)
        if verdict is None:
            verdict = probe.real_or_driverless(package, module)
        if verdict.status == "driverless":
            sys.modules[package] = self.make_stand_in_module(package, verdict)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not in_window():
            return None
        package = top_level(fullname)
        if package not in kernel_packages() or is_framework(requester_from_stack()):
            return None
        if fullname != package:
            top = sys.modules.get(package)
            if top is None:
                # a stale half of an earlier failed import can make Python skip the top-level package:
                # decide on it first (this re-enters the finder for ``package``)
                try:
                    importlib.import_module(package)
                except ImportError:
                    return None
                top = sys.modules.get(package)
            if isinstance(top, StandInModule):
                verdict = probe.known(package) or probe.Verdict(package, "absent")
                return self._spec(fullname, verdict)
            return None  # a real package imports its own submodules
        verdict = probe.known(package)
        if verdict is None:
            real_spec = probe.find_real_spec(package)
            if real_spec is None:
                verdict = probe.record(probe.Verdict(package, "absent"))
            elif real_spec.loader is not None and hasattr(real_spec.loader, "exec_module"):
                real_spec.loader = _GuardedRealLoader(self, real_spec)
                return real_spec
            else:  # namespace packages and odd loaders: let the import system handle them
                return None
        if verdict.status == "real":
            return None
        return self._spec(fullname, verdict)
