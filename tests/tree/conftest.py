"""Fixtures of the tree-signature tests: tiny meta-built models (no Hub, no weights)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import tree_fixtures  # noqa: E402


@pytest.fixture
def llama() -> Callable[..., object]:
    """``llama(**config_overrides)`` -> a fresh tiny Llama built on the meta device."""
    return lambda **overrides: tree_fixtures.meta_build(tree_fixtures.tiny_llama_config(**overrides))


@pytest.fixture(scope="session")
def tiny_hybrid(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The remote-code Nemotron-H-style model (pattern ``M-*E``), meta-built inside the kernel shim."""
    folder = tree_fixtures.write_tiny_hybrid(tmp_path_factory.mktemp("remote"), "tiny_hybrid")
    return tree_fixtures.build_tiny_hybrid(folder)
