"""Trust is never granted by a file: the repository's code (which writes a marker file when it is imported)
never runs without an explicit trust argument or policy, through every entry point.

Order: explicit argument > HYBRIDLOAD_TRUST_REMOTE_CODE policy > deny. A lock or a plan file records the
decision and is checked against it; a deny policy wins over everything but an explicit argument.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hybridload
from hybridload.cli import main as cli
from hybridload.errors import LockMismatchError, TrustError
from hybridload.plan.lockfile import read_lock
from hybridload.plan.model import LoadPlan

pytest_plugins = ["pytester"]

SRC = str(Path(hybridload.__file__).resolve().parents[1])


def forget_remote_modules() -> None:
    """Drop imported remote-code modules, so any later use of the repository's code executes it (and marks)."""
    for name in [n for n in list(sys.modules) if n.startswith("transformers_modules.")]:
        if not hasattr(sys.modules[name], "__path__"):
            sys.modules.pop(name, None)


@pytest.fixture
def trusted_files(build, tmp_path):
    """A remote-only repository with weights, and a lock and plan JSON written with explicit trust."""
    folder = build.toy_remote_only(weights=True)
    lock = tmp_path / "model.lock.json"
    forget_remote_modules()
    plan = hybridload.resolve(folder, trust_remote_code=True, lock=lock)
    assert build.remote_code_ran()  # positive control: explicit trust runs it
    build.clear_marker()
    forget_remote_modules()
    return folder, lock, plan.to_json()


def _no_code_ran(build) -> None:
    assert not build.remote_code_ran(), "the repository's code ran without explicit trust"


def test_resolve_and_lock_refuse_without_explicit_trust(build, trusted_files, monkeypatch):
    folder, lock, _ = trusted_files
    with pytest.raises(TrustError):
        hybridload.resolve(folder)
    with pytest.raises(LockMismatchError, match="never grants trust"):
        hybridload.resolve(folder, lock=lock)
    monkeypatch.setenv("HYBRIDLOAD_TRUST_REMOTE_CODE", "0")
    with pytest.raises(LockMismatchError, match="never grants trust"):
        hybridload.resolve(folder, lock=lock)
    _no_code_ran(build)


@pytest.mark.parametrize("reader", ["from_json", "from_dict", "lock"])
@pytest.mark.parametrize("entry", ["load_config", "load_meta", "load_tokenizer", "load_real", "dispatch", "dispatch_low_memory"])
def test_a_plan_read_from_a_file_runs_no_code(build, trusted_files, monkeypatch, reader, entry):
    folder, lock, text = trusted_files
    plan = {
        "from_json": lambda: LoadPlan.from_json(text),
        "from_dict": lambda: LoadPlan.from_dict(json.loads(text)),
        "lock": lambda: read_lock(lock).plan,
    }[reader]()
    assert plan.trust_remote_code  # the file records the decision ...
    call = {
        "load_config": hybridload.load_config,
        "load_meta": hybridload.load_meta,
        "load_tokenizer": hybridload.load_tokenizer,
        "load_real": hybridload.load_real,
        "dispatch": hybridload.dispatch,
        "dispatch_low_memory": lambda p: hybridload.dispatch(p, low_memory=True),
    }[entry]
    monkeypatch.setenv("HYBRIDLOAD_TRUST_REMOTE_CODE", "0")
    with pytest.raises(TrustError, match="never grants trust"):
        call(plan)  # ... but grants nothing
    monkeypatch.delenv("HYBRIDLOAD_TRUST_REMOTE_CODE")
    with pytest.raises(TrustError, match="never grants trust"):
        call(plan)
    _no_code_ran(build)


def test_an_explicit_argument_or_a_policy_grants_it(build, trusted_files, monkeypatch):
    _, lock, text = trusted_files
    plan = LoadPlan.from_json(text)
    hybridload.load_meta(plan, trust_remote_code=True)
    assert build.remote_code_ran()
    build.clear_marker()
    forget_remote_modules()
    monkeypatch.setenv("HYBRIDLOAD_TRUST_REMOTE_CODE", plan.repo)
    hybridload.load_meta(read_lock(lock).plan)
    assert build.remote_code_ran()
    with pytest.raises(TrustError, match="conflicts"):
        hybridload.load_meta(plan, trust_remote_code=False)


@pytest.mark.parametrize("command", ["check", "lock", "signature", "doctor"])
def test_cli_runs_no_code_without_the_flag_and_names_it(build, trusted_files, capsys, tmp_path, command):
    folder, lock, _ = trusted_files
    argv = {
        "check": ["check", str(folder)],
        "lock": ["lock", str(folder), "-o", str(tmp_path / "out.lock.json")],
        "signature": ["signature", str(folder), "-o", str(tmp_path / "out.json")],
        "doctor": ["doctor", "--model", str(folder)],
    }[command]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "--trust-remote-code" in err and "trust_remote_code=True" not in err
    if command == "check":
        assert cli(["check", "--against", str(lock)]) == 2  # the lock's repository, without the flag
        assert "--trust-remote-code" in capsys.readouterr().err
    _no_code_ran(build)
    forget_remote_modules()
    assert cli([*argv, "--trust-remote-code"] if command != "doctor" else ["doctor", "--model", str(folder), "--trust-remote-code"]) == 0
    assert build.remote_code_ran()


def test_pytest_plugin_runs_no_code_without_explicit_trust(build, trusted_files, pytester):
    folder, lock, _ = trusted_files
    pytester.makepyfile(
        test_untrusted=f"""
        import pytest
        from hybridload.errors import LockMismatchError, TrustError
        from hybridload.plan.lockfile import read_lock

        def test_folder(hybridload_meta):
            with pytest.raises(TrustError):
                hybridload_meta({str(folder)!r})

        def test_locked_plan(hybridload_meta):
            with pytest.raises(TrustError, match="never grants trust"):
                hybridload_meta(read_lock({str(lock)!r}).plan)

        def test_lock(hybridload_meta):
            with pytest.raises(LockMismatchError):
                hybridload_meta({str(folder)!r}, lock={str(lock)!r})
        """
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    _no_code_ran(build)


def test_nnsight_runs_no_code_without_explicit_trust(build, trusted_files):
    """nnsight's meta build and real load of the repository, in a fresh process, without trust_remote_code."""
    folder, _, _ = trusted_files
    code = f"""
import hybridload, json
from nnsight import LanguageModel
from hybridload.errors import TrustError
outcomes = []
for dispatch in (False, True):
    try:
        LanguageModel({str(folder)!r}, tokenizer=None, dispatch=dispatch)
        outcomes.append("built")
    except TrustError:
        outcomes.append("TrustError")
print(json.dumps(outcomes))
"""
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    env.pop("HYBRIDLOAD_TRUST_REMOTE_CODE", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["TrustError", "TrustError"]
    _no_code_ran(build)
