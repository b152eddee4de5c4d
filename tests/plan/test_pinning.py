"""Config, code, weights and tokenizer come from the plan's commit, even after ``main`` moved."""
from __future__ import annotations

import json

import pytest
import torch

import hybridload
from hybridload.serve.real import load_real


@pytest.fixture
def moved_repo(build, hub_cache, offline):
    """org/hybrid with tag v1 -> commit 1 (3 layers, code v1) and main -> commit 2 (4 layers, code v2)."""
    v1 = build.hybrid("v1", version=1, pattern="M*-")
    build.tokenizer(v1)
    v2 = build.hybrid("v2", version=2, pattern="M*-E")
    build.tokenizer(v2)
    vocab = json.loads((v2 / "tokenizer.json").read_text())
    vocab["model"]["vocab"]["only_in_v2"] = 4
    (v2 / "tokenizer.json").write_text(json.dumps(vocab))
    sha1 = hub_cache.add_snapshot("org/hybrid", v1, refs=("v1",))
    sha2 = hub_cache.add_snapshot("org/hybrid", v2, refs=("main",))
    return hub_cache, sha1, sha2


def _is_v1(model) -> bool:
    return len(model.backbone.layers) == 3 and not hasattr(model.backbone, "v2_only")


def test_plan_loads_config_code_and_weights_from_its_commit(moved_repo):
    _, sha1, sha2 = moved_repo
    plan = hybridload.resolve("org/hybrid", revision="v1", trust_remote_code=True)
    assert plan.commit == sha1 and plan.code_commit == sha1
    assert {c.repo for c in plan.code_files} == {"org/hybrid"}

    config = hybridload.load_config(plan)
    assert config.hybrid_override_pattern == "M*-"
    assert sha1 in type(config).__module__
    meta = hybridload.load_meta(plan)
    assert _is_v1(meta) and sha1 in type(meta).__module__
    real = load_real(plan)
    assert _is_v1(real) and sha1 in type(real).__module__
    assert sha2 not in type(real).__module__


def test_plan_keeps_its_commit_when_main_moves_after_resolution(moved_repo):
    cache, sha1, sha2 = moved_repo
    cache.set_ref("org/hybrid", "main", sha1)
    plan = hybridload.resolve("org/hybrid", trust_remote_code=True)
    assert plan.commit == sha1
    cache.set_ref("org/hybrid", "main", sha2)  # someone pushes to main
    meta = hybridload.load_meta(plan)
    assert _is_v1(meta)
    assert hybridload.load_config(plan).hybrid_override_pattern == "M*-"


def test_tokenizer_comes_from_the_plan_commit(moved_repo):
    plan = hybridload.resolve("org/hybrid", revision="v1", trust_remote_code=True)
    tokenizer = hybridload.load_tokenizer(plan)
    assert "hello" in tokenizer.get_vocab() and "only_in_v2" not in tokenizer.get_vocab()
    latest = hybridload.load_tokenizer(hybridload.resolve("org/hybrid", trust_remote_code=True))
    assert "only_in_v2" in latest.get_vocab()


def test_functions_accept_a_repo_id_and_resolve_it(moved_repo):
    meta = hybridload.load_meta("org/hybrid", revision="v1", trust_remote_code=True)
    assert _is_v1(meta)
    assert meta.hybridload_plan.revision == "v1"


def test_from_config_of_a_pinned_config_loads_code_from_the_same_commit(moved_repo, routing):
    from transformers import AutoConfig, AutoModelForCausalLM

    _, sha1, _ = moved_repo
    config = AutoConfig.from_pretrained("org/hybrid", revision="v1", trust_remote_code=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sha1 in type(model).__module__
    assert _is_v1(model)
    from transformers.models.auto import auto_factory

    for name in ("get_class_from_dynamic_module", "resolve_trust_remote_code"):  # pins end with the window
        assert not getattr(getattr(auto_factory, name), "__hybridload_scoped__", False)


def test_without_routing_transformers_mixes_commits(moved_repo, routing):
    """The failure routing prevents: plain transformers builds main's code around the v1 config."""
    from transformers import AutoConfig, AutoModelForCausalLM

    _, sha1, sha2 = moved_repo
    routing.uninstall()
    config = AutoConfig.from_pretrained("org/hybrid", revision="v1", trust_remote_code=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    assert sha2 in type(model).__module__ and hasattr(model.backbone, "v2_only")


def test_routing_patch_is_reversible(routing):
    from transformers import AutoConfig

    from hybridload.hooks.patch import is_patched

    assert is_patched(AutoConfig.__dict__["from_pretrained"])
    routing.uninstall()
    assert not is_patched(AutoConfig.__dict__["from_pretrained"])


def test_nnsight_meta_build_is_routed_to_the_config_commit(moved_repo, routing):
    """nnsight's lazy meta build (AutoConfig + from_config on meta) gets v1 code and the server's attention."""
    import nnsight
    from transformers import AutoTokenizer

    _, sha1, _ = moved_repo
    tokenizer = AutoTokenizer.from_pretrained("org/hybrid", revision="v1")
    lm = nnsight.TransformersModel("org/hybrid", task="text-generation", revision="v1", trust_remote_code=True,
                                   tokenizer=tokenizer, attn_implementation="flash_attention_2")
    module = lm._module
    assert sha1 in type(module).__module__ and _is_v1(module)
    assert type(module.backbone.layers[1].mixer).__name__ == "FlashAttention2"
    assert all(p.device.type == "meta" for p in module.parameters())


def test_code_from_another_repo_is_pinned_to_its_own_commit(build, hub_cache, offline, tree_of):
    code_v1 = build.hybrid("code_v1", version=1, weights=None)
    sha1 = hub_cache.add_snapshot("org/shared-code", code_v1, refs=("stable",))
    sha2 = hub_cache.add_snapshot("org/shared-code", build.hybrid("code_v2", version=2, weights=None))
    model = build.hybrid("weights_only")
    for name in ("modeling_nemotron_h.py", "configuration_nemotron_h.py"):
        (model / name).unlink()
    build.edit_config(model, auto_map={k: f"org/shared-code--{v}" for k, v in
                                       {"AutoConfig": "configuration_nemotron_h.NemotronHConfig",
                                        "AutoModelForCausalLM": "modeling_nemotron_h.NemotronHForCausalLM"}.items()})
    plan = hybridload.resolve(model, trust_remote_code=True, code_revision="stable")
    assert (plan.code_repo, plan.code_commit) == ("org/shared-code", sha1)
    assert {c.repo for c in plan.code_files} == {"org/shared-code"}
    meta = hybridload.load_meta(plan)
    assert sha1 in type(meta).__module__ and _is_v1(meta)
    real = load_real(plan)
    assert sha1 in type(real).__module__ and tree_of(meta) == tree_of(real)
    assert hybridload.resolve(model, trust_remote_code=True).code_commit == sha2  # default branch of the code repo


def test_code_revision_cannot_split_config_and_code_of_one_repo(moved_repo):
    with pytest.raises(hybridload.PlanError, match="one commit"):
        hybridload.resolve("org/hybrid", revision="v1", code_revision="main", trust_remote_code=True)
