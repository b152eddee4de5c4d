"""The calls an NDIF server makes into nnsight's wrappers keep working with hybridload installed.

NDIF (the ``ndif`` package) places a one-GPU replica with ``Remotable.from_model_key(key, dispatch=True,
dtype=..., device=<index>, trust_remote_code=<the deployment's trust>)`` and sizes a deployment with
``Remotable.describe_checkpoint(key, dtype, trust_remote_code=...)`` and ``Remotable.max_tp_size(key,
trust_remote_code=...)``. Plain nnsight accepts the first call; hybridload's real load must too. nnsight
0.8.1 rejects the keyword in the other two; with hybridload installed it is the deployment's trust decision.
"""
from __future__ import annotations

import json

import pytest
import torch
from nnsight_fixtures import plain_nnsight

import hybridload
from hybridload.errors import TrustError

PROMPT = "hello world the model runs here"


def _key(folder, **extra) -> str:
    return "nnsight.modeling.transformers.TransformersModel:" + json.dumps(
        {"repo_id": str(folder), "revision": None, "task": "text-generation", **extra}
    )


def _logits(lm) -> torch.Tensor:
    with lm.trace(PROMPT):
        logits = lm.lm_head.output.save()
    return logits


@pytest.mark.parametrize("device", ["cpu", 0, -1, torch.device("cpu")])
def test_a_device_placement_loads_like_plain_nnsight(gpt2, monkeypatch, device):
    """NDIF's one-GPU placement passes ``device=``; on a machine without CUDA the pipeline reads an index as CPU."""
    from nnsight.modeling import huggingface
    from nnsight.modeling.mixins.remotable import Remotable

    with plain_nnsight():
        monkeypatch.setitem(huggingface._ID_CACHE, str(gpt2), str(gpt2))
        plain = Remotable.from_model_key(_key(gpt2), dispatch=True, dtype="float32", device=device, tokenizer=str(gpt2))
        expected = _logits(plain)

    lm = Remotable.from_model_key(_key(gpt2), dispatch=True, dtype="float32", device=device)
    module = lm._module
    assert module.hybridload_plan is not None  # loaded through the plan, not around it
    assert {p.device.type for p in module.parameters()} == {"cpu"}
    assert torch.equal(_logits(lm), expected)


def test_device_is_read_as_the_pipeline_reads_it():
    from hybridload.integrations.nnsight import _device_as_device_map

    cuda = torch.cuda.is_available()
    assert _device_as_device_map({"device": 1}) == {"device_map": {"": "cuda:1" if cuda else "cpu"}}
    assert _device_as_device_map({"device": -1, "max_memory": None}) == {"device_map": {"": "cpu"}, "max_memory": None}
    assert _device_as_device_map({"device": "cuda:2"}) == {"device_map": {"": "cuda:2"}}
    assert _device_as_device_map({"device": torch.device("cuda", 3)}) == {"device_map": {"": "cuda:3"}}
    # an explicit device_map wins; no device at all changes nothing
    assert _device_as_device_map({"device": 0, "device_map": "auto"}) == {"device_map": "auto"}
    assert _device_as_device_map({"device_map": {"": "cpu"}}) == {"device_map": {"": "cpu"}}


def test_sizing_takes_the_deployments_trust_decision(example, offline, no_network):
    """``describe_checkpoint`` / ``max_tp_size`` with ``trust_remote_code=``: the plan of the key honours it."""
    from nnsight.modeling.mixins.remotable import Remotable

    key = _key(example)  # an untrusted client's key: no trust in it, the deployment decides
    trusted = Remotable.describe_checkpoint(key, "float32", trust_remote_code=True)
    assert type(trusted.config).__module__.startswith("transformers_modules")  # the repo's code ran: trusted
    untrusted = Remotable.describe_checkpoint(_key(example, trust_remote_code=True), "float32", trust_remote_code=False)
    assert type(untrusted.config).__module__.startswith("transformers.models.nemotron_h")  # native class: not trusted
    assert trusted.size_bytes > 0 and untrusted.size_bytes > 0
    assert Remotable.max_tp_size(key, trust_remote_code=True) is None  # answered, not a TypeError
    # without the keyword, nnsight's own reading of the key (trust from the key) is unchanged
    assert type(Remotable.describe_checkpoint(key, "float32").config).__module__.startswith("transformers.models")


def test_an_untrusted_deployment_of_a_remote_only_repo_cannot_be_sized(tiny_hybrid, monkeypatch):
    """An explicit ``trust_remote_code=False`` is the deployment's decision: the trust policy cannot overrule it."""
    from nnsight.modeling.mixins.remotable import Remotable

    monkeypatch.setenv("HYBRIDLOAD_TRUST_REMOTE_CODE", "1")
    key = _key(tiny_hybrid, trust_remote_code=True)
    with pytest.raises(TrustError, match="trust_remote_code=True"):
        Remotable.describe_checkpoint(key, "float32", trust_remote_code=False)
    assert Remotable.describe_checkpoint(key, "float32", trust_remote_code=True).size_bytes > 0


def test_uninstall_gives_nnsight_its_own_sizing_calls_back():
    from nnsight.modeling.mixins.remotable import Remotable

    patched = Remotable.__dict__["describe_checkpoint"].__func__
    assert patched.__hybridload_patch__
    hybridload.uninstall()
    try:
        assert Remotable.__dict__["describe_checkpoint"].__func__ is patched.__wrapped__
        with pytest.raises(TypeError, match="trust_remote_code"):
            Remotable.describe_checkpoint("x:{}", "float32", trust_remote_code=True)
    finally:
        hybridload.install()
