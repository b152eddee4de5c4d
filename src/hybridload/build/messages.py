"""Capture the model code's own advice during a meta build instead of printing it.

Remote code logs warnings meant for a GPU server ("The fast path is not available ... To install follow
https://github.com/state-spaces/mamba"): during a GPU-less meta build they are noise that tells a laptop user
to install packages they must not install. While a meta build is open on a thread, records below ERROR from
remote-code loggers (``transformers_modules.*``) logged on that thread go into the build report instead of the
log; every other thread and logger is untouched.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable, Iterator

from ..hooks.passthrough import passes_through
from ..hooks.patch import Patch

REMOTE_LOGGERS = "transformers_modules"
_local = threading.local()


def _make_handle(original: Callable[..., Any]) -> Callable[..., Any]:
    @passes_through
    def handle(self: logging.Logger, record: logging.LogRecord) -> Any:
        sinks = getattr(_local, "sinks", None)
        if sinks and record.levelno < logging.ERROR and record.name.startswith(REMOTE_LOGGERS):
            sinks[-1](f"{record.levelname.lower()} {record.name}: {record.getMessage()}")
            return None
        return original(self, record)

    return handle


HANDLE_PATCH = Patch(logging.Logger, "handle", _make_handle, key="logging.Logger.handle")


@contextlib.contextmanager
def captured_messages(sink: Callable[[str], None]) -> Iterator[None]:
    """While open on this thread, remote code's warnings go to ``sink`` (one line each)."""
    HANDLE_PATCH.acquire()
    sinks = getattr(_local, "sinks", None)
    if sinks is None:
        sinks = _local.sinks = []
    sinks.append(sink)
    try:
        yield
    finally:
        sinks.pop()
        HANDLE_PATCH.release()
