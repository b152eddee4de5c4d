"""hybridload: load HuggingFace models the same way on a GPU-less laptop, in CI and on the GPU server.

``import hybridload`` installs a small, reversible routing (see :func:`install`): plain transformers and nnsight
calls enter the same build path the functions below use. Everything is imported lazily, so importing
hybridload imports neither torch nor transformers. The names here are the ones the docs use; the rest is
importable from the subpackages (``hybridload.shim``, ``hybridload.compat``, ``hybridload.build``, ...).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import *  # noqa: F403 - every error class is public
from .errors import __all__ as _ERRORS

from ._lazy import lazy_exports
from ._version import __version__

# public name -> module that defines it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "resolve": "hybridload.load.resolve",
    "LoadPlan": "hybridload.plan.model",
    "load_config": "hybridload.load.config",
    "load_meta": "hybridload.load.meta",
    "load_tokenizer": "hybridload.load.tokenizer",
    "load_real": "hybridload.serve.real",
    "dispatch": "hybridload.serve.dispatch",
    "kernel_report": "hybridload.serve.kernel_report",
    "checkpoint_coverage": "hybridload.serve.coverage",
    "CoverageReport": "hybridload.serve.coverage",
    "DeviceProfile": "hybridload.plan.device_profile",
    "stream_load": "hybridload.serve.streaming",
    "signature": "hybridload.tree.signature",
    "TreeSignature": "hybridload.tree.signature",
    "compare": "hybridload.tree.diff",
    "TreeDiff": "hybridload.tree.diff",
    "layer_kinds": "hybridload.tree.layer_kinds",
    "kernel_shim": "hybridload.shim.kernel_shim",
    "ShimReport": "hybridload.shim.kernel_shim",
    "register_kernel_package": "hybridload.shim.packages",
    "kernel_packages": "hybridload.shim.packages",
    "probe_kernel_package": "hybridload.shim.probe",
    "register_twin": "hybridload.substitutes.registry",
    "register_reference": "hybridload.substitutes.registry",
    "compat_window": "hybridload.compat.compat_window",
    "install": "hybridload.integrations.install",
    "uninstall": "hybridload.integrations.install",
    "is_installed": "hybridload.integrations.install",
}

__all__ = sorted([*_LAZY, "__version__", *_ERRORS])


_exported, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)


def __getattr__(name: str) -> Any:
    if name in ("examples", "kernels", "twins", "reference", "substitutes"):  # subpackages, importable as attributes
        return importlib.import_module(f"hybridload.{name}")
    return _exported(name)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .compat.compat_window import compat_window
    from .integrations.install import install, is_installed, uninstall
    from .load.config import load_config
    from .load.meta import load_meta
    from .load.resolve import resolve
    from .load.tokenizer import load_tokenizer
    from .plan.model import LoadPlan
    from .serve.dispatch import dispatch
    from .plan.device_profile import DeviceProfile
    from .serve.coverage import CoverageReport, checkpoint_coverage
    from .serve.kernel_report import kernel_report
    from .serve.real import load_real
    from .serve.streaming import stream_load
    from .shim.kernel_shim import ShimReport, kernel_shim
    from .shim.packages import kernel_packages, register_kernel_package
    from .shim.probe import probe_kernel_package
    from .substitutes.registry import register_reference, register_twin
    from .tree.diff import TreeDiff, compare
    from .tree.layer_kinds import layer_kinds
    from .tree.signature import TreeSignature, signature


def _autoinstall() -> None:
    from ._env import disabled

    if not disabled():
        from .integrations.install import install

        install()


_autoinstall()
