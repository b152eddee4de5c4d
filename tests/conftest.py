"""Shared test configuration: GPU tests are skipped without CUDA; CPU tests never skip."""
from __future__ import annotations

import os
import sys

import pytest

# shared test helpers (tests/fixtures, tests/fakekernels) import as top-level packages
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)


def _cuda_available() -> bool:
    try:
        import torch
    except Exception:  # pragma: no cover
        return False
    return bool(torch.cuda.is_available())


@pytest.fixture(autouse=True)
def _kernel_packages_absent(request: pytest.FixtureRequest):
    """CPU tests see no installed kernel package (triton arrives with a CUDA build of torch, fla-core pulls it):
    they never depend on what the machine has. GPU tests use the real ones."""
    if request.node.get_closest_marker("gpu") is not None or request.node.get_closest_marker("real_kernel_packages"):
        yield
        return
    from fixtures.shim_state import hidden_installed_packages
    from hybridload.shim.packages import DEFAULT_KERNEL_PACKAGES

    with hidden_installed_packages(DEFAULT_KERNEL_PACKAGES):
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # the marker, not keywords (folder names are keywords)
            item.add_marker(skip_gpu)
