"""The meta-build window: everything that must hold while a meta tree is built, entered as one unit.

It composes the kernel shim with the build-time layers that later modules add (remote-code
compatibility, attention-implementation pinning). Integrations call this, never the parts one by one,
so the client and the server build inside the same window.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, ContextManager, Iterator

from .shim.window import kernel_shim

_lock = threading.Lock()
# extra layers: name -> factory(config, kwargs) -> context manager. Filled by compat/plan modules at import.
_LAYERS: dict[str, Callable[[Any, dict], ContextManager[Any]]] = {}


def register_build_layer(name: str, factory: Callable[[Any, dict], ContextManager[Any]]) -> None:
    """Add a context layer entered (after the shim) by every meta build."""
    with _lock:
        _LAYERS[name] = factory


@contextlib.contextmanager
def meta_build_window(config: Any = None, kwargs: dict | None = None) -> Iterator[Any]:
    """Kernel shim + registered build layers, entered in registration order, exited in reverse."""
    kwargs = {} if kwargs is None else kwargs
    with _lock:
        layers = list(_LAYERS.values())
    with contextlib.ExitStack() as stack:
        report = stack.enter_context(kernel_shim())
        for factory in layers:
            stack.enter_context(factory(config, kwargs))
        yield report
