"""The recorded GPU runs, re-run live where CUDA is available (marked gpu: skipped without CUDA).

Runs ``benchmarks/gpu/run_all.py`` into a temporary folder and requires every claim of docs/gpu.md to hold
on that run (``checks.problems``): real fla kernels bound and launched under ``strict=True``, the forward
within tolerance of the pure-torch path, the served tree equal to the committed GPU-less meta signature,
and the bundled example served through hybridload's Triton fallback, matching the pure-torch path.
fla-core and flash-linear-attention must be importable (e.g. the wheels installed into a --target folder on
PYTHONPATH); the example needs mamba_ssm and causal_conv1d absent.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import checks

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.gpu
def test_recorded_runs_hold_live(tmp_path):
    if importlib.util.find_spec("fla") is None:
        pytest.skip("fla-core / flash-linear-attention are not importable here (install the 0.6.0 wheels)")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "HYBRIDLOAD_DISABLE"}
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    fla_site = str(Path(importlib.util.find_spec("fla").origin).parents[1])
    env["PYTHONPATH"] = os.pathsep.join([*paths, fla_site, str(REPO / "src")])
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "run_all.py"), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    data = json.loads((out / "gpu_runs.json").read_text())
    meta = json.loads((REPO / "tests" / "data" / "gpu" / "kimi_gpu_meta_signature.json").read_text())
    assert checks.problems(data, meta_digest=meta["digest"]) == [], proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0
