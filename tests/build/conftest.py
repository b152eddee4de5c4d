"""Build-path tests: this folder (entry_fixtures, build_fixtures) and the compat fixtures are importable, and
every test leaves torch, the collector and the fast-build windows as it found them."""
from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
for path in (str(HERE), str(HERE.parent / "compat")):
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture(autouse=True)
def nothing_left_patched() -> Iterator[None]:
    import torch

    from hybridload.build import fast_init, gc_pause
    from hybridload.hooks.patch import is_patched

    threshold, enabled, frozen = gc.get_threshold(), gc.isenabled(), gc.get_freeze_count()
    yield
    assert fast_init.windows_open() == 0 and gc_pause.windows_open() == 0
    for owner, name in fast_init.patched_attributes():
        value = owner.__dict__.get(name)
        assert not is_patched(value), f"{owner.__qualname__}.{name} left patched"
    assert all(name not in torch.Tensor.__dict__ for name in ("uniform_", "normal_", "fill_", "zero_"))
    assert (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count()) == (threshold, enabled, frozen)
