"""Opt-in served-side fallback policy: bind hybridload's Triton kernels where a kernel package is missing.

``HYBRIDLOAD_KERNEL_FALLBACK=none|triton`` or ``dispatch(kernel_fallback=...)`` (default ``none``: a missing
package stays an error on the served side). With ``triton``, the model's remote code is imported under a short
kernel-shim window whose stand-in modules resolve every symbol that has a Triton substitute
(:func:`hybridload.substitutes.triton_for`) to hybridload's kernel; any other symbol stays a stand-in, which
strict mode then refuses. The window covers the import only, never the whole load, so other threads' meta
builds are not held up. Needs CUDA and triton.
"""
from __future__ import annotations

import os

from ..errors import PlanError

POLICIES = ("none", "triton")


def policy(value: str | None) -> str:
    chosen = (value if value is not None else os.environ.get("HYBRIDLOAD_KERNEL_FALLBACK", "none")).strip().lower() or "none"
    if chosen not in POLICIES:
        raise PlanError(
            f"kernel_fallback must be one of {', '.join(POLICIES)} (argument or HYBRIDLOAD_KERNEL_FALLBACK), got {chosen!r}"
        )
    return chosen


def require_triton_fallback_possible() -> None:
    """``triton`` is a served-side policy: refuse it clearly where it cannot run."""
    import torch

    from .. import kernels

    if not torch.cuda.is_available() or not kernels.available():
        raise PlanError(
            "kernel_fallback='triton' needs CUDA and an importable triton on this machine; it is a served-side "
            "option. Unset HYBRIDLOAD_KERNEL_FALLBACK (or pass kernel_fallback='none') here."
        )
