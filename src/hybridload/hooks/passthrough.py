"""Frames that only forward a call: hybridload's wrappers around foreign functions.

When a build fails, hybridload decides whose failure it is by the innermost frame that is hybridload's or the
model's. A wrapper that merely passes the call on (a patch gate, a torch-function mode, an import guard) sits
between the model's code and the library it calls; it must not make the model's own error look like a bug in
hybridload. Such functions are registered here by their code object.
"""
from __future__ import annotations

import threading
from types import CodeType
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_codes: set[CodeType] = set()


def passes_through(fn: F) -> F:
    """Mark ``fn`` (a wrapper that forwards to the wrapped call) as transparent for failure attribution."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    if code is not None:
        with _lock:
            _codes.add(code)
    return fn


def is_pass_through(code: CodeType) -> bool:
    return code in _codes
