"""GPU-run tests: make benchmarks/gpu importable (run_all, checks, the Kimi-style variant) and load the record."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
GPU_BENCH = REPO / "benchmarks" / "gpu"
DATA = REPO / "tests" / "data" / "gpu"
RECORD = DATA / "gpu_runs_h100.json"
for path in (str(GPU_BENCH), str(REPO / "tests" / "twins")):
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture(scope="session")
def record() -> dict[str, Any]:
    """The run brought back from the H100 (tests/data/gpu/gpu_runs_h100.json), as it came back."""
    return json.loads(RECORD.read_text())
