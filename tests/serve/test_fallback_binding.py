"""Issue 8 part 2 on CPU: the fallback window's resolver binds hybridload kernels in stand-in modules,
kernel_report labels them, and strict mode accepts them while still refusing stand-ins."""
from __future__ import annotations

import importlib

import pytest

import hybridload
from hybridload.errors import StandInReachableError
from hybridload.serve import report as report_mod
from hybridload.serve.dispatch import _strict_check
from hybridload.serve.fallback import _bound
from hybridload.shim.standins import add_resolver, is_stand_in, remove_resolver

PATH = "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn"


def test_resolver_binds_the_kernel_and_leaves_other_symbols_stand_ins():
    kernel = _bound(PATH, hybridload.kernels.rmsnorm_fn)
    resolver = lambda path: kernel if path == PATH else None  # noqa: E731
    add_resolver(resolver)
    try:
        with hybridload.kernel_shim():
            module = importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")
            assert module.rmsnorm_fn is kernel
            assert is_stand_in(module.RMSNorm)
    finally:
        remove_resolver(resolver)
    assert kernel.__hybridload_fallback_for__ == PATH
    assert kernel.__wrapped__ is hybridload.kernels.rmsnorm_fn


def test_report_labels_fallbacks_and_strict_accepts_them():
    plan = hybridload.resolve(str(hybridload.examples.path("hybrid_tiny")), trust_remote_code=True)
    meta = hybridload.load_meta(plan)
    namespace = meta.backbone.layers[0].mixer.norm.forward.__globals__
    assert is_stand_in(namespace["rmsnorm_fn"])
    with pytest.raises(StandInReachableError):
        _strict_check(hybridload.kernel_report(meta))
    namespace["rmsnorm_fn"] = _bound(PATH, hybridload.kernels.rmsnorm_fn)
    report = hybridload.kernel_report(meta)
    (entry,) = [e for e in report.entries if e.target == PATH]
    assert entry.status == report_mod.FALLBACK == "hybridload triton fallback"
    assert entry.file.endswith("kernels/layernorm_gated.py")
    _strict_check(report)  # a real kernel: accepted
