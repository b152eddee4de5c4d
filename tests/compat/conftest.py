"""Compat test fixtures; helpers live in compat_fixtures.py (this folder is put on sys.path)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from compat_fixtures import write_compat_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _import_hybridload() -> None:
    """``import hybridload`` and nothing else: its install() routes plain calls into the build path."""
    import hybridload
    from hybridload.build.session import PURPOSES

    assert hybridload.is_installed()
    assert "compat" in PURPOSES["meta"] and "compat" in PURPOSES["config"]


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``remote(pattern, **config) -> folder``; the stream-generator package goes on sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    def make(pattern: str, **config: Any) -> Path:
        return write_compat_model(tmp_path, pattern, **config)

    yield make
    import sys

    for name in [n for n in sys.modules if n == "transformers_stream_generator" or n.startswith("transformers_stream_generator.")]:
        sys.modules.pop(name, None)
