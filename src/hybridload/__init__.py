"""hybridload: load HuggingFace models the same way on a GPU-less laptop, in CI and on the GPU server.

``import hybridload`` installs a small, reversible integration (see :func:`install`): transformers'
``from_config`` meta builds run inside the kernel shim. Everything else is imported lazily, so importing
hybridload does not import torch or transformers.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    CheckpointError,
    ConfigError,
    HybridloadError,
    KernelUnavailableError,
    LockMismatchError,
    PlanError,
    RemoteCodeError,
    RevisionResolutionError,
    SignatureFormatError,
    StandInReachableError,
    TreeMismatchError,
    TrustError,
)

__version__ = "0.1.0"

# public name -> module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "kernel_shim": "hybridload.shim.window",
    "ShimReport": "hybridload.shim.window",
    "register_kernel_package": "hybridload.shim.registry",
    "kernel_packages": "hybridload.shim.registry",
    "probe_kernel_package": "hybridload.shim.probe",
    "register_twin": "hybridload.shim.twins",
    "register_reference": "hybridload.shim.references",
    "resolve": "hybridload.plan.resolve",
    "LoadPlan": "hybridload.plan.model",
    "load_config": "hybridload.plan.load",
    "load_meta": "hybridload.plan.load",
    "load_tokenizer": "hybridload.plan.load",
    "load_real": "hybridload.plan.load",
    "compat_window": "hybridload.compat.window",
    "KernelArgumentError": "hybridload.kernels._validate",
    "SignatureInputError": "hybridload.tree.header",
    "RemovedTransformersAPIError": "hybridload.compat.errors",
    "ValueDependentInitError": "hybridload.compat.errors",
    "real_load_window": "hybridload.compat.window",
    "dispatch": "hybridload.serve.dispatch",
    "kernel_report": "hybridload.serve.report",
    "stream_load": "hybridload.serve.streaming",
    "signature": "hybridload.tree.signature",
    "TreeSignature": "hybridload.tree.signature",
    "compare": "hybridload.tree.diff",
    "TreeDiff": "hybridload.tree.diff",
    "layer_kinds": "hybridload.tree.layer_kinds",
    "install": "hybridload.integrations.install",
    "uninstall": "hybridload.integrations.install",
    "is_installed": "hybridload.integrations.install",
}

__all__ = sorted([*_LAZY, "__version__", *(n for n in dir() if n.endswith("Error"))])


def __getattr__(name: str) -> Any:
    if name in ("examples", "kernels", "twins", "reference"):  # subpackages, importable as attributes
        return importlib.import_module(f"hybridload.{name}")
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'hybridload' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .integrations.install import install, is_installed, uninstall
    from .compat.window import compat_window, real_load_window
    from .plan.load import load_config, load_meta, load_real, load_tokenizer
    from .plan.model import LoadPlan
    from .plan.resolve import resolve
    from .serve.dispatch import dispatch
    from .serve.report import kernel_report
    from .serve.streaming import stream_load
    from .shim.probe import probe_kernel_package
    from .shim.references import register_reference
    from .shim.registry import kernel_packages, register_kernel_package
    from .shim.twins import register_twin
    from .shim.window import ShimReport, kernel_shim
    from .tree.diff import TreeDiff, compare
    from .tree.layer_kinds import layer_kinds
    from .tree.signature import TreeSignature, signature


def _autoinstall() -> None:
    from ._env import disabled

    if not disabled():
        from .integrations.install import install

        install()


_autoinstall()
