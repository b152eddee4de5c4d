"""Fixtures of the nnsight integration tests (helpers live in nnsight_fixtures.py and ndif_like.py)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
for entry in (str(HERE), str(TESTS)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from nnsight_fixtures import HubCache, write_gpt2, write_tiny_hybrid  # noqa: E402


@pytest.fixture(autouse=True)
def _installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``import hybridload`` as users do it, nnsight imported, no trust policy, and per-test process caches.

    Tests reuse repo ids ("org/tiny") in different temporary Hub caches, so the commit pins, nnsight's id and
    config caches and the server's rebuilt client trees start empty in every test.
    """
    import hybridload
    import nnsight  # noqa: F401
    from nnsight.modeling import huggingface

    from hybridload.integrations.nnsight_handshake import forget_rebuilt
    from hybridload.integrations.nnsight_plan import forget_pins

    monkeypatch.delenv("HYBRIDLOAD_TRUST_REMOTE_CODE", raising=False)
    monkeypatch.setattr(huggingface, "_ID_CACHE", {})
    monkeypatch.setattr(huggingface, "_CONFIG_CACHE", {})
    forget_pins()
    forget_rebuilt()
    hybridload.install()
    yield
    hybridload.install()  # a test that uninstalled must not leak that into the next one
    forget_pins()
    forget_rebuilt()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any Hub API call fails the test (file downloads are served from the cache or fail on their own)."""
    from huggingface_hub import HfApi

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the Hub API was called")

    for name in ("model_info", "repo_info"):
        monkeypatch.setattr(HfApi, name, refuse)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubCache:
    from huggingface_hub import constants

    root = tmp_path / "hf_cache"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return HubCache(root)


@pytest.fixture(scope="session")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gpt2(tmp_path_factory.mktemp("gpt2") / "gpt2")


@pytest.fixture(scope="session")
def tiny_hybrid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only: a remote-code hybrid whose module imports mamba_ssm (see nnsight_fixtures)."""
    return write_tiny_hybrid(tmp_path_factory.mktemp("tiny") / "tiny_hybrid")


@pytest.fixture(scope="session")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundled Nemotron-H-style example (imports mamba_ssm and causal_conv1d)."""
    import hybridload.examples

    target = tmp_path_factory.mktemp("example") / "hybrid_tiny"
    shutil.copytree(hybridload.examples.path("hybrid_tiny"), target,
                    ignore=shutil.ignore_patterns("__pycache__", "make_example.py", "reference_signature.json"))
    return target
