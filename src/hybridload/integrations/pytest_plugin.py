"""pytest plugin (``pytest11`` entry point): tree-equivalence checks for CI jobs.

Fixtures: ``hybridload_meta`` (build a meta model from a model id/path/plan, through the same build path as
``hybridload.load_meta``; ``lock=path`` checks the plan and the remote-code hashes against a lock file first)
and ``hybridload_tree`` (an assertion helper comparing a model or signature with an expected signature *or
lock* file, failing with the readable diff; ``assert_checkpoint_fits`` checks that a checkpoint fills a meta
tree exactly, from its shard headers, failing with the coverage report). ``--hybridload-update`` rewrites expected signature files instead
of comparing. Trust is explicit here as everywhere: pass ``trust_remote_code=True``; a lock never grants it.
Nothing heavy is imported until a fixture is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hybridload")
    group.addoption(
        "--hybridload-update",
        action="store_true",
        default=False,
        help="rewrite expected hybridload signature files instead of comparing against them",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hybridload: tree-equivalence checks built with hybridload")


class TreeChecker:
    """``hybridload_tree.assert_matches(model_or_signature, "expected.json")`` and
    ``hybridload_tree.assert_checkpoint_fits(meta_model[, checkpoint])``."""

    def __init__(self, update: bool) -> None:
        self.update = update

    def assert_matches(self, actual: Any, expected_path: str | Path, *, max_items: int = 20) -> Any:
        from hybridload.plan.lockfile import LOCK_SCHEMA, parse_lock, write_atomically
        from hybridload.tree.diff import compare
        from hybridload.tree.signature import TreeSignature, signature

        sig = actual if isinstance(actual, TreeSignature) else signature(actual)
        path = Path(expected_path)
        if self.update:
            write_atomically(path, sig.to_json())
            return sig
        if not path.exists():
            pytest.fail(f"expected signature {path} does not exist; run pytest with --hybridload-update to write it", pytrace=False)
        text = path.read_text(encoding="utf-8")
        if f'"{LOCK_SCHEMA}"' in text:
            expected = parse_lock(text, str(path)).signature
            if expected is None:
                pytest.fail(f"lock file {path} records no tree; re-lock it with `hybridload lock`", pytrace=False)
        else:
            expected = TreeSignature.from_json(text)
        diff = compare(expected, sig, labels=(str(path), "built"))
        if not diff.identical:
            pytest.fail(f"module tree differs from {path}:\n{diff.report(max_items=max_items)}", pytrace=False)
        return sig


    def assert_checkpoint_fits(self, meta_model: Any, checkpoint: Any = None, *, key_mapping: Any = None,
                               max_items: int = 20) -> Any:
        """Fail unless ``checkpoint`` (default: the plan's own; a folder, index file or Hub repo id) fills
        ``meta_model`` exactly by the real load's rules; reads tensor headers only. Returns the report."""
        from hybridload.serve.coverage import checkpoint_coverage

        report = checkpoint_coverage(meta_model, checkpoint, key_mapping=key_mapping)
        if not report.ok:
            pytest.fail(report.format(max_items=max_items), pytrace=False)
        return report


@pytest.fixture
def hybridload_meta() -> Callable[..., Any]:
    """``hybridload_meta(model_or_plan, **resolve_kwargs)`` -> a meta model built GPU-less through the shim."""

    def build(model: Any, **resolve_kwargs: Any) -> Any:
        from hybridload.load.meta import load_meta

        return load_meta(model, **resolve_kwargs)

    return build


@pytest.fixture
def hybridload_tree(request: pytest.FixtureRequest) -> TreeChecker:
    return TreeChecker(update=bool(request.config.getoption("--hybridload-update")))
