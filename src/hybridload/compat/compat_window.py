"""``compat_window()``: the scoped window in which remote code written for transformers 4.x meets 5.x.

The same window wraps config loads, meta builds (a build layer inside the kernel shim) and, on the
server, the real load, so both sides apply the same entries and record which fired. Re-entrant and
usable from several threads at once: the process-wide parts are installed by the outermost window and
answer only threads that are inside one.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Iterator, TypeVar

from .. import _env
from ..hooks.scope import ThreadScope
from . import record as state
from .record import CompatRecord

F = TypeVar("F", bound=Callable[..., Any])

_options = threading.local()


def cpu_scalars_requested(explicit: bool | None = None) -> bool:
    """``explicit`` if given, else the innermost :func:`compat_options` value, else ``HYBRIDLOAD_CPU_SCALARS``."""
    if explicit is not None:
        return bool(explicit)
    stack = getattr(_options, "cpu_scalars", None)
    if stack:
        return stack[-1]
    return _env.flag("HYBRIDLOAD_CPU_SCALARS")


@contextlib.contextmanager
def compat_options(*, cpu_scalars: bool) -> Iterator[None]:
    """Set the default for windows this thread opens meanwhile (how a plan passes its ``cpu_scalars`` field
    to the windows the ``from_config`` integration opens)."""
    stack = getattr(_options, "cpu_scalars", None)
    if stack is None:
        stack = _options.cpu_scalars = []
    stack.append(bool(cpu_scalars))
    try:
        yield
    finally:
        stack.pop()


def _scope_resources() -> list[Any]:
    from .configs import SUBCLASS_PATCH
    from .models import POST_INIT_PATCH
    from .names import NAMES

    return [NAMES, SUBCLASS_PATCH, POST_INIT_PATCH]


#: the process-wide parts (name hooks, config-subclass and post-init patches): present while any thread is
#: inside a compat window, acting only for threads that are
SCOPE = ThreadScope("compat", _scope_resources)


class compat_window:  # noqa: N801 - used like a function: ``with compat_window() as record:``
    """Serve 4.x transformers APIs to remote code while open; yields a :class:`CompatRecord`.

    ``config``: a config about to be built from (its remote classes get the 4.x defaults even though it was
    made before the window). ``cpu_scalars``: build small helper tensors on CPU so value-dependent
    ``__init__`` completes (default: :func:`compat_options`, else ``HYBRIDLOAD_CPU_SCALARS``).
    """

    def __init__(self, config: Any = None, kwargs: dict | None = None, *, cpu_scalars: bool | None = None) -> None:
        self._config = config
        self._cpu_scalars = cpu_scalars
        self._entered: list[tuple[CompatRecord, contextlib.ExitStack]] = []

    def __enter__(self) -> CompatRecord:
        from .names import NAMES

        record = CompatRecord(cpu_scalars=cpu_scalars_requested(self._cpu_scalars))
        stack = contextlib.ExitStack()
        try:
            SCOPE.enter()
            stack.callback(SCOPE.exit)
            NAMES.refresh()
            state.push(record)
            stack.callback(state.pop, record)
            if self._config is not None:
                from .configs import adapt_config_instance

                adapt_config_instance(self._config)
            if record.cpu_scalars:
                from .meta_scalars import CpuScalars

                def on_read(operation: str, location: str | None) -> None:
                    line = f"{location or '?'} {operation}"
                    if line not in record.value_reads:
                        record.value_reads.append(line)
                    state.fire("meta.cpu_scalars", line)

                stack.enter_context(CpuScalars(on_read))
        except BaseException:
            stack.close()
            raise
        self._entered.append((record, stack))
        return record

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        record, stack = self._entered.pop()
        stack.close()
        if exc is not None:
            from .meta_scalars import translate

            translated = translate(exc)
            if translated is not None:
                if translated.location:
                    record.value_reads.append(f"{translated.location} {translated.operation} (failed)")
                raise translated from exc
        return False

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with compat_window(self._config, cpu_scalars=self._cpu_scalars):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def real_load_window(config: Any = None, *, cpu_scalars: bool | None = None) -> compat_window:
    """The window around a server's real load (``from_pretrained``): the same entries as the meta build."""
    return compat_window(config, cpu_scalars=cpu_scalars)
