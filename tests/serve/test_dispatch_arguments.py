"""Public calls reject what they cannot honour: plan decisions that disagree with the plan, placement the
chosen path cannot honour, unknown keywords. One table says which argument is which."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hybridload
from hybridload.errors import PlanError, TrustError
from hybridload.plan import arguments


@pytest.fixture
def plan(tmp_path: Path):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
    return hybridload.resolve(folder)


@pytest.mark.parametrize("given, named", [
    ({"dtype": "float16"}, "dtype='float16'"),
    ({"revision": "v2"}, "revision='v2'"),
    ({"attn_implementation": "eager"}, "attn_implementation='eager'"),
    ({"auto_class": "AutoModel"}, "auto_class='AutoModel'"),
])
def test_a_decision_that_disagrees_with_the_plan_is_refused_with_how_to_re_resolve(plan, given, named):
    for call in (hybridload.dispatch, hybridload.load_real, hybridload.load_meta):
        with pytest.raises(PlanError) as info:
            call(plan, **given)
        assert named in str(info.value) and "re-resolve" in str(info.value)


def test_the_plans_own_values_are_accepted(plan):
    model = hybridload.dispatch(plan, dtype=plan.dtype, attn_implementation=plan.attn_implementation_built)
    assert model.hybridload_plan == plan


def test_trust_that_disagrees_with_the_plan_is_a_trust_error(plan):
    with pytest.raises(TrustError, match="conflicts"):
        hybridload.dispatch(plan, trust_remote_code=True)


def test_unknown_keywords_are_a_type_error(plan):
    with pytest.raises(TypeError, match="not_a_kwarg"):
        hybridload.dispatch(plan, not_a_kwarg=1)
    with pytest.raises(TypeError, match="not_a_kwarg"):
        hybridload.dispatch(plan, low_memory=True, not_a_kwarg=1)
    with pytest.raises(TypeError, match="not_a_kwarg"):
        hybridload.load_real(plan, not_a_kwarg=1)


def test_rejected_keywords_say_what_to_do(plan):
    with pytest.raises(PlanError, match="use dtype="):
        hybridload.dispatch(plan, torch_dtype=torch.float16)
    with pytest.raises(PlanError, match="HF_HUB_CACHE"):
        hybridload.dispatch(plan, cache_dir="/tmp/x")


def test_low_memory_refuses_placement_it_cannot_honour(plan, tmp_path):
    with pytest.raises(PlanError, match="offload_folder") as info:
        hybridload.dispatch(plan, low_memory=True, offload_folder=str(tmp_path / "off"))
    assert "low_memory=False" in str(info.value)
    with pytest.raises(PlanError, match="max_memory only shapes an automatic placement"):
        hybridload.dispatch(plan, low_memory=True, max_memory={"cpu": "1GiB"})  # no device_map: nothing to bound


def test_low_memory_honours_max_memory_with_an_automatic_placement(plan):
    model = hybridload.dispatch(plan, low_memory=True, device_map="auto", max_memory={"cpu": "1GiB"})
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    with pytest.raises(PlanError, match="does not fit"):  # a bound it cannot meet is a clear error, not ignored
        hybridload.dispatch(plan, low_memory=True, device_map="auto", max_memory={"cpu": 1024})


def test_the_default_path_passes_placement_to_from_pretrained(plan, tmp_path):
    model = hybridload.dispatch(plan, device_map="cpu", max_memory={"cpu": "1GiB"})
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_one_table_is_read_by_every_entry_point():
    from hybridload.integrations import nnsight_plan

    assert set(arguments.PLACEMENT | arguments.PASS_THROUGH | arguments.SERVING) <= nnsight_plan.PLACEMENT
    assert set(nnsight_plan.PLAN_OWNED) - {"torch_dtype"} <= set(arguments.PLAN)
    with pytest.raises(PlanError, match="not a plan decision"):
        hybridload.resolve("org/model", device_map="auto")
    with pytest.raises(PlanError, match="serving option"):
        hybridload.resolve("org/model", strict=True)


def test_dispatch_reads_a_lock_and_verifies_against_its_recorded_tree(plan, tmp_path, monkeypatch):
    lock = tmp_path / "llama.lock.json"
    locked = hybridload.resolve(plan.repo, lock=lock)  # writes plan + expected tree
    assert locked == plan
    import hybridload.load.meta as meta_module

    calls = []
    real_load_meta = meta_module.load_meta
    monkeypatch.setattr(meta_module, "load_meta", lambda *a, **k: calls.append(a) or real_load_meta(*a, **k))
    model = hybridload.dispatch(plan.repo, lock=lock, verify_tree=True)
    assert model.hybridload_plan == plan and calls == []  # the lock's tree, no second meta build
    with pytest.raises(PlanError, match="lock="):
        hybridload.dispatch(plan, lock=lock)
