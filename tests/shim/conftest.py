"""pytest fixtures of the kernel-shim tests: remote-code folders, fake site dirs, shim hygiene.

Puts ``tests/`` on ``sys.path`` so ``from fixtures.remote_code import ...`` works under
``--import-mode=importlib`` (see tests/fixtures/README.md).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

TESTS_DIR = str(Path(__file__).resolve().parents[1])
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from fixtures.remote_code import write_broken_package, write_remote_model, write_working_package  # noqa: E402
from fixtures.shim_state import no_window_left_behind  # noqa: E402


@pytest.fixture
def remote_model(tmp_path: Path) -> Callable[..., Path]:
    """``remote_model("hymba", num_hidden_layers=3)`` -> a fresh remote-code folder under tmp_path."""
    return lambda pattern, **kwargs: write_remote_model(tmp_path, pattern, **kwargs)


@pytest.fixture
def plain_transformers() -> Iterator[None]:
    """transformers exactly as without hybridload (integration uninstalled), reinstalled afterwards."""
    import hybridload

    hybridload.uninstall()
    try:
        yield
    finally:
        hybridload.install()


# --------------------------------------------------------------------------------------------------
# fake site-packages: installed-but-broken and really working kernel packages
# --------------------------------------------------------------------------------------------------


class FakeSite:
    """A sys.path entry the test writes packages into; everything is undone at teardown."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.names: list[str] = []
        self.registered: list[str] = []
        monkeypatch.syspath_prepend(str(root))

    def broken(self, name: str, failure: str = "missing_extension", *, register: bool = False) -> str:
        write_broken_package(self.root, name, failure)
        return self._added(name, register)

    def working(self, name: str = "causal_conv1d", *, register: bool = False) -> str:
        write_working_package(self.root, name)
        return self._added(name, register)

    def _added(self, name: str, register: bool) -> str:
        from hybridload.shim.packages import register_kernel_package

        self.names.append(name)
        if register:
            register_kernel_package(name)
            self.registered.append(name)
        importlib.invalidate_caches()
        return name

    def cleanup(self) -> None:
        from hybridload.shim.probe import reset_verdicts
        from hybridload.shim.packages import unregister_kernel_package

        for name in self.registered:
            unregister_kernel_package(name)
        for name in self.names:
            for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                sys.modules.pop(module, None)
        reset_verdicts()
        importlib.invalidate_caches()


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    from hybridload.shim.probe import reset_verdicts

    reset_verdicts()
    site = FakeSite(tmp_path / "site-packages", monkeypatch)
    site.root.mkdir()
    try:
        yield site
    finally:
        site.cleanup()


@pytest.fixture(autouse=True)
def _shim_hygiene() -> Iterator[None]:
    """Every shim test must leave no window, finder or stand-in module behind."""
    with no_window_left_behind():
        yield
