"""Hook the compat window into hybridload's integration points (called by the lead's ``install``).

* ``meta_build_window`` gets a ``"compat"`` build layer, entered inside the kernel shim for every meta build;
* ``AutoConfig.from_pretrained`` runs inside a compat window, because remote *config* code is imported
  and instantiated there (``check_imports`` imports third-party packages such as
  ``transformers_stream_generator``; a Florence-2 config reads ``forced_bos_token_id`` in its ``__init__``).

Nothing here imports torch or transformers: the AutoConfig patch is applied when transformers' auto
module is imported (the integration's post-import hook), and reversed by ``hybridload.uninstall()``.
"""
from __future__ import annotations

import threading
from types import ModuleType
from typing import Any, Callable, ContextManager

_lock = threading.Lock()
_registered = False
AUTOCONFIG_MODULE = "transformers.models.auto.configuration_auto"


def build_layer(config: Any, kwargs: dict) -> ContextManager[Any]:
    """The build-layer factory: a compat window for this meta build (cpu_scalars from options/env)."""
    from .window import compat_window

    return compat_window(config, kwargs)


def _patch_autoconfig(module: ModuleType) -> None:
    from ..integrations.install import patches

    owner = module.AutoConfig
    original = owner.__dict__["from_pretrained"]
    func: Callable[..., Any] = original.__func__ if isinstance(original, (classmethod, staticmethod)) else original
    if getattr(func, "__hybridload_patch__", False):
        return

    def from_pretrained(cls: type, *args: Any, **kwargs: Any) -> Any:
        from .window import compat_window

        with compat_window():
            return func(cls, *args, **kwargs)

    from_pretrained.__wrapped__ = func  # type: ignore[attr-defined]
    from_pretrained.__hybridload_patch__ = True  # type: ignore[attr-defined]
    from_pretrained.__doc__ = func.__doc__
    patches().set(owner, "from_pretrained", classmethod(from_pretrained))


def register() -> None:
    """Register the compat build layer and the AutoConfig wrapping (idempotent; cheap; no torch import)."""
    global _registered
    with _lock:
        if _registered:
            return
        from ..build import register_build_layer
        from ..integrations.install import add_post_import_target

        register_build_layer("compat", build_layer)
        add_post_import_target(AUTOCONFIG_MODULE, _patch_autoconfig)
        _registered = True
