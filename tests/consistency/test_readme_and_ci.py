"""The README's two set-up-and-go commands are exactly what CI runs."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set up and go", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_has_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands), "each README command is one line a newcomer copies"


def test_ci_runs_the_readme_commands():
    install_and_check, tests = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # command 1 = venv + install + main job; CI runs the same three steps, one per line
    venv, install, check = [part.strip() for part in install_and_check.split("&&")]
    assert venv in ci and install in ci and check in ci
    assert tests in ci
    assert "set -euo pipefail" in ci  # any failure, pytest's exit 5 included, fails CI


def test_test_command_collects_the_test_suite():
    _, tests = _readme_commands()
    assert tests.endswith("pytest -q -n auto")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'testpaths = ["tests"]' in pyproject


def test_the_supported_nnsight_range_is_the_declared_one():
    from hybridload.integrations.nnsight import SUPPORTED_NNSIGHT

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = set(re.findall(r'"nnsight(>=[^"]+)"', pyproject))
    assert declared == {SUPPORTED_NNSIGHT}


def test_ci_covers_every_environment_the_readme_names():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip install -q triton" in ci
    assert '"transformers==5.17.0"' in ci
    assert re.search(r"for version in 5\.23\.0 5\.24\.0; do\n.*transformers==\$version", ci)
    assert "scripts/ci-ndif" in ci
