"""``import hybridload``: route plain transformers and nnsight calls into hybridload's one build path.

``install()`` changes nothing about what an explicit hybridload call builds (``resolve``, ``load_*``,
``dispatch`` enter their build session themselves, installed or not). It only makes these plain calls enter
the same session:

* ``AutoModel*.from_config(config)`` (and ``PreTrainedModel._from_config``): building on meta (``torch.device
  ("meta")``, nnsight's meta device, accelerate's ``init_empty_weights``) a ``meta`` build session, on a real
  device a ``real`` one (compatibility and routing, never stand-ins), routed to the commit and trust decision
  the config was loaded with;
* ``AutoConfig.from_pretrained``: a ``config`` session (4.x config code meets the compatibility layer), and the
  revision resolved to a commit and remembered for the config object;
* nnsight's HuggingFace model loads (:mod:`.nnsight`).

A call made inside an open build (transformers' own nested calls, nnsight's meta build inside the session its
wrapper opened) joins that build. transformers is patched only once it is imported (a post-import hook), so
``import hybridload`` imports neither torch nor transformers; :func:`uninstall` releases every patch. Real
loads (``from_pretrained``) are never wrapped: they must bind real kernels.
"""
from __future__ import annotations

import threading
from types import ModuleType
from typing import Any, Callable

from ..hooks.passthrough import passes_through
from ..hooks.patch import Patch, is_patched
from ..hooks.post_import import PostImportHook

_lock = threading.RLock()
_hook = PostImportHook()
_held: list[Patch] = []  # patches this integration holds now (released by uninstall)
#: every patch the integration ever made, by (id(owner), name): the same Patch is held again by a later install,
#: so copies transformers made of its wrapper (``from_config`` of Auto classes created meanwhile) come back to life
_patches: dict[tuple[int, str], tuple[Any, Patch]] = {}
_installed = False


def hold(owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]], key: str) -> bool:
    """Hold the patch of ``owner.name`` for the life of the installation (released by :func:`uninstall`)."""
    with _lock:
        known = _patches.get((id(owner), name))
        if known is None or known[0] is not owner:
            known = _patches[(id(owner), name)] = (owner, Patch(owner, name, make, key=key))
        patch = known[1]
        if patch in _held:
            return patch.held
        applied = patch.acquire()
        _held.append(patch)
        return applied


def add_post_import_target(module_name: str, callback: Callable[[ModuleType], None]) -> None:
    """Run ``callback(module)`` once ``module_name`` is imported (now, if it is and hybridload is installed)."""
    _hook.add(module_name, callback)


# -- from_config: meta builds join the build path ----------------------------------------------------------
def _make_from_config(func: Callable[..., Any]) -> Callable[..., Any]:
    @passes_through
    def from_config(cls: type, config: Any, **kwargs: Any) -> Any:
        from ..build.attention import building_on_meta
        from ..build.session import current_build

        if current_build() is not None:
            return func(cls, config, **kwargs)
        from ..build.device_window import profile_for_build
        from ..build.routing import origin_of
        from ..build.session import BuildSpec, build_session
        from ..compat.compat_window import cpu_scalars_requested

        # on meta: the client's meta build (under the plan's device profile, or the default one); on a real
        # device: a real build (compat and routing, real kernels, the machine's own torch.cuda answers)
        purpose = "meta" if building_on_meta() else "real"
        profile = profile_for_build(config) if purpose == "meta" else None
        spec = BuildSpec(purpose, origin=origin_of(config), config=config, cpu_scalars=cpu_scalars_requested(),
                         device_profile=profile, label=type(config).__name__)
        with build_session(spec):
            return func(cls, config, **kwargs)

    return from_config


def _subclasses(cls: type) -> list[type]:
    found, stack = [], [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


def _wrap_own(base: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """One patch per class that defines ``name`` itself (transformers copies ``from_config`` into every Auto class)."""
    for owner in (base, *_subclasses(base)):
        entry = owner.__dict__.get(name)
        if entry is None or (is_patched(entry) and (id(owner), name) not in _patches):
            continue  # inherited, or a copy of our wrapper transformers made for a class created after install
        hold(owner, name, make, key=f"{owner.__module__}.{owner.__qualname__}.{name}")


def _patch_auto_factory(module: ModuleType) -> None:
    _wrap_own(module._BaseAutoModelClass, "from_config", _make_from_config)


def _patch_modeling_utils(module: ModuleType) -> None:
    _wrap_own(module.PreTrainedModel, "_from_config", _make_from_config)


# -- AutoConfig.from_pretrained: a config session, and the config's origin -----------------------------------
def _make_auto_config(func: Callable[..., Any]) -> Callable[..., Any]:
    @passes_through
    def from_pretrained(cls: type, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        import os

        from ..build.routing import origin_from_call, record_origin, resolved_revision
        from ..build.session import BuildSpec, build_session, current_build

        name = str(pretrained_model_name_or_path)
        if current_build() is not None:
            return func(cls, pretrained_model_name_or_path, *args, **kwargs)
        if not os.path.exists(name):
            kwargs["revision"] = resolved_revision(name, kwargs)
        from ..compat.compat_window import cpu_scalars_requested

        with build_session(BuildSpec("config", cpu_scalars=cpu_scalars_requested(), label=name)):
            result = func(cls, pretrained_model_name_or_path, *args, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        record_origin(config, origin_from_call(name, kwargs, config))
        return result

    return from_pretrained


def _patch_configuration_auto(module: ModuleType) -> None:
    hold(module.AutoConfig, "from_pretrained", _make_auto_config, key="transformers.AutoConfig.from_pretrained")


def _hold_import_guards(module: ModuleType) -> None:
    """The kernel shim's import guards, held for the process once transformers is imported (every build
    needs it). A window applies them on entry anyway; held here, they are also in place for an import that a
    thread starts while no window is open and that a window then serves a stand-in for (the import
    machinery would hand that thread the stand-in from ``sys.modules``). About 0.3 µs per import statement."""
    from ..shim.guards import IMPORT_PATCHES

    for patch in IMPORT_PATCHES:
        if patch not in _held:
            patch.acquire()
            _held.append(patch)


def _register_targets() -> None:
    from .nnsight import register_nnsight

    add_post_import_target("transformers", _hold_import_guards)
    add_post_import_target("transformers.models.auto.auto_factory", _patch_auto_factory)
    add_post_import_target("transformers.modeling_utils", _patch_modeling_utils)
    add_post_import_target("transformers.models.auto.configuration_auto", _patch_configuration_auto)
    register_nnsight(add_post_import_target)


def install() -> None:
    """Install the routing (idempotent). Already-imported targets are patched at once."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
        _register_targets()
        _hook.acquire()


def uninstall() -> None:
    """Reverse :func:`install`: stop watching imports, release every patch, forget integration caches."""
    global _installed
    with _lock:
        if not _installed:
            return
        _installed = False
        _hook.release()
        while _held:
            _held.pop().release()
        _forget_process_caches()


def _forget_process_caches() -> None:
    """Caches the integrations keep for the process (nnsight's pinned commits and rebuilt client trees)."""
    import sys

    for module_name, function in (
        ("hybridload.integrations.nnsight_plan", "forget_pins"),
        ("hybridload.integrations.nnsight_handshake", "forget_rebuilt"),
    ):
        module = sys.modules.get(module_name)
        if module is not None:
            getattr(module, function)()


def is_installed() -> bool:
    return _installed
