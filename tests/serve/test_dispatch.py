"""hybridload.dispatch: tainted-module eviction, strict mode, verify_tree, kernel_report, fallback policy."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

import hybridload
from hybridload.errors import HybridloadError, StandInReachableError, TreeMismatchError
from hybridload.serve import kernel_report as report_mod
from hybridload.serve.dispatch import dispatch
from hybridload.serve.fallback import policy
from hybridload.shim import probe
from hybridload.shim.standins import is_stand_in

FAKEKERNELS = str(Path(__file__).resolve().parents[1] / "fakekernels")
KERNEL_PACKAGES = ("mamba_ssm", "causal_conv1d", "causal_conv1d_cuda")


def _drop_kernel_modules() -> None:
    """Forget the kernel packages: their modules, hybridload's probe verdicts and transformers' cached
    availability answers (on a CUDA machine ``is_causal_conv1d_available()`` caches True while the fake
    packages are on sys.path; a later test in the process would then take the fast-path imports)."""
    from transformers.utils import import_utils

    from hybridload.shim.guards import lru_functions as _lru_functions  # the shim's own notion of "availability cache"

    for name in list(sys.modules):
        if name.partition(".")[0] in KERNEL_PACKAGES:
            sys.modules.pop(name, None)
    probe.reset_verdicts()
    for cached in _lru_functions(import_utils):
        cached.cache_clear()


@pytest.fixture
def example_plan():
    return hybridload.resolve(str(hybridload.examples.path("hybrid_tiny")), trust_remote_code=True)


@pytest.fixture
def real_kernels(monkeypatch):
    """A 'GPU server' where mamba_ssm / causal_conv1d really import (pure-torch packages, real module paths).

    On teardown the remote modules executed meanwhile (bound to the fake kernels) and their Auto-class
    registrations are evicted, so later tests see a process without the kernel packages.
    """
    from hybridload.shim.eviction import Snapshot

    before = Snapshot()
    _drop_kernel_modules()
    monkeypatch.syspath_prepend(FAKEKERNELS)
    yield
    before.evict_changed()
    _drop_kernel_modules()


def test_meta_build_then_real_load_binds_real_kernels(example_plan, real_kernels, monkeypatch):
    # the client half: a meta build while mamba_ssm is absent (the fake packages are hidden)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != FAKEKERNELS])
    meta = hybridload.load_meta(example_plan)
    meta_report = hybridload.kernel_report(meta)
    assert meta_report.stand_ins and all(e.package == "mamba_ssm" for e in meta_report.stand_ins)
    # the server half, same process: the kernel packages are now importable
    monkeypatch.syspath_prepend(FAKEKERNELS)
    probe.reset_verdicts()
    model = dispatch(example_plan, strict=True)
    report = model.hybridload_kernel_report
    real = {e.target: e for e in report.entries if e.status == report_mod.REAL}
    assert "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn" in real
    assert real["mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn"].version == "2.2.4"
    assert not report.stand_ins
    assert all(p.device.type == "cpu" for p in model.parameters())
    out = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(out).all()


def test_evict_tainted_removes_modules_and_auto_registrations():
    from transformers import AutoModelForCausalLM, PretrainedConfig
    from transformers.models.auto import modeling_auto

    from hybridload.shim.eviction import evict_tainted
    from hybridload.shim.standins import make_symbol

    name = "transformers_modules.hl_test_tainted.modeling_x"
    module = types.ModuleType(name)
    module.rmsnorm_fn = make_symbol("mamba_ssm.rmsnorm_fn", "mamba_ssm", "not installed")

    class TaintedConfig(PretrainedConfig):
        model_type = "hl_tainted"

    class TaintedModel(torch.nn.Module):
        pass

    TaintedConfig.__module__ = TaintedModel.__module__ = name
    sys.modules[name] = module
    AutoModelForCausalLM.register(TaintedConfig, TaintedModel, exist_ok=True)
    try:
        assert name in evict_tainted()
        assert name not in sys.modules
        assert TaintedConfig not in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING._extra_content
    finally:
        sys.modules.pop(name, None)
        modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING._extra_content.pop(TaintedConfig, None)


def test_strict_refuses_a_model_that_reaches_stand_ins(example_plan, monkeypatch):
    """A server whose code got bound to stand-ins (here: a load done inside a shim window) is refused."""
    import hybridload.serve.dispatch as dispatch_module

    def load_with_stand_ins(plan, **placement):
        return hybridload.load_meta(plan)

    monkeypatch.setattr(dispatch_module, "load_real", load_with_stand_ins)
    with pytest.raises(StandInReachableError) as info:
        dispatch(example_plan, strict=True)
    message = str(info.value)
    assert "rmsnorm_fn" in message and "mamba_ssm" in message and "strict=False" in message
    model = dispatch(example_plan, strict=False)
    # the one symbol imported unconditionally; the fast path's availability checks stay truthful (False)
    assert [e.target for e in model.hybridload_kernel_report.stand_ins] == [
        "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn"
    ]


def test_strict_defaults_from_environment(example_plan, monkeypatch):
    import hybridload.serve.dispatch as dispatch_module

    monkeypatch.setattr(dispatch_module, "load_real", lambda plan, **kw: hybridload.load_meta(plan))
    monkeypatch.setenv("HYBRIDLOAD_STRICT", "1")
    with pytest.raises(StandInReachableError):
        dispatch(example_plan)
    monkeypatch.setenv("HYBRIDLOAD_STRICT", "0")
    assert dispatch(example_plan).hybridload_kernel_report.stand_ins


def test_verify_tree_passes_for_the_same_plan(example_plan, real_kernels):
    model = dispatch(example_plan, verify_tree=True)
    assert hybridload.compare(hybridload.signature(model), hybridload.load_meta(example_plan)).identical


def test_verify_tree_fails_with_the_first_differing_path(example_plan, real_kernels, tmp_path, monkeypatch):
    import json
    import shutil

    import hybridload.load.meta as load

    other = tmp_path / "other"
    shutil.copytree(hybridload.examples.path("hybrid_tiny"), other)
    config = json.loads((other / "config.json").read_text())
    config["num_hidden_layers"] += 1
    config["hybrid_override_pattern"] += "-"
    (other / "config.json").write_text(json.dumps(config))
    other_plan = hybridload.resolve(str(other), trust_remote_code=True)
    real_meta = load.load_meta
    monkeypatch.setattr(load, "load_meta", lambda plan: real_meta(other_plan))
    with pytest.raises(TreeMismatchError) as info:
        dispatch(example_plan, verify_tree=True)
    assert info.value.diff is not None and not info.value.diff.identical
    assert f"layers.{config['num_hidden_layers'] - 1}" in str(info.value)


def test_low_memory_dispatch_is_bit_identical(example_plan, real_kernels):
    streamed = dispatch(example_plan, low_memory=True, device_map="cpu")
    loaded = dispatch(example_plan)
    a, b = streamed.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].device.type == "cpu"
        assert torch.equal(a[key], b[key]), key


def test_kernel_fallback_policy_is_validated(monkeypatch):
    assert policy(None) == "none"
    monkeypatch.setenv("HYBRIDLOAD_KERNEL_FALLBACK", "triton")
    assert policy(None) == "triton"
    assert policy("none") == "none"
    with pytest.raises(HybridloadError, match="kernel_fallback must be one of"):
        policy("cuda")


def test_triton_fallback_refused_without_cuda(example_plan, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine's answer, on any machine
    with pytest.raises(HybridloadError, match="needs CUDA"):
        dispatch(example_plan, kernel_fallback="triton")


def test_kernel_report_labels_and_format(example_plan):
    meta = hybridload.load_meta(example_plan)
    report = hybridload.kernel_report(meta)
    entry = report.stand_ins[0]
    assert entry.symbol.startswith("remote:modeling_nemotron_h.")
    assert "not installed" in entry.note
    assert "stand-in" in report.format()
    assert report.to_dict()["entries"][0]["status"] == report_mod.STAND_IN
    assert is_stand_in(meta.backbone.layers[0].mixer.norm.forward.__globals__["rmsnorm_fn"])
