"""Which top-level packages the shim may stand in for. Nothing outside this set is ever stubbed.

A package may also carry a *usability check*: importable is not always usable. triton installs next to a CUDA
build of torch on any Linux machine, imports fine without a GPU, and then fails at its first use
(``0 active drivers``); such a package is stood in for during meta builds like a broken one, and stays the
real module for everyone else.
"""
from __future__ import annotations

import threading
from types import ModuleType
from typing import Callable

from .._env import csv

#: CUDA-only (or CUDA-mostly) kernel packages seen in real Hub remote code, by top-level import name.
#: Bare compiled extensions (``selective_scan_cuda``) are listed on their own: remote code imports them directly.
DEFAULT_KERNEL_PACKAGES: frozenset[str] = frozenset(
    {
        "mamba_ssm",
        "selective_scan_cuda",
        "causal_conv1d",
        "causal_conv1d_cuda",
        "flash_attn",
        "flash_attn_2_cuda",
        "flash_attn_interface",
        "dropout_layer_norm",
        "fused_dense_lib",
        "rotary_emb",
        "fla",
        "apex",
        "amp_C",
        "fused_layer_norm_cuda",
        "xformers",
        "deep_gemm",
        "flashinfer",
        "liger_kernel",
        "triton",
    }
)

UsabilityCheck = Callable[[ModuleType], "str | None"]


def triton_driver_problem(triton: ModuleType) -> str | None:
    """None when triton has an active GPU driver here, else why not (``0 active drivers``)."""
    try:
        triton.runtime.driver.active  # noqa: B018 - the property creates the active driver or raises
    except Exception as exc:  # noqa: BLE001 - whatever triton raises means "cannot launch here"
        return f"no active GPU driver: {type(exc).__name__}: {exc}"
    return None


_lock = threading.Lock()
_registered: set[str] = set()
_checks: dict[str, UsabilityCheck] = {"triton": triton_driver_problem}


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or "." in name or not name.isidentifier():
        raise ValueError(
            f"kernel package names are top-level import names such as 'mamba_ssm', got {name!r}"
        )
    return name


def register_kernel_package(name: str, *, usable: UsabilityCheck | None = None) -> None:
    """Let the shim stand in for another top-level package (e.g. a private CUDA extension).

    ``usable(module) -> None | reason``: optional check run once after a successful real import; a reason makes
    the package *driverless* (stood in for during meta builds, real everywhere else).
    """
    with _lock:
        _registered.add(_check_name(name))
        if usable is not None:
            _checks[name] = usable


def unregister_kernel_package(name: str) -> None:
    """Undo :func:`register_kernel_package` (defaults cannot be removed)."""
    with _lock:
        _registered.discard(name)
        if name != "triton":
            _checks.pop(name, None)


def usability_check(name: str) -> UsabilityCheck | None:
    with _lock:
        return _checks.get(name)


def kernel_packages() -> frozenset[str]:
    """The defaults, plus :func:`register_kernel_package` names, plus ``HYBRIDLOAD_KERNEL_PACKAGES``."""
    with _lock:
        extra = set(_registered)
    extra.update(n for n in csv("HYBRIDLOAD_KERNEL_PACKAGES") if n.isidentifier())
    return DEFAULT_KERNEL_PACKAGES | extra


def top_level(fullname: str) -> str:
    return fullname.partition(".")[0]


def is_kernel_module(fullname: str) -> bool:
    """True when ``fullname`` (any depth) belongs to a registered kernel package."""
    return top_level(fullname) in kernel_packages()
