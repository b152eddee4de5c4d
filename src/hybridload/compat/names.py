"""Serve moved/removed transformers names to remote code, only inside a window and only to its thread.

While any window is open, every transformers module the registry names gets a PEP 562 ``__getattr__`` in
its ``__dict__`` (consulted only after normal lookup fails, before a ``_LazyModule``'s own lazy loader,
which it defers to). For a thread inside a window it answers registered names the module no longer has;
for any other thread, or any other name, it behaves as if it were not there. Modules 5.x removed entirely
(``transformers.generation.beam_search``) are served by a meta-path finder as synthetic modules, again
only to a window's thread. On exit everything is removed, synthetic modules leave ``sys.modules``, and
third-party modules first imported inside the window that bound a served object (``transformers_stream_generator``)
are evicted, so importing them outside a window fails as it does without hybridload. Remote-code modules keep
what they bound: a served probe or re-export keeps working, a removed-API stand-in keeps raising when used.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
from typing import Any

from ..hooks.meta_path import MetaPathEntry
from ..hooks.passthrough import passes_through
from ..hooks.patch import MISSING, Patch
from ..hooks.sys_modules import modules_snapshot
from . import record as state
from .catalog import CompatEntry, names_by_module

_served_lock = threading.Lock()
_served: dict[tuple[str, int], Any] = {}  # (entry id, id(entry)) -> served object (stable identity)
_served_ids: set[int] = set()


def served_object(entry: CompatEntry) -> Any:
    """The object served for ``entry`` (built once per process, so ``a.X is a.X``)."""
    key = (entry.id, id(entry))
    with _served_lock:
        if key in _served:
            return _served[key]
    assert entry.provide is not None
    value = entry.provide()
    with _served_lock:
        value = _served.setdefault(key, value)
        _served_ids.add(id(value))
    return value


def _is_served(value: Any) -> bool:
    with _served_lock:
        return id(value) in _served_ids


_bound_lock = threading.Lock()
# importing module name -> (id of the module object, {(entry id, detail)}) for names served to its execution
_bound: dict[str, tuple[int, set[tuple[str, str]]]] = {}
_NOT_IMPORTERS = ("transformers", "hybridload", "importlib", "torch")


def _attribute(entry_id: str, detail: str) -> None:
    """Remember which modules on the import stack (remote code, third-party packages) a name was served to."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if isinstance(name, str) and name and name.partition(".")[0] not in _NOT_IMPORTERS and name != "__main__":
            module = sys.modules.get(name)
            if module is not None and frame.f_code.co_name == "<module>":
                with _bound_lock:
                    known = _bound.get(name)
                    if known is None or known[0] != id(module):
                        known = _bound[name] = (id(module), set())
                    known[1].add((entry_id, detail))
        frame = frame.f_back


def _imported_modules(module_name: str) -> set[str]:
    """``module_name`` and the modules its globals came from (``from pkg.mod import f`` binds f of pkg.mod)."""
    found = {module_name}
    module = sys.modules.get(module_name)
    if module is None:
        return found
    for value in list(vars(module).values()):
        if isinstance(value, types.ModuleType):
            found.add(value.__name__)
        else:
            origin = getattr(value, "__module__", None)
            if isinstance(origin, str):
                found.add(origin)
    return found


def replay_for(*classes: type) -> None:
    """Fire again what the modules defining ``classes`` (and modules they imported from) were served.

    transformers caches remote modules, so a module imported in an earlier window is not re-executed and
    its imports do not fire again; replaying them whenever one of its classes is built makes the fired set
    of a build independent of what this process imported before (client and server record the same).
    """
    if not state.active():
        return
    names: set[str] = set()
    for cls in classes:
        for klass in getattr(cls, "__mro__", ()):
            if klass.__module__.startswith("transformers_modules."):
                names |= _imported_modules(klass.__module__)
    with _bound_lock:
        pending = set()
        for name in names:
            known = _bound.get(name)
            current = sys.modules.get(name)
            if known is not None and (current is None or id(current) == known[0]):
                pending |= known[1]
    for entry_id, detail in sorted(pending):
        state.fire(entry_id, detail)


def _answer(module_name: str, name: str, entry: CompatEntry) -> Any:
    value = served_object(entry)
    installation = NAMES.installation
    if installation is not None:
        installation.served_any = True
    detail = f"{module_name}.{name}"
    state.fire(entry.id, detail)
    _attribute(entry.id, detail)
    return value


def _make_module_getattr(module: types.ModuleType) -> Any:
    """The PEP 562 ``__getattr__`` factory for one registered module (wrapped by a :class:`Patch`)."""
    module_name = module.__name__

    def make(previous: Any) -> Any:
        @passes_through
        def __getattr__(name: str) -> Any:  # noqa: N807
            entry = names_by_module().get(module_name, {}).get(name) if state.active() else None
            if entry is not None:
                try:  # the module's own answer wins (a lazy attribute, a later release that has the name again)
                    if previous is not MISSING:
                        return previous(name)
                    lazy = getattr(type(module), "__getattr__", None)
                    if lazy is not None:
                        return lazy(module, name)
                except AttributeError:
                    pass
                return _answer(module_name, name, entry)
            if previous is not MISSING:
                return previous(name)
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

        return __getattr__

    return make


class _SyntheticModule(types.ModuleType):
    """A module 5.x removed, served inside a window: its registered names and nothing else."""

    def __getattr__(self, name: str) -> Any:
        entry = names_by_module().get(self.__name__, {}).get(name) if state.active() else None
        if entry is None or name.startswith("__"):
            raise AttributeError(
                f"module {self.__name__!r} was removed from transformers; hybridload serves only the names "
                f"its compat registry lists for it, not {name!r}"
            )
        value = _answer(self.__name__, name, entry)
        self.__dict__[name] = value
        return value


class _SyntheticLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _SyntheticModule(spec.name)
        module.__hybridload_compat__ = True  # type: ignore[attr-defined]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        state.fire("compat.removed_module", module.__name__)
        _attribute("compat.removed_module", module.__name__)  # replayed when a cached importer builds again


class _HookingLoader(importlib.abc.Loader):
    """Runs the real loader, then hooks the fresh module (a registered module first imported in a window)."""

    def __init__(self, loader: Any, installation: "_Installation") -> None:
        self._loader = loader
        self._installation = installation

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        spec = module.__spec__
        if spec is not None and spec.loader is self:
            spec.loader = self._loader
            module.__loader__ = self._loader
        self._loader.exec_module(module)
        self._installation.hook(module)


class _Finder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path`` while windows are open: hooks registered modules as they are imported and
    serves registered modules that no longer exist (to a window's thread only)."""

    def __init__(self, installation: "_Installation") -> None:
        self._installation = installation
        self._busy = threading.local()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] != "transformers" or getattr(self._busy, "on", False):
            return None
        if fullname not in names_by_module():
            return None
        self._busy.on = True
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            self._busy.on = False
        if spec is not None:
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _HookingLoader(spec.loader, self._installation)
            return spec
        if not state.active():
            return None
        self._installation.synthetic.add(fullname)
        return importlib.machinery.ModuleSpec(fullname, _SyntheticLoader())


class _Installation:
    """What the outermost window installed: module hooks, the finder, a snapshot for eviction."""

    def __init__(self) -> None:
        self.hooks: dict[int, Patch] = {}  # id(module) -> its __getattr__ patch (a module name can be re-created)
        self.synthetic: set[str] = set()
        self.before = modules_snapshot()  # shallow copy: cheap, compared by identity on exit
        self.served_any = False
        self.entry = MetaPathEntry(_Finder(self))
        self.entry.acquire()
        self.refresh()

    def refresh(self) -> None:
        """Hook every registered module in ``sys.modules`` (some transformers imports re-create the top-level
        lazy module by other means than the import system; each window entry catches up)."""
        for module_name in names_by_module():
            module = sys.modules.get(module_name)
            if isinstance(module, types.ModuleType):
                self.hook(module)

    def hook(self, module: types.ModuleType) -> None:
        if id(module) in self.hooks or isinstance(module, _SyntheticModule):
            return
        patch = Patch(module, "__getattr__", _make_module_getattr(module), key=f"{module.__name__}.__getattr__")
        patch.acquire()
        self.hooks[id(module)] = patch

    def close(self) -> list[str]:
        self.entry.release()
        for patch in self.hooks.values():
            patch.release()
        self.hooks.clear()
        evicted = []
        for name in sorted(self.synthetic):
            if isinstance(sys.modules.get(name), _SyntheticModule):
                _drop(name)
                evicted.append(name)
        if self.served_any:
            evicted += self._evict_binders()
        self.before = {}
        return evicted

    def _evict_binders(self) -> list[str]:
        """Modules (re)executed inside the window that bound a served object leave ``sys.modules``."""
        fresh: dict[str, list[str]] = {}  # top-level package -> its modules (re)executed inside the window
        binders: set[str] = set()
        for name, module in modules_snapshot().items():
            if module is None or self.before.get(name) is module:
                continue
            top = name.partition(".")[0]
            # transformers itself, and remote-code modules (their classes must stay the ones configs were made
            # with; the kernel shim decides their eviction), are never evicted here
            if top in ("transformers", "transformers_modules", "hybridload", "torch"):
                continue
            fresh.setdefault(top, []).append(name)
            try:
                values = list(vars(module).values())
            except TypeError:
                continue
            if any(_is_served(v) for v in values):
                binders.add(top)
        evicted = []
        for top in sorted(binders):  # the whole package goes, so a later import re-runs it from the start
            for name in sorted(fresh[top], key=lambda n: n.count("."), reverse=True):
                _drop(name)
                evicted.append(name)
        return evicted


def _drop(name: str) -> None:
    module = sys.modules.pop(name, None)
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules.get(parent_name) if parent_name else None
    if parent is not None and module is not None and parent.__dict__.get(child) is module:
        del parent.__dict__[child]


class _Names:
    """The scope resource: the first window in (any thread) installs, the last one out removes everything."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.installation: _Installation | None = None
        self.evicted: list[str] = []  # what the last close evicted (tests, reports)

    def acquire(self) -> None:
        with self._lock:
            self.installation = _Installation()

    def refresh(self) -> None:
        with self._lock:
            if self.installation is not None:
                self.installation.refresh()

    def release(self) -> None:
        with self._lock:
            installation, self.installation = self.installation, None
        self.evicted = installation.close() if installation is not None else []


NAMES = _Names()
