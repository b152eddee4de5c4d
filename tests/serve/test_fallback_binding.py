"""On CPU: a Triton-serving shim window binds hybridload's kernels in stand-in modules, kernel_report labels
them, and strict mode accepts them while still refusing stand-ins."""
from __future__ import annotations

import importlib

import pytest

import hybridload
from hybridload.errors import StandInReachableError
from hybridload.serve import kernel_report as report_mod
from hybridload.serve.dispatch import _strict_check
from hybridload.shim.kernel_shim import kernel_shim
from hybridload.shim.standins import is_stand_in

PATH = "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn"


def _fallback() -> object:
    with kernel_shim(triton=True):
        return importlib.import_module("mamba_ssm.ops.triton.layernorm_gated").rmsnorm_fn


def test_triton_window_binds_the_kernel_and_leaves_other_symbols_stand_ins():
    with kernel_shim(triton=True):
        module = importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")
        kernel = module.rmsnorm_fn
        assert not is_stand_in(kernel)
        assert is_stand_in(module.RMSNorm)  # no Triton substitute: still a stand-in
    assert kernel.__hybridload_fallback_for__ == PATH
    assert kernel.__wrapped__ is hybridload.kernels.rmsnorm_fn
    assert _fallback() is kernel  # one alias per path


def test_a_plain_window_never_binds_kernels():
    with kernel_shim():
        assert is_stand_in(importlib.import_module("mamba_ssm.ops.triton.layernorm_gated").rmsnorm_fn)


def test_report_labels_fallbacks_and_strict_accepts_them():
    plan = hybridload.resolve(str(hybridload.examples.path("hybrid_tiny")), trust_remote_code=True)
    meta = hybridload.load_meta(plan)
    namespace = meta.backbone.layers[0].mixer.norm.forward.__globals__
    assert is_stand_in(namespace["rmsnorm_fn"])
    with pytest.raises(StandInReachableError):
        _strict_check(hybridload.kernel_report(meta))
    namespace["rmsnorm_fn"] = _fallback()
    report = hybridload.kernel_report(meta)
    (entry,) = [e for e in report.entries if e.target == PATH]
    assert entry.status == report_mod.FALLBACK == "hybridload triton fallback"
    assert entry.file.endswith("kernels/layernorm_gated.py")
    _strict_check(report)  # a real kernel: accepted
