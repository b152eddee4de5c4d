"""Done-when: ``load_meta`` and ``dispatch`` of the same plan build the same tree (names, classes, shapes, dtypes)."""
from __future__ import annotations

import sys
from typing import Any, Callable

import pytest

import hybridload
from hybridload.errors import CheckpointError
from hybridload.serve.real import load_real

# fixture name -> (builder, resolve kwargs); each builds a local folder with weights
FIXTURES: dict[str, tuple[Callable[[Any], Any], dict[str, Any]]] = {
    "llama": (lambda b: b.llama(), {}),
    "llama-bf16-eager": (lambda b: b.llama(), {"dtype": "bfloat16", "attn_implementation": "eager"}),
    "hybrid-trusted": (lambda b: b.hybrid(), {"trust_remote_code": True}),
    "hybrid-untrusted-native": (lambda b: b.hybrid(), {}),
    "hybrid-moe-bf16": (lambda b: b.hybrid(pattern="M*-E"), {"trust_remote_code": True, "dtype": "bfloat16"}),
    "remote-only-toy": (lambda b: b.toy_remote_only(weights=True), {"trust_remote_code": True}),
}


def _assert_same_tree(meta: Any, served: Any, tree_of: Callable[[Any], dict]) -> None:
    diff = hybridload.compare(meta, served)
    assert diff.identical, diff.report()
    assert tree_of(meta) == tree_of(served)
    assert all(t.device.type == "meta" for t in [*meta.parameters(), *meta.buffers()])
    assert all(t.device.type != "meta" for t in [*served.parameters(), *served.buffers()])


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_meta_and_dispatch_build_the_same_tree(name, build, tree_of):
    builder, kwargs = FIXTURES[name]
    plan = hybridload.resolve(builder(build), **kwargs)
    meta = hybridload.load_meta(plan)
    served = hybridload.dispatch(plan, verify_tree=True)
    _assert_same_tree(meta, served, tree_of)
    assert meta.hybridload_plan is plan and served.hybridload_plan == plan
    header = hybridload.signature(meta).header["plan"]
    assert header["fingerprint"] == plan.fingerprint and header["model_class"] == plan.model_class
    assert header["attn_implementation"]["built"] == meta.config._attn_implementation


def test_load_real_is_the_same_tree_as_the_meta_build(build, tree_of):
    plan = hybridload.resolve(build.hybrid(), trust_remote_code=True, dtype="float16")
    _assert_same_tree(hybridload.load_meta(plan), load_real(plan), tree_of)


def test_hub_plan_meta_and_dispatch_agree_offline(build, hub_cache, offline, tree_of):
    sha = hub_cache.add_snapshot("org/hybrid", build.hybrid())
    plan = hybridload.resolve("org/hybrid", trust_remote_code=True)
    meta = hybridload.load_meta(plan)
    served = hybridload.dispatch(plan)
    _assert_same_tree(meta, served, tree_of)
    assert hybridload.signature(served).header["plan"]["commit"] == sha


def test_plan_kwargs_reach_both_builds(build, tree_of):
    plan = hybridload.resolve(build.llama(), num_hidden_layers=1)
    assert dict(plan.load_kwargs) == {"num_hidden_layers": 1}
    meta = hybridload.load_meta(plan)
    with pytest.raises(CheckpointError, match="checkpoint tensor\\(s\\) the model never reads: model.layers.1"):
        load_real(plan)  # the checkpoint holds a second layer the truncated model would silently ignore
    real = load_real(plan, allow_incomplete_checkpoint=True)  # explicit opt-out, recorded
    assert real.hybridload_checkpoint.allowed_incomplete and real.hybridload_checkpoint.unexpected
    assert len(meta.model.layers) == len(real.model.layers) == 1
    assert tree_of(meta) == tree_of(real)


def test_load_real_refuses_to_override_plan_decisions(build):
    plan = hybridload.resolve(build.llama())
    with pytest.raises(hybridload.PlanError, match="decided by the plan"):
        load_real(plan, dtype="float16")
    with pytest.raises(hybridload.PlanError, match="takes a LoadPlan"):
        load_real(str(plan.repo))


def test_meta_build_of_cuda_only_remote_code_serves_stand_ins(build, monkeypatch):
    # a kernel package that exists on no machine, so the stand-in is served wherever this test runs
    code = "from hl_absent_kernels.ops.triton.layernorm_gated import rmsnorm_fn\nimport hl_absent_kernels_cuda\n"
    monkeypatch.setenv("HYBRIDLOAD_KERNEL_PACKAGES", "hl_absent_kernels,hl_absent_kernels_cuda")
    plan = hybridload.resolve(build.hybrid(kernel_import=code, weights=None), trust_remote_code=True)
    meta = hybridload.load_meta(plan)
    assert type(meta.backbone.layers[0].mixer).__name__ == "MambaMixer"
    report = meta.hybridload_build_report
    assert "hl_absent_kernels.ops.triton.layernorm_gated.rmsnorm_fn" in report.stand_ins["hl_absent_kernels"]
    assert "hl_absent_kernels_cuda" in report.packages
    assert "hl_absent_kernels" not in sys.modules, "stand-ins leave sys.modules with the window"


@pytest.mark.gpu
def test_cuda_only_remote_code_meta_and_dispatch_agree_on_gpu(build, tree_of):
    pytest.importorskip("mamba_ssm")
    pytest.importorskip("causal_conv1d")
    plan = hybridload.resolve(build.hybrid(guarded=False), trust_remote_code=True, dtype="bfloat16",
                              attn_implementation="flash_attention_2")
    meta = hybridload.load_meta(plan)
    served = hybridload.dispatch(plan, device_map="cuda", verify_tree=True)
    _assert_same_tree(meta, served, tree_of)


@pytest.mark.gpu
def test_flash_attention_2_meta_and_dispatch_agree_on_gpu(build, tree_of):
    pytest.importorskip("flash_attn")
    plan = hybridload.resolve(build.llama(), dtype="bfloat16", attn_implementation="flash_attention_2")
    meta = hybridload.load_meta(plan)
    served = hybridload.dispatch(plan, device_map="cuda", verify_tree=True)
    assert served.config._attn_implementation == "flash_attention_2"
    _assert_same_tree(meta, served, tree_of)
