"""Coverage test fixtures; helpers live in coverage_fixtures.py (this folder is put on sys.path)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import coverage_fixtures as fx  # noqa: E402


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """model_type -> a save_pretrained checkpoint of random weights (written once per session)."""
    folders: dict[str, Path] = {}

    def get(model_type: str) -> Path:
        if model_type not in folders:
            folders[model_type] = fx.save_random(fx.make_config(model_type), tmp_path_factory.mktemp(model_type))
        return folders[model_type]

    return get
