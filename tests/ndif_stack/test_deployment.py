"""The served side of hybridload on NDIF that needs no NDIF: deployment settings, the replica report, and the
deployment's trust decision in the handshake (these run on every Python the suite runs on)."""
from __future__ import annotations

import shutil

import pytest

import hybridload
from hybridload.errors import DeploymentSettingsError, DeploymentTrustError, HybridloadError
from hybridload.integrations.ndif_deployment import (
    DeploymentSettings,
    format_replica_report,
    forwarded_env,
    replica_report,
)
from hybridload.integrations.nnsight_handshake import DEPLOYMENT_TRUST_ATTR, check_request, client_entry


def test_settings_default_to_a_verified_tree_and_leave_the_rest_to_dispatch():
    settings = DeploymentSettings.from_env({})
    assert settings == DeploymentSettings(strict=None, verify_tree=True, low_memory=False, kernel_fallback=None)
    assert settings.dispatch_kwargs() == {"verify_tree": True, "low_memory": False}


def test_settings_are_read_from_the_environment():
    env = {"HYBRIDLOAD_NDIF_STRICT": "yes", "HYBRIDLOAD_NDIF_VERIFY_TREE": "0", "HYBRIDLOAD_NDIF_LOW_MEMORY": "On",
           "HYBRIDLOAD_NDIF_KERNEL_FALLBACK": "Triton"}
    assert DeploymentSettings.from_env(env).dispatch_kwargs() == {
        "strict": True, "verify_tree": False, "low_memory": True, "kernel_fallback": "triton"}


@pytest.mark.parametrize("name, value, expected", [
    ("HYBRIDLOAD_NDIF_STRICT", "maybe", "is not a boolean"),
    ("HYBRIDLOAD_NDIF_VERIFY_TREE", "2", "is not a boolean"),
    ("HYBRIDLOAD_NDIF_KERNEL_FALLBACK", "cuda", "none, triton"),
])
def test_an_unreadable_setting_is_a_typed_error_naming_the_variable(name, value, expected):
    with pytest.raises(DeploymentSettingsError, match=expected) as info:
        DeploymentSettings.from_env({name: value})
    assert name in str(info.value) and isinstance(info.value, (HybridloadError, ValueError))


def test_only_hybridloads_variables_are_forwarded_to_the_actors():
    env = {"HYBRIDLOAD_NDIF_STRICT": "1", "HYBRIDLOAD_TRUST_REMOTE_CODE": "org/*", "HF_TOKEN": "secret", "PATH": "/bin"}
    assert forwarded_env(env) == {"HYBRIDLOAD_NDIF_STRICT": "1", "HYBRIDLOAD_TRUST_REMOTE_CODE": "org/*"}


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    import hybridload.examples

    target = tmp_path_factory.mktemp("example") / "hybrid_tiny"
    shutil.copytree(hybridload.examples.path("hybrid_tiny"), target,
                    ignore=shutil.ignore_patterns("__pycache__", "make_example.py", "reference_signature.json"))
    return target


def test_the_replica_report_names_plan_digest_and_kernels(example):
    plan = hybridload.resolve(str(example), trust_remote_code=True)
    meta = hybridload.load_meta(plan)
    report = replica_report("key", meta, DeploymentSettings(strict=True), deployment_trust=True)
    assert report["digest"] == hybridload.signature(meta).digest and report["plan"] == plan.to_dict()
    assert report["settings"]["strict"] is True and report["deployment_trust_remote_code"] is True
    text = format_replica_report(report)
    assert f"tree digest: {report['digest']}" in text and plan.describe() in text
    assert "kernel report:" in text and "rmsnorm_fn" in text  # the meta build bound a stand-in: it is listed


def _served(example, trust: bool):
    plan = hybridload.resolve(str(example), trust_remote_code=trust)
    module = hybridload.load_meta(plan)
    setattr(module, DEPLOYMENT_TRUST_ATTR, trust)
    return module


def test_a_plan_that_runs_code_the_deployment_does_not_trust_is_refused(example):
    client = client_entry(hybridload.load_meta(hybridload.resolve(str(example), trust_remote_code=True)))
    with pytest.raises(DeploymentTrustError, match="this deployment does not run remote code"):
        check_request(_served(example, trust=False), client)


def test_a_plan_that_does_not_trust_the_code_the_deployment_runs_is_refused(example):
    client = client_entry(hybridload.load_meta(hybridload.resolve(str(example), trust_remote_code=False)))
    with pytest.raises(DeploymentTrustError, match="this deployment runs the remote code of"):
        check_request(_served(example, trust=True), client)


def test_trust_that_changes_no_code_is_not_a_disagreement(tmp_path):
    """A repository without remote code builds the same classes either way: only the tree is compared."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "nnsight"))
    from nnsight_fixtures import write_gpt2

    folder = write_gpt2(tmp_path / "gpt2")
    client = client_entry(hybridload.load_meta(hybridload.resolve(str(folder), trust_remote_code=True)))
    served = hybridload.load_meta(hybridload.resolve(str(folder), trust_remote_code=False))
    setattr(served, DEPLOYMENT_TRUST_ATTR, False)
    check_request(served, client)  # same tree, no remote code: runs
    client["digest"] = "0" * 64
    with pytest.raises(hybridload.TreeMismatchError):
        check_request(served, client)  # and a different tree is still refused by the tree check


def test_a_server_that_states_no_deployment_trust_keeps_the_plain_handshake(example):
    client = client_entry(hybridload.load_meta(hybridload.resolve(str(example), trust_remote_code=False)))
    served = hybridload.load_meta(hybridload.resolve(str(example), trust_remote_code=True))
    with pytest.raises(hybridload.TreeMismatchError):  # not a trust error: the server said nothing about trust
        check_request(served, client)
