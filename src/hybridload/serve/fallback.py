"""Opt-in served-side fallback: bind hybridload's Triton kernels where a kernel package is missing.

``HYBRIDLOAD_KERNEL_FALLBACK=none|triton`` (default ``none``: a missing package stays an error on the served
side). With ``triton``, the real load runs inside a kernel-shim window whose stand-in modules resolve every
symbol listed in ``hybridload.kernels.FALLBACKS`` to the real Triton kernel; any other symbol stays a stand-in,
which strict mode then refuses. Never used without CUDA.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Iterator

from ..errors import HybridloadError

POLICIES = ("none", "triton")


def policy(value: str | None) -> str:
    chosen = (value if value is not None else os.environ.get("HYBRIDLOAD_KERNEL_FALLBACK", "none")).strip().lower() or "none"
    if chosen not in POLICIES:
        raise HybridloadError(
            f"kernel_fallback must be one of {', '.join(POLICIES)} (argument or HYBRIDLOAD_KERNEL_FALLBACK), got {chosen!r}"
        )
    return chosen


def _bound(path: str, kernel: Callable[..., Any]) -> Callable[..., Any]:
    """A thin alias that remembers which real symbol it replaces (kernel_report labels it)."""

    @functools.wraps(kernel)
    def fallback(*args: Any, **kwargs: Any) -> Any:
        return kernel(*args, **kwargs)

    fallback.__hybridload_fallback_for__ = path  # type: ignore[attr-defined]
    return fallback


@contextlib.contextmanager
def fallback_window(chosen: str) -> Iterator[Any]:
    """Yields the shim report (or None when the policy is ``none``)."""
    if chosen == "none":
        yield None
        return
    import torch

    from .. import kernels
    from ..shim.standins import add_resolver, remove_resolver
    from ..shim.window import kernel_shim

    if not torch.cuda.is_available() or not kernels.available():
        raise HybridloadError(
            "kernel_fallback='triton' needs CUDA and an importable triton on this machine; it is a served-side "
            "option. Unset HYBRIDLOAD_KERNEL_FALLBACK (or pass kernel_fallback='none') here."
        )
    cache: dict[str, Callable[..., Any]] = {}

    def resolver(path: str) -> Callable[..., Any] | None:
        if path not in cache:
            kernel = kernels.fallback_for(path)
            if kernel is None:
                return None
            cache[path] = _bound(path, kernel)
        return cache[path]

    add_resolver(resolver)
    try:
        with kernel_shim() as report:
            yield report
    finally:
        remove_resolver(resolver)
