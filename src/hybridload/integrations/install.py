"""``import hybridload`` integration: transformers' ``from_config`` meta builds run inside the build window.

transformers is patched only once it is imported (a PEP 451 post-import hook on ``sys.meta_path``), so
``import hybridload`` costs no torch/transformers import. Every patch is recorded and
:func:`uninstall` puts the original attributes back. ``from_pretrained`` is never wrapped: a real load
must bind real kernels.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from types import ModuleType
from typing import Any, Callable

from .patching import PatchSet

_lock = threading.RLock()
_patches = PatchSet()
_hook: "_PostImportHook | None" = None
_installed = False

# module name -> functions(module) that patch it, applied in registration order
_TARGETS: dict[str, list[Callable[[ModuleType], None]]] = {}


def _target(module_name: str) -> Callable[[Callable[[ModuleType], None]], Callable[[ModuleType], None]]:
    def deco(fn: Callable[[ModuleType], None]) -> Callable[[ModuleType], None]:
        _TARGETS.setdefault(module_name, []).append(fn)
        return fn

    return deco


def add_post_import_target(module_name: str, patcher: Callable[[ModuleType], None]) -> None:
    """Let another part (plan routing, compat, nnsight) patch ``module_name`` once it is imported, reversibly.

    Patchers must record every change through :func:`patches` so that :func:`uninstall` undoes it.
    """
    with _lock:
        patchers = _TARGETS.setdefault(module_name, [])
        if patcher in patchers:
            return
        patchers.append(patcher)
        if _installed and module_name in sys.modules:
            patcher(sys.modules[module_name])


def _run_patchers(module_name: str, module: ModuleType) -> None:
    for patcher in list(_TARGETS.get(module_name, ())):
        patcher(module)


def patches() -> PatchSet:
    """The process-wide patch set of the installed integration (for integrations that add to it)."""
    return _patches


def _wrap_classmethod(owner: type, name: str, make_wrapper: Callable[[Callable], Callable]) -> None:
    original = owner.__dict__[name]
    func = original.__func__ if isinstance(original, classmethod) else original
    wrapper = make_wrapper(func)
    wrapper.__wrapped__ = func  # type: ignore[attr-defined]
    wrapper.__hybridload_patch__ = True  # type: ignore[attr-defined]
    _patches.set(owner, name, classmethod(wrapper))


def _meta_build_wrapper(func: Callable) -> Callable:
    """``func(cls, config, **kwargs)`` run inside the meta-build window while hybridload is installed.

    transformers copies ``from_config`` into every Auto class when it creates them (``auto_class_update``),
    so copies of this wrapper can outlive :func:`uninstall`; they check ``_installed`` and pass through.
    """

    def wrapper(cls: type, config: Any, **kwargs: Any) -> Any:
        if not _installed:
            return func(cls, config, **kwargs)
        from ..build import meta_build_window

        with meta_build_window(config=config, kwargs=kwargs):
            return func(cls, config, **kwargs)

    wrapper.__name__ = getattr(func, "__name__", "from_config")
    wrapper.__qualname__ = getattr(func, "__qualname__", wrapper.__name__)
    wrapper.__doc__ = getattr(func, "__doc__", None)
    return wrapper


def _subclasses(cls: type) -> list[type]:
    found, stack = [], [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


def _wrap_own_classmethods(base: type, name: str) -> None:
    """Wrap ``name`` wherever it is defined in the class's own dict: the base and existing subclasses."""
    for owner in (base, *_subclasses(base)):
        entry = owner.__dict__.get(name)
        if entry is None:
            continue
        func = entry.__func__ if isinstance(entry, classmethod) else entry
        if getattr(func, "__hybridload_patch__", False):
            continue  # already ours (or a transformers copy of ours)
        _wrap_classmethod(owner, name, _meta_build_wrapper)


@_target("transformers.models.auto.auto_factory")
def _patch_auto_factory(module: ModuleType) -> None:
    _wrap_own_classmethods(module._BaseAutoModelClass, "from_config")


@_target("transformers.modeling_utils")
def _patch_modeling_utils(module: ModuleType) -> None:
    _wrap_own_classmethods(module.PreTrainedModel, "_from_config")


class _PatchingLoader(importlib.abc.Loader):
    """Delegates to the real loader, then applies the registered patcher to the fresh module."""

    def __init__(self, loader: importlib.abc.Loader, module_name: str) -> None:
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
        with _lock:
            if _installed:
                _run_patchers(self._module_name, module)


class _PostImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of watched modules so they get patched after they run."""

    def __init__(self) -> None:
        self._busy = threading.local()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _TARGETS or getattr(self._busy, "active", False):
            return None
        self._busy.active = True
        try:
            for finder in sys.meta_path:
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
        spec.loader = _PatchingLoader(spec.loader, fullname)
        return spec


def _register_integrations() -> None:
    """Build layers and post-import patchers of the other parts (none imports torch/transformers)."""
    from ..compat.layer import register as register_compat
    from ..plan.routing import install_routing
    from .nnsight import install_nnsight

    register_compat()
    install_routing()
    install_nnsight()


def install() -> None:
    """Install the integration (idempotent). Already-imported targets are patched at once."""
    global _hook, _installed
    with _lock:
        if _installed:
            return
        _installed = True
        _register_integrations()
        _hook = _PostImportHook()
        sys.meta_path.insert(0, _hook)
        for name in list(_TARGETS):
            module = sys.modules.get(name)
            if module is not None:
                _run_patchers(name, module)


def uninstall() -> None:
    """Reverse :func:`install`: remove the hook, restore every patched attribute, close open state."""
    global _hook, _installed
    with _lock:
        if _hook is not None:
            try:
                sys.meta_path.remove(_hook)
            except ValueError:
                pass
        _hook = None
        _installed = False
        _patches.restore_all()
        _forget_process_caches()


def _forget_process_caches() -> None:
    """Caches the integrations keep for the process (nnsight's pinned commits and rebuilt client trees)."""
    for module_name, function in (
        ("hybridload.integrations.nnsight_plan", "forget_pins"),
        ("hybridload.integrations.nnsight_handshake", "forget_rebuilt"),
    ):
        module = sys.modules.get(module_name)
        if module is not None:
            getattr(module, function)()


def is_installed() -> bool:
    return _installed
