"""Say whose fault a failed build is, and what really failed.

* A failure raised inside hybridload's own code is an :class:`~hybridload.errors.InternalError` (a bug to
  report), never blamed on the repository's code or on a package the user should install.
* transformers' ``check_imports`` reports "requires the following packages that were not found ... Run
  ``pip install timm``" for a package that *is* installed but fails to import (a CPU-only machine cannot
  import a vision library built against CUDA torchvision): the message names the package that really failed
  and why.
* torch's "Tensor on device meta is not on the expected device cpu" from remote ``__init__`` that made a CPU
  constant the legacy way names the remote file and line and the opt-in.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import traceback

from ..errors import HybridloadError, InternalError, RemoteCodeError, ValueDependentInitError
from ..hooks.passthrough import is_pass_through

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_NOT_FOUND = re.compile(r"requires the following packages that were not found in your environment: ([^.\n]+)")
_DEVICE_MISMATCH = ("is not on the expected device", "Expected all tensors to be on the same device")


def raised_by_hybridload(exc: BaseException) -> bool:
    """True when ``exc`` was raised by hybridload's own code (its innermost frame, pass-through wrappers aside).

    An error raised by remote code, or by a library it or hybridload called (transformers refusing the model,
    ``check_imports`` naming a missing package, torch refusing an op), is the model's or that library's
    answer, never a hybridload bug. Typed hybridload errors (a stand-in refusing to run) are never internal.
    """
    if isinstance(exc, HybridloadError):
        return False
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    for frame in reversed(frames):
        if is_pass_through(frame.f_code):
            continue
        return os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep)
    return False


def _import_failure(package: str) -> str | None:
    """Why an *installed* package fails to import here, or None when it is absent or imports fine."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    try:
        importlib.import_module(package)
    except Exception as exc:  # noqa: BLE001 - the real cause is what we report
        return f"{type(exc).__name__}: {exc}"
    return None


def explain_missing_packages(exc: BaseException) -> str | None:
    """For transformers' "packages that were not found" ImportError: which of them are installed but broken."""
    match = _NOT_FOUND.search(str(exc))
    if match is None:
        return None
    lines = []
    for package in (p.strip() for p in match.group(1).split(",")):
        failure = _import_failure(package) if package else None
        if failure is not None:
            lines.append(
                f"{package} is installed but fails to import: {failure}. Installing it again will not help; fix "
                f"what it needs (or uninstall {package} to let the model take its path without it)"
            )
    return "; ".join(lines) or None


def device_mismatch_location(exc: BaseException) -> ValueDependentInitError | None:
    """A typed error naming the remote line for a CPU constant combined with meta tensors in ``__init__``."""
    if not isinstance(exc, RuntimeError) or not any(fragment in str(exc) for fragment in _DEVICE_MISMATCH):
        return None
    from ..compat.meta_scalars import traceback_location

    location = traceback_location(exc.__traceback__)
    message = (
        f"{location or 'remote code'} combines a CPU tensor with meta tensors while the model is built on the meta "
        "device (a constant made the legacy way, torch.Tensor([...]) or torch.tensor(...) with an explicit CPU "
        f"device: {str(exc).splitlines()[0]}). Opt in to materialising such constants on the meta device "
        "(with CPU values kept for reads): HYBRIDLOAD_CPU_SCALARS=1 or compat_window(cpu_scalars=True) (use the "
        "same setting on the server)."
    )
    return ValueDependentInitError(message, location=location, operation="cpu tensor combined with meta tensors")


def remote_code_failure(exc: BaseException, what: str, *, remote: bool = True, served: bool = False) -> HybridloadError:
    """The typed error for ``exc`` raised while ``what`` ran (remote code, or a native class when not ``remote``;
    ``served``: on the server, where a missing kernel package is never stood in for)."""
    from ..compat.meta_scalars import translate

    value_read = translate(exc)  # the model reading a meta tensor's value: its failure, named by its line
    if value_read is not None:
        return value_read
    if raised_by_hybridload(exc):
        return InternalError(
            f"{what} failed inside hybridload itself ({type(exc).__name__}: {exc}); this is a hybridload bug, not a "
            "problem with the model's code: please report it with this traceback"
        )
    mismatch = device_mismatch_location(exc)
    if mismatch is not None:
        return mismatch
    explained = explain_missing_packages(exc) if isinstance(exc, ImportError) else None
    if explained is not None:
        return RemoteCodeError(f"{what} failed: {explained}")
    if not remote:
        from ..errors import PlanError

        return PlanError(f"{what} failed: {type(exc).__name__}: {exc}")
    if served and isinstance(exc, ImportError):
        return RemoteCodeError(
            f"{what}: the real load needs a package that is missing on this server ({type(exc).__name__}: {exc}). "
            "Install it here, or serve with kernel_fallback='triton' where hybridload has Triton kernels for the "
            "symbols the model uses"
        )
    return RemoteCodeError(
        f"{what} failed: {type(exc).__name__}: {exc}. If it names a missing package, install it (CUDA-only kernel "
        "packages are stood in for automatically; register others with hybridload.register_kernel_package)"
    )
