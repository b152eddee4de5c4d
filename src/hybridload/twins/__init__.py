"""Structural twins: pure-PyTorch classes the shim builds in place of kernel-package classes.

A twin has the real class's constructor signature (defaults included), the same parameters and buffers
(names, shapes, dtypes, persistence; device/dtype kwargs honoured), the same relevant base class
(fla's ``ShortConvolution`` is an ``nn.Conv1d``) and a forward with the real module's semantics and return
structure, computed by :mod:`hybridload.reference`. Each twin names the class it stands for in
``__hybridload_twin_of__``; tree signatures record that name, so client and server trees compare equal.

:data:`DEFAULT_TWINS` maps every import path of every twinned class to its twin. Users add more with
``hybridload.register_twin(path, cls)`` (see docs/twins.md).
"""
from __future__ import annotations

from . import apex, fla, flash_attn, mamba_ssm
from ._marker import real_name, twin_of

#: the twin classes shipped with hybridload, one entry per twinned kernel class
TWIN_CLASSES: tuple[type, ...] = tuple(
    cls
    for module in (fla, mamba_ssm, apex, flash_attn)
    for cls in (getattr(module, name) for name in module.__all__)
)

#: symbol path (as user code imports it, or the defining module's path) -> twin class
DEFAULT_TWINS: dict[str, type] = {path: cls for cls in TWIN_CLASSES for path in cls.__hybridload_twin_paths__}

__all__ = ["DEFAULT_TWINS", "TWIN_CLASSES", "real_name", "twin_of"]
