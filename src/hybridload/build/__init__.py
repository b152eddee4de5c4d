"""The meta-build window: everything that must hold while a meta tree is built, entered as one unit.

It composes the kernel shim with the build-time layers that later modules add (remote-code
compatibility, attention-implementation pinning). Integrations call this, never the parts one by one,
so the client and the server build inside the same window.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator

from ..shim.window import ShimReport, kernel_shim

_lock = threading.Lock()
# extra layers: name -> factory(config, kwargs) -> context manager. Filled by compat/plan modules at import.
_LAYERS: dict[str, Callable[[Any, dict], ContextManager[Any]]] = {}


def register_build_layer(name: str, factory: Callable[[Any, dict], ContextManager[Any]]) -> None:
    """Add a context layer entered (after the shim) by every meta build."""
    with _lock:
        _LAYERS[name] = factory


@dataclass
class BuildReport:
    """What one meta build window did: the shim's report plus whatever each layer yielded (by layer name)."""

    shim: ShimReport
    layers: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # reads like the shim report: report.stand_ins, report.packages
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.shim, name)


@contextlib.contextmanager
def meta_build_window(config: Any = None, kwargs: dict | None = None) -> Iterator[BuildReport]:
    """Kernel shim + registered build layers, entered in registration order, exited in reverse."""
    kwargs = {} if kwargs is None else kwargs
    with _lock:
        layers = list(_LAYERS.items())
    with contextlib.ExitStack() as stack:
        report = BuildReport(stack.enter_context(kernel_shim()))
        for name, factory in layers:
            report.layers[name] = stack.enter_context(factory(config, kwargs))
        yield report
