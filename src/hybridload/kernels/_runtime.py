"""Whether hybridload's Triton kernels can run here, the one place that imports triton, and the device guard
every launch runs under.

triton is imported lazily (CPU CI has none) and only the *real* package counts: inside a kernel-shim
window ``import triton`` can return a hybridload stand-in, which must never be mistaken for a compiler.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from types import ModuleType

from ..errors import KernelUnavailableError


def interpreter_mode() -> bool:
    """TRITON_INTERPRET=1 runs Triton kernels on CPU tensors (slow; for debugging kernels without a GPU)."""
    return os.environ.get("TRITON_INTERPRET", "").strip() == "1"


def _is_stand_in(module: object) -> bool:
    """A kernel-shim stand-in module (they carry this marker; read directly, the shim is a higher layer)."""
    return bool(getattr(module, "__hybridload_stand_in__", False))


def require_triton() -> ModuleType:
    """Return the real ``triton`` module or raise KernelUnavailableError saying how to get one."""
    try:
        triton = importlib.import_module("triton")
        importlib.import_module("triton.language")
    except Exception as exc:  # a broken install raises more than ImportError (OSError, RuntimeError)
        raise KernelUnavailableError(
            "hybridload's Triton kernels need the 'triton' package, which is absent or broken here "
            f"({type(exc).__name__}: {exc}). Install a triton that matches your torch "
            "(CUDA builds of torch ship one), or install the real kernel package instead.",
            name="triton",
        ) from exc
    if _is_stand_in(triton):
        raise KernelUnavailableError(
            "'triton' is a hybridload stand-in in this process (imported inside a kernel-shim window), not "
            "the compiler. Call hybridload's Triton kernels outside kernel_shim() and meta builds, on a "
            "host where triton is installed.",
            name="triton",
        )
    return triton


def available() -> bool:
    """True when the kernels can run for real: a CUDA device is visible and the real triton imports."""
    try:
        import torch
    except Exception:  # pragma: no cover - torch is a hard dependency
        return False
    if not torch.cuda.is_available():
        return False
    try:
        require_triton()
    except KernelUnavailableError:
        return False
    return True


def load_launcher(module: str) -> ModuleType:
    """Import one of the ``_*_triton`` launcher modules (which import triton at top level).

    Once imported, a launcher holds the real triton it was compiled with; later calls (every decode
    step) only look it up, so the per-call cost stays a dict lookup.
    """
    name = f"hybridload.kernels.{module}"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    require_triton()
    return importlib.import_module(name)


def device_guard(tensor: object) -> contextlib.AbstractContextManager:
    """Launch on the device of ``tensor`` (Triton launches on the *current* CUDA device, which on a model split
    across GPUs is often another one). Every kernel launch in ``hybridload.kernels`` runs inside one
    (``tests/kernels/test_device_guards.py`` checks the source)."""
    device = getattr(tensor, "device", None)
    if device is None or device.type != "cuda":
        return contextlib.nullcontext()
    import torch

    return torch.cuda.device(device)
