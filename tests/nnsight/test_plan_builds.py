"""nnsight's meta build, real load, tokenizer and placement reads go through one load plan."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from nnsight_fixtures import write_tiny_hybrid

import hybridload
from hybridload.errors import TrustError


def _kernel_modules() -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in ("mamba_ssm", "causal_conv1d"))


def test_meta_build_of_the_example_runs_inside_the_shim(example):
    from nnsight import TransformersModel

    assert _kernel_modules() == []
    lm = TransformersModel(str(example), trust_remote_code=True)
    module = lm._module
    plan = module.hybridload_plan
    assert lm.task == "text-generation"  # inferred from config.json, no Hub
    assert plan.model_class_source == "remote" and type(module).__module__.startswith("transformers_modules")
    assert {p.device.type for p in [*module.parameters(), *module.buffers()]} == {"meta"}
    assert module.hybridload_build_report.stand_ins == {"mamba_ssm": ["mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn"]}
    assert _kernel_modules() == []  # the stand-ins left with the window
    # the same plan, built by the core, gives the same tree
    assert hybridload.compare(hybridload.load_meta(plan), lm).identical
    # the tokenizer is the plan's (nnsight could not have guessed it for a local folder)
    assert lm.tokenizer is not None and lm.tokenizer.name_or_path == str(example)
    with lm.scan("the model loads the weights"):
        shape = lm.backbone.layers[0].mixer.output.shape.save()
    assert tuple(shape)[-1] == 64


def test_untrusted_builds_the_native_class_everywhere(example):
    from nnsight import TransformersModel

    lm = TransformersModel(str(example))
    plan = lm._module.hybridload_plan
    assert not plan.trust_remote_code and plan.model_class_source == "native"
    assert type(lm._module).__module__.startswith("transformers.models.nemotron_h")
    assert "trust_remote_code" not in json.loads(lm.to_model_key().partition(":")[2])


def test_trust_policy_decides_meta_build_key_and_placement_config(example, monkeypatch):
    """HYBRIDLOAD_TRUST_REMOTE_CODE trusts the folder: the key says so, so the server reads the same config."""
    from nnsight import TransformersModel

    monkeypatch.setenv("HYBRIDLOAD_TRUST_REMOTE_CODE", str(example))
    lm = TransformersModel(str(example))
    assert lm._module.hybridload_plan.trust_remote_code
    key = lm.to_model_key()
    assert json.loads(key.partition(":")[2])["trust_remote_code"] is True
    monkeypatch.delenv("HYBRIDLOAD_TRUST_REMOTE_CODE")
    config = TransformersModel._config(key.partition(":")[2])
    assert type(config).__module__.startswith("transformers_modules")  # trusted: the remote config class
    untrusted = json.dumps({"repo_id": str(example), "revision": None, "task": "text-generation"})
    assert type(TransformersModel._config(untrusted)).__module__.startswith("transformers.models.nemotron_h")


def test_describe_checkpoint_reads_the_plans_config_offline(example, offline, no_network):
    from nnsight import TransformersModel

    lm = TransformersModel(str(example), trust_remote_code=True)
    info = TransformersModel.describe_checkpoint(lm.to_model_key(), "float32")
    assert type(info.config).__module__.startswith("transformers_modules")
    assert info.config.hybrid_override_pattern == "M-M*ME-M"
    assert info.size_bytes == 4 * hybridload.signature(lm).numel()  # counted on the plan's meta build


def test_untrusted_key_of_a_remote_only_repo_is_a_trust_error(tmp_path):
    from nnsight import TransformersModel

    folder = write_tiny_hybrid(tmp_path / "remote_only")
    key = json.dumps({"repo_id": str(folder), "revision": None, "task": "text-generation"})
    with pytest.raises(TrustError, match="trust_remote_code=True"):
        TransformersModel._config(key)


def test_flash_attention_is_kept_on_a_cpu_client(tiny_hybrid):
    """The server's attention implementation builds its own module classes; the CPU client builds those too."""
    from nnsight import TransformersModel

    lm = TransformersModel(str(tiny_hybrid), trust_remote_code=True, attn_implementation="flash_attention_2")
    assert not torch.cuda.is_available()
    assert type(lm._module.model.layers[1].mixer).__name__ == "FlashAttention2"
    assert lm.attn_implementation == "flash_attention_2"
    assert lm._remoteable_get_env()["attn_implementation"] == "flash_attention_2"  # what the server is told
    default = TransformersModel(str(tiny_hybrid), trust_remote_code=True)
    assert type(default._module.model.layers[1].mixer).__name__ == "SdpaAttention"
    assert hybridload.compare(default, lm).first_path == "model.layers.1.mixer"


def test_hub_repo_config_code_weights_and_tokenizer_from_one_commit(tmp_path, hub_cache, offline, no_network):
    """``main`` moved to v2 (new code, new weights, new tokenizer); revision='v1' gets v1 everywhere."""
    from nnsight import TransformersModel

    v1 = write_tiny_hybrid(tmp_path / "v1", version=1, seed=1)
    v2 = write_tiny_hybrid(tmp_path / "v2", version=2, seed=2, words=["[UNK]", "[PAD]", "world", "hello"])
    sha1 = hub_cache.add_snapshot("org/tiny", v1, refs=("v1",))
    hub_cache.add_snapshot("org/tiny", v2, refs=("main",))

    lm = TransformersModel("org/tiny", revision="v1", trust_remote_code=True, task="text-generation")
    plan = lm._module.hybridload_plan
    assert plan.commit == sha1 and sha1 in type(lm._module).__module__
    assert not hasattr(lm._module.model, "v2_only")
    assert lm.tokenizer("hello").input_ids == [2]  # v1's vocabulary (v2 maps hello -> 3)
    key = json.loads(lm.to_model_key().partition(":")[2])  # offline: no Hub call for the key either
    assert key == {"repo_id": "org/tiny", "revision": "v1", "trust_remote_code": True, "task": "text-generation"}
    info = TransformersModel.describe_checkpoint(lm.to_model_key(), "float32")  # placement: no Hub record offline
    assert info.size_bytes == 4 * hybridload.signature(lm).numel()  # v1's tree (v2 has more parameters)

    with pytest.warns(RuntimeWarning, match="runs here without mamba_ssm"):
        lm.dispatch()  # mamba_ssm is missing here; the module imports it but never calls it
    from safetensors.torch import load_file

    expected = load_file(str(v1 / "model.safetensors"))["model.embed.weight"]
    assert torch.equal(lm._module.model.embed.weight, expected)
    assert lm._module.hybridload_plan.commit == sha1


def test_the_base_huggingface_wrapper_builds_and_loads_through_the_plan(gpt2):
    from nnsight.modeling.huggingface import HuggingFaceModel

    model = HuggingFaceModel(str(gpt2))
    plan = model._module.hybridload_plan
    assert plan.auto_class == "AutoModel" and type(model._module).__name__ == "GPT2Model"
    assert hybridload.compare(hybridload.load_meta(plan), model).identical
    model.dispatch()
    assert model._module.hybridload_plan == plan and model._module.wte.weight.device.type == "cpu"


def test_an_unreachable_hub_stays_checkpoint_unreachable(hub_cache, offline):
    from nnsight.modeling.huggingface import CheckpointUnreachable
    from nnsight import TransformersModel

    key = json.dumps({"repo_id": "org/not-cached", "revision": None, "task": "text-generation"})
    with pytest.raises(CheckpointUnreachable, match="org/not-cached"):
        TransformersModel._config(key)


def test_online_keys_keep_nnsights_canonical_id(tmp_path, hub_cache, offline, monkeypatch):
    """Online, nnsight asks the Hub for the canonical id; hybridload keeps that and adds the plan's trust."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi, constants
    from nnsight import TransformersModel

    sha = hub_cache.add_snapshot("org/tiny", write_tiny_hybrid(tmp_path / "tiny"))
    monkeypatch.setenv("HYBRIDLOAD_TRUST_REMOTE_CODE", "org/*")
    lm = TransformersModel("org/tiny", task="text-generation")  # built from the cache
    assert lm._module.hybridload_plan.commit == sha
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # then online, the Hub answering the id lookup
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo_id, **kw: SimpleNamespace(id="Org/Tiny-Canonical"))
    key = json.loads(lm.to_model_key().partition(":")[2])
    assert key == {"repo_id": "Org/Tiny-Canonical", "revision": None, "trust_remote_code": True, "task": "text-generation"}
