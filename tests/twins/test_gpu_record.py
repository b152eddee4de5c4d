"""The committed H100 record (tests/data/goldens/fla_gpu_check.json) covers every fla twin and reference.

The record is produced by ``gpu_twins_check.py`` against the real fla 0.6.0 kernels; the ``gpu`` test below
re-runs it live where CUDA and fla are present.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybridload.reference import REFERENCE_TABLE
from twin_golden_grid import GRID
from twin_goldens_io import GOLDEN_DIR

RECORD = GOLDEN_DIR / "fla_gpu_check.json"
#: fla functions checked through the twins that call them (ShortConvolution, FusedRMSNormGated, RMSNorm)
NOT_CHECKED_DIRECTLY = {"causal_conv1d", "causal_conv1d_update", "rms_norm_gated", "layer_norm_gated", "rms_norm", "layer_norm"}


@pytest.mark.gpu
def test_live_gpu_check(tmp_path: Path) -> None:
    pytest.importorskip("fla", reason="the live check needs the fla-core wheels installed")
    script = Path(__file__).with_name("gpu_twins_check.py")
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, timeout=1200)
    summary = json.loads((tmp_path / "gpu_twins_check.json").read_text())["summary"]
    assert summary["goldens_equal"] and summary["passed"] == summary["checks"]
