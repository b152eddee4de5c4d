"""Helpers for the hybridload.kernels tests."""
from __future__ import annotations

import sys
from typing import Callable, Iterator

import pytest
import torch

from hybridload.kernels import tolerances


@pytest.fixture
def no_triton(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make ``import triton`` fail, as on CPU CI, whatever this machine has installed."""
    for name in [n for n in sys.modules if n == "triton" or n.startswith("triton.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "triton", None)
    for name in [n for n in sys.modules if n.startswith("hybridload.kernels._") and n.endswith("_triton")]:
        monkeypatch.delitem(sys.modules, name)
    yield


def _poison_cuda_allocator(nbytes: int) -> None:
    """Fill a freed block of ``nbytes`` with NaN so that an output the kernel forgets to write shows up.

    PyTorch's caching allocator hands the same block to the next allocation of that size.
    """
    if not torch.cuda.is_available():  # Triton-interpreter runs on CPU (see test_numerics_gpu.py)
        return
    block = torch.empty(max(nbytes, 1) // 4 + 1, dtype=torch.float32, device="cuda")
    block.fill_(float("nan"))
    del block


def _assert_close(out: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """``out`` within the documented tolerance of ``ref`` (both cast to float64), every element written."""
    assert out.shape == ref.shape, f"{what}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert out.dtype == ref.dtype, f"{what}: dtype {out.dtype} != reference {ref.dtype}"
    assert torch.isfinite(out).all(), f"{what}: non-finite values (an element was not written?)"
    l2_bound, max_bound = tolerances.TOLERANCES[str(out.dtype).replace("torch.", "")]
    l2, worst = tolerances.relative_errors(out, ref)
    assert l2 <= l2_bound and worst <= max_bound, (
        f"{what}: relative L2 error {l2:.2e} (bound {l2_bound:.0e}), worst element {worst:.2e} "
        f"(bound {max_bound:.0e})"
    )


@pytest.fixture
def poison() -> Callable[[int], None]:
    return _poison_cuda_allocator


@pytest.fixture
def assert_close() -> Callable[[torch.Tensor, torch.Tensor, str], None]:
    return _assert_close
