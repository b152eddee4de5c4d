"""Fixtures for the bundled example: fresh-process loads of hybrid_tiny, a server and a laptop, run concurrently.

The two environments need their own interpreters (kernel packages on or off sys.path, transformers'
import-time kernel checks, dynamic-module caches); see probe.py for what each one does.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAKEKERNELS = HERE.parent / "fakekernels"
PROBE = HERE / "probe.py"


def _env(tmp: Path, with_kernels: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "HYBRIDLOAD_DISABLE"}}
    if with_kernels:
        env["PYTHONPATH"] = str(FAKEKERNELS)
    env["HF_MODULES_CACHE"] = str(tmp / "hf_modules")
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["OMP_NUM_THREADS"] = "1"
    if with_kernels:
        # the server is plain transformers + kernel packages: hybridload's integration must not shape a real load
        env["HYBRIDLOAD_DISABLE"] = "1"
    return env


class Run:
    """A finished subprocess and the folder it wrote to."""

    def __init__(self, name: str, out: Path, proc: subprocess.Popen) -> None:
        self.name, self.out = name, out
        stdout, stderr = proc.communicate(timeout=600)
        self.returncode, self.stdout, self.stderr = proc.returncode, stdout, stderr

    def check(self) -> "Run":
        if self.returncode != 0:
            pytest.fail(f"{self.name} exited {self.returncode}:\n{self.stderr[-4000:]}")
        return self

    @property
    def report(self) -> dict:
        return json.loads((self.check().out / "report.json").read_text())


@pytest.fixture(scope="session")
def example_runs(tmp_path_factory) -> dict[str, Run]:
    """"server" (fake real kernel packages importable) and "laptop" (none) runs of probe.py, in parallel."""
    started = {}
    for mode in ("server", "laptop"):
        out = tmp_path_factory.mktemp(mode)
        started[mode] = (out, subprocess.Popen(
            [sys.executable, str(PROBE), mode, str(out)], env=_env(out, with_kernels=mode == "server"), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))
    return {mode: Run(mode, out, proc) for mode, (out, proc) in started.items()}


@pytest.fixture(scope="session")
def example_dir() -> Path:
    import hybridload.examples

    return hybridload.examples.path("hybrid_tiny")
