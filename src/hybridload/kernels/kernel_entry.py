"""What one kernel symbol a model bound resolves to: the vocabulary of ``hybridload.kernel_report``.

Kept at the kernels' level so that modules which run hybridload's own kernels (quantized linears, grouped MoE)
can describe themselves in a report without depending on the served side.
"""
from __future__ import annotations

from dataclasses import dataclass

REAL = "real"
STAND_IN = "stand-in"
TWIN = "twin (pure PyTorch)"
FALLBACK = "hybridload triton fallback"
KERNEL = "hybridload triton kernel"  # a hybridload module's own Triton path (quantized linears, grouped MoE)
REFERENCE_PATH = "pure PyTorch (reference)"  # a hybridload module on its slow reference path: refused by strict


@dataclass(frozen=True)
class KernelEntry:
    symbol: str  # where it is bound: "remote:modeling_x.rmsnorm_fn" or "backbone.layers.0.mixer.conv1d"
    target: str  # the kernel symbol path
    package: str
    status: str  # REAL | STAND_IN | TWIN | FALLBACK
    version: str | None = None
    file: str | None = None
    arch_covered: bool | None = None  # compiled code covers this GPU (None: cannot tell / no CUDA)
    note: str = ""
