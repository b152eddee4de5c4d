"""How close a kernel's output must be to the pure-torch reference: the bounds the GPU tests enforce.

Both sides compute in float32 from the same inputs, so the differences are reduction order and, for
half-precision outputs, rounding ties that land one unit in the last place apart. The bounds are per
*output* dtype: relative L2 error ``|out - ref| / |ref|`` and worst element ``max|out - ref| / max|ref|``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: output dtype name -> (max relative L2 error, max worst-element error relative to max|ref|)
TOLERANCES: dict[str, tuple[float, float]] = {
    "float32": (1e-5, 1e-4),
    "float16": (1e-3, 2e-3),
    "bfloat16": (8e-3, 1.6e-2),
}


def relative_errors(out: "torch.Tensor", ref: "torch.Tensor") -> tuple[float, float]:
    """(relative L2 error, worst element error / max|ref|), computed in float64; NaN never passes."""
    diff = out.double() - ref.double()
    if diff.isnan().any():
        return float("nan"), float("nan")
    scale_l2 = float(ref.double().norm())
    scale_max = float(ref.double().abs().max()) if ref.numel() else 0.0
    l2 = float(diff.norm()) / scale_l2 if scale_l2 > 0 else float(diff.norm())
    worst = float(diff.abs().max()) if diff.numel() else 0.0
    worst = worst / scale_max if scale_max > 0 else worst
    return l2, worst


def within_tolerance(out: "torch.Tensor", ref: "torch.Tensor") -> bool:
    """True when ``out`` is within :data:`TOLERANCES` of ``ref`` for ``out``'s dtype."""
    l2_bound, max_bound = TOLERANCES[str(out.dtype).replace("torch.", "")]
    l2, worst = relative_errors(out, ref)
    return l2 <= l2_bound and worst <= max_bound
