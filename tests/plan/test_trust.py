"""The trust decision: explicit > policy > transformers default; one tree everywhere, never mixed."""
from __future__ import annotations

import pytest

import hybridload
from hybridload.errors import TrustError
from hybridload.serve.real import load_real
from hybridload.plan.trust import ENV, decide_trust


def test_explicit_argument_wins_over_policy(monkeypatch):
    monkeypatch.setenv(ENV, "0")
    decision = decide_trust(True, ["org/name"])
    assert decision.trusted and "explicit" in decision.reason
    monkeypatch.setenv(ENV, "1")
    assert not decide_trust(False, ["org/name"]).trusted


@pytest.mark.parametrize(
    ("policy", "repos", "trusted"),
    [
        ("1", ["org/name"], True),
        ("true", ["org/name"], True),
        ("0", ["org/name"], False),
        ("nvidia/*", ["nvidia/Nemotron-H-8B"], True),
        ("nvidia/*", ["evil/Nemotron-H-8B"], False),
        ("meta-llama/*, nvidia/*", ["nvidia/x"], True),
        ("nvidia/*", ["nvidia/x", "other/code"], False),  # every code repo must be trusted
    ],
)
def test_policy_values(monkeypatch, policy, repos, trusted):
    monkeypatch.setenv(ENV, policy)
    decision = decide_trust(None, repos)
    assert decision.trusted is trusted
    assert ENV in decision.reason


def test_default_never_trusts():
    decision = decide_trust(None, ["org/name"])
    assert decision.trusted is False and "default" in decision.reason


def test_non_bool_trust_argument_is_rejected():
    with pytest.raises(hybridload.PlanError):
        decide_trust("yes", ["org/name"])  # type: ignore[arg-type]


def test_trusted_repo_with_native_and_remote_builds_the_remote_tree_everywhere(build, tree_of):
    folder = build.hybrid()
    plan = hybridload.resolve(folder, trust_remote_code=True)
    assert (plan.model_class_source, plan.config_class_source) == ("remote", "remote")
    assert plan.model_class == "modeling_nemotron_h.NemotronHForCausalLM"
    assert [c.path for c in plan.code_files] == ["configuration_nemotron_h.py", "modeling_nemotron_h.py"]

    config = hybridload.load_config(plan)
    assert type(config).__module__.startswith("transformers_modules")
    meta = hybridload.load_meta(plan)
    real = load_real(plan)
    for model in (meta, real):
        assert type(model).__module__.startswith("transformers_modules")
        assert [name for name, _ in model.named_children()] == ["backbone", "lm_head"]
    assert tree_of(meta) == tree_of(real)


def test_untrusted_repo_with_native_and_remote_builds_the_native_tree_everywhere_and_runs_no_code(build, tree_of):
    folder = build.hybrid()
    plan = hybridload.resolve(folder)
    assert plan.trust_remote_code is False and "default" in plan.trust_reason
    assert (plan.model_class_source, plan.config_class_source) == ("native", "native")
    assert plan.code_files == () and plan.code_repo is None

    config = hybridload.load_config(plan)
    assert type(config).__module__.startswith("transformers.models.nemotron_h")
    meta = hybridload.load_meta(plan)
    real = load_real(plan)  # a checkpoint of the remote tree loads into the native one (conversion mapping)
    for model in (meta, real):
        assert type(model).__module__ == "transformers.models.nemotron_h.modeling_nemotron_h"
        assert [name for name, _ in model.named_children()] == ["model", "lm_head"]
    assert tree_of(meta) == tree_of(real)
    assert not build.remote_code_ran(), "an untrusted plan must not execute the repo's code"


def test_policy_glob_trusts_a_local_folder(build, monkeypatch):
    folder = build.hybrid()
    monkeypatch.setenv(ENV, str(folder.parent) + "/*")
    plan = hybridload.resolve(folder)
    assert plan.trust_remote_code and ENV in plan.trust_reason
    assert plan.model_class_source == "remote"


def test_policy_glob_trusts_a_hub_repo(build, hub_cache, offline, monkeypatch):
    hub_cache.add_snapshot("acme/hybrid", build.hybrid())
    monkeypatch.setenv(ENV, "acme/*")
    assert hybridload.resolve("acme/hybrid").model_class_source == "remote"
    monkeypatch.setenv(ENV, "other/*")
    assert hybridload.resolve("acme/hybrid").model_class_source == "native"


def test_untrusted_remote_only_repo_fails_clearly_without_running_code(build):
    folder = build.toy_remote_only()
    with pytest.raises(TrustError) as info:
        hybridload.resolve(folder)
    message = str(info.value)
    assert "needs remote code" in message and "configuration_toy.ToyConfig" in message
    assert "trust_remote_code=True" in message and f"{ENV}=" in message
    assert "never enables remote code by itself" in message
    for load in (hybridload.load_config, hybridload.load_meta, hybridload.load_tokenizer):
        with pytest.raises(TrustError):
            load(folder)
    assert not build.remote_code_ran(), "no remote code may run before trust is granted"


def test_policy_zero_refuses_remote_only_repo(build, monkeypatch):
    folder = build.toy_remote_only()
    monkeypatch.setenv(ENV, "0")
    with pytest.raises(TrustError, match=f"policy {ENV}=0"):
        hybridload.resolve(folder)
    assert not build.remote_code_ran()


def test_trusted_remote_only_repo_loads(build):
    folder = build.toy_remote_only()
    plan = hybridload.resolve(folder, trust_remote_code=True)
    meta = hybridload.load_meta(plan)
    assert type(meta).__name__ == "ToyForCausalLM"
    assert all(p.device.type == "meta" for p in meta.parameters())


def test_routing_propagates_config_trust_to_from_config(build, routing):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = build.hybrid(weights=None)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)  # no trust argument: the config's decision applies
    assert type(model).__module__.startswith("transformers_modules")
    native = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(native)
    assert type(model).__module__ == "transformers.models.nemotron_h.modeling_nemotron_h"


def test_routing_refuses_to_mix_a_trusted_config_with_an_untrusted_build(build, routing):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = build.hybrid(weights=None)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    with torch.device("meta"), pytest.raises(TrustError, match="same value"):
        AutoModelForCausalLM.from_config(config, trust_remote_code=False)
