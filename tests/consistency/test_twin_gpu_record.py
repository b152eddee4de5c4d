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


def _covered(record: dict) -> set[str]:
    return {check["name"].split(" ", 1)[0] for check in record["checks"]}


def test_the_record_passed_on_an_h100_with_fla_0_6_0() -> None:
    record = json.loads(RECORD.read_text())
    env = record["environment"]
    assert env["device"].startswith("NVIDIA H100") and env["fla_core"] == "0.6.0"
    assert record["goldens"]["classes_equal_committed"] and record["goldens"]["differing_classes"] == []
    assert record["checks"] and all(check["passed"] for check in record["checks"])
    for check in record["checks"]:
        for output in check["outputs"].values():
            assert output.get("both_none") or (output["shape_and_dtype_match"] and output["rel_err"] <= check["tolerance"])


def test_the_record_covers_every_fla_reference_kernel_and_twin() -> None:
    covered = _covered(json.loads(RECORD.read_text()))
    kernels = {paths[0] for name, paths in REFERENCE_TABLE["fla"].items() if name not in NOT_CHECKED_DIRECTLY}
    assert kernels <= covered
    twins = {"fla.modules." + path.rsplit(".", 1)[1] for path in GRID["fla"][1]} - {"fla.modules.FusedRMSNormSwishGate"}
    assert twins <= covered  # FusedRMSNormSwishGate is FusedRMSNormGated with activation="swish", checked there
