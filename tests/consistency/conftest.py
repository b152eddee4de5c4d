"""Record- and doc-consistency tests: committed records, docs and project files say what the software does.

Every test in this folder carries the ``consistency`` marker (``pytest -m consistency`` runs them alone,
``-m "not consistency"`` runs only behaviour). They read committed files; they never assert the machine's
environment.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
for path in (str(REPO / "benchmarks" / "gpu"), str(REPO / "tests" / "twins")):
    if path not in sys.path:
        sys.path.insert(0, path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here:
            item.add_marker(pytest.mark.consistency)


@pytest.fixture(scope="session")
def record() -> dict[str, Any]:
    """The run brought back from the H100 (tests/data/gpu/gpu_runs_h100.json), as it came back."""
    return json.loads((REPO / "tests" / "data" / "gpu" / "gpu_runs_h100.json").read_text())
