"""The error metrics behind the documented kernel tolerances."""
from __future__ import annotations

import math

import pytest
import torch

from hybridload.kernels import TOLERANCES, within_tolerance
from hybridload.kernels.tolerances import relative_errors


def test_metrics_of_a_known_perturbation() -> None:
    ref = torch.randn(1000, dtype=torch.float64)
    out = ref.clone()
    out[17] += 0.5 * ref.abs().max()
    l2, worst = relative_errors(out, ref)
    assert worst == pytest.approx(0.5)
    assert l2 == pytest.approx(float(0.5 * ref.abs().max() / ref.norm()))


def test_nan_never_passes() -> None:
    ref = torch.randn(8)
    out = ref.clone()
    out[3] = float("nan")
    assert all(math.isnan(v) for v in relative_errors(out, ref))
    assert not within_tolerance(out, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_rounding_to_the_output_dtype_is_within_tolerance_and_a_wrong_value_is_not(dtype: torch.dtype) -> None:
    ref = torch.randn(4096, dtype=torch.float64)
    assert within_tolerance(ref.to(dtype), ref)
    wrong = ref.clone()
    wrong[:64] = -wrong[:64]  # 1.5% of the elements with flipped sign
    assert not within_tolerance(wrong.to(dtype), ref)


def test_tolerances_tighten_with_precision() -> None:
    assert TOLERANCES["float32"] < TOLERANCES["float16"] < TOLERANCES["bfloat16"]
