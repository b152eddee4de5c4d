"""Which top-level packages the shim may stand in for. Nothing outside this set is ever stubbed."""
from __future__ import annotations

import threading

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

_lock = threading.Lock()
_registered: set[str] = set()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or "." in name or not name.isidentifier():
        raise ValueError(
            f"kernel package names are top-level import names such as 'mamba_ssm', got {name!r}"
        )
    return name


def register_kernel_package(name: str) -> None:
    """Let the shim stand in for another top-level package (e.g. a private CUDA extension)."""
    with _lock:
        _registered.add(_check_name(name))


def unregister_kernel_package(name: str) -> None:
    """Undo :func:`register_kernel_package` (defaults cannot be removed)."""
    with _lock:
        _registered.discard(name)


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
