"""``PostImportHook``: run callbacks on a module right after it is first imported (PEP 451 loader wrapping).

``import hybridload`` must not import torch or transformers, yet the integration patches them; so patches are
applied when the target module finishes executing (or at once, when it is already imported). The hook finds
nothing itself: it wraps the loader of watched modules and calls the callbacks after ``exec_module``.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from types import ModuleType
from typing import Any, Callable

from .meta_path import MetaPathEntry

Callback = Callable[[ModuleType], None]


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, hook: "PostImportHook", loader: importlib.abc.Loader, module_name: str) -> None:
        self._hook = hook
        self._loader = loader
        self._module_name = module_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        if spec is not None and getattr(spec, "loader", None) is self:
            module.__loader__ = self._loader
            spec.loader = self._loader
        self._loader.exec_module(module)
        self._hook.fire(self._module_name, module)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, hook: "PostImportHook") -> None:
        self._hook = hook
        self._busy = threading.local()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not self._hook.watches(fullname) or getattr(self._busy, "active", False):
            return None
        self._busy.active = True
        try:
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.active = False
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _CallbackLoader(self._hook, spec.loader, fullname)
        return spec


class PostImportHook:
    """Module name -> callbacks, run once the module is imported, while the hook is held."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._callbacks: dict[str, list[Callback]] = {}
        self._entry = MetaPathEntry(_Finder(self))

    def watches(self, module_name: str) -> bool:
        return self._entry.held and module_name in self._callbacks

    def add(self, module_name: str, callback: Callback) -> None:
        """Watch ``module_name``; if the hook is held and the module is imported, run ``callback`` now."""
        with self._lock:
            callbacks = self._callbacks.setdefault(module_name, [])
            if callback in callbacks:
                return
            callbacks.append(callback)
            module = sys.modules.get(module_name)
            if self._entry.held and module is not None:
                callback(module)

    def fire(self, module_name: str, module: ModuleType) -> None:
        with self._lock:
            if not self._entry.held:
                return
            for callback in list(self._callbacks.get(module_name, ())):
                callback(module)

    def acquire(self) -> None:
        """Start watching; callbacks of already-imported modules run now."""
        with self._lock:
            self._entry.acquire()
            for name, callbacks in list(self._callbacks.items()):
                module = sys.modules.get(name)
                if module is not None:
                    for callback in list(callbacks):
                        callback(module)

    def release(self) -> None:
        with self._lock:
            self._entry.release()

    @property
    def held(self) -> bool:
        return self._entry.held
