"""The device profile in the build path: a plan records the device its tree is built for, every client meta
build runs under it, a lock written on the server carries the server's device to the laptop, and dispatch
names the answers that differ (refusing in strict mode when the tree depends on them)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import device_fixtures as dfx
import pytest
import torch
from fixtures.code_folder import write_code_folder

import hybridload
from hybridload.cli import main as cli
from hybridload.errors import DeviceProfileError, DeviceProfileMismatchError, PlanError
from hybridload.plan.device_profile import DeviceProfile

SERVED = DeviceProfile.served_default()
A100 = DeviceProfile(cuda=True, device_count=1, capability=(8, 0), bf16=True, bf16_native=True,
                     device_name="NVIDIA A100-SXM4-80GB", multi_processor_count=108)


def plain_meta_build(folder: Path) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=True)


def mlp_class(model: torch.nn.Module) -> str:
    return type(model.transformer.h[0].mlp).__name__


def test_every_client_build_defaults_to_the_served_device(tmp_path: Path) -> None:
    folder = dfx.write_device_model(tmp_path, name="devq_default")
    server = dfx.server_signature(tmp_path, folder)

    plan = hybridload.resolve(folder, trust_remote_code=True)
    assert plan.profile == SERVED and plan.to_header()["device_profile"] == SERVED.to_dict()
    meta = hybridload.load_meta(plan)
    plain = plain_meta_build(folder)  # a plain transformers call routed into the same build path

    for built in (meta, plain):
        assert hybridload.compare(server, hybridload.signature(built), labels=("server", "client")).identical
    record = meta.hybridload_build_report
    assert record.layers[0] == "device_profile" and record.device.lies_possible
    asked = {query for (requester, query) in record.device.queries if requester.endswith(".modeling_devq")}
    assert {"is_available", "is_bf16_supported", "get_device_capability"} <= asked
    assert record.to_dict()["device_profile"]["profile"] == SERVED.to_dict()
    assert torch.cuda.is_available() is False  # truthful again after the build


def test_the_profile_is_a_plan_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = dfx.write_device_model(tmp_path, name="devq_decision")
    served = hybridload.resolve(folder, trust_remote_code=True)
    assert mlp_class(hybridload.load_meta(served)) == "FusedGateUpMLP"  # Hopper's fused projection

    mine = hybridload.resolve(folder, trust_remote_code=True, device_profile="none")
    assert mine.device_profile is None and mlp_class(hybridload.load_meta(mine)) == "SplitMLP"
    monkeypatch.setenv("HYBRIDLOAD_DEVICE_PROFILE", "none")
    assert hybridload.resolve(folder, trust_remote_code=True).device_profile is None
    monkeypatch.delenv("HYBRIDLOAD_DEVICE_PROFILE")

    a100 = hybridload.resolve(folder, trust_remote_code=True, device_profile=A100)
    a100_meta = hybridload.load_meta(a100)
    assert a100.profile == A100 and mlp_class(a100_meta) == "SplitMLP"  # sm_80: two projections ...
    assert hasattr(a100_meta.transformer.h[0].attn, "core_attention_flash")  # ... and bf16 flash attention
    assert hybridload.LoadPlan.from_json(a100.to_json()) == a100
    assert a100.decisions()["device_profile"] == A100.to_dict()  # a lock pins it

    with pytest.raises(PlanError, match="device_profile=NVIDIA H100.*the plan has NVIDIA A100"):
        hybridload.resolve(a100, device_profile="served")
    assert hybridload.resolve(a100, device_profile=A100.to_dict()) == a100
    with pytest.raises(DeviceProfileError, match="readable profile/lock JSON file"):
        hybridload.resolve(folder, trust_remote_code=True, device_profile=str(tmp_path / "absent.json"))
    bad = json.loads(a100.to_json())
    bad["device_profile"]["capability"] = "eight"
    with pytest.raises(PlanError, match="device profile"):
        hybridload.LoadPlan.from_dict(bad)


def test_a_lock_written_on_the_server_builds_the_server_tree_on_the_laptop(tmp_path: Path, capsys) -> None:
    folder = dfx.write_device_model(tmp_path, name="devq_lock")
    lock = tmp_path / "model.lock.json"
    # `hybridload lock` on an A100 server records that server's device (CUDA there: DeviceProfile.current())
    dfx.run_on_server(tmp_path, f"""
import sys
from hybridload.cli import main
sys.exit(main(["lock", {str(folder)!r}, "--trust-remote-code", "-o", {str(lock)!r}]))
""", dfx.A100, hybridload_active=True)
    recorded = json.loads(lock.read_text())["plan"]["device_profile"]
    assert recorded["device_name"] == "NVIDIA A100-SXM4-80GB" and recorded["capability"] == [8, 0]

    # on this CPU laptop: the lock's device, not the served default, decides the tree
    assert cli(["check", "--against", str(lock), "--trust-remote-code", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identical"] is True and report["plan_checked_against_lock"] is True
    assert report["device_profile"]["device_name"] == "NVIDIA A100-SXM4-80GB"
    a100_server = dfx.server_signature(tmp_path, folder, dfx.A100)
    h100_server = dfx.server_signature(tmp_path, folder, dfx.H100)
    assert report["digest"] == a100_server.digest != h100_server.digest
    plan = hybridload.resolve(folder, trust_remote_code=True, lock=lock)
    assert plan.profile.device_name == "NVIDIA A100-SXM4-80GB"


def _save_weights(folder: Path) -> None:
    """Weights of the tree this CPU machine builds for real."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, trust_remote_code=True).save_pretrained(folder)


def test_dispatch_names_the_answers_that_differ(tmp_path: Path) -> None:
    folder = dfx.write_device_model(tmp_path, name="devq_served_here")
    _save_weights(folder)
    plan = hybridload.resolve(folder, trust_remote_code=True)  # built for the served H100

    with pytest.warns(RuntimeWarning, match="CUDA available: True \\(plan's device profile\\) != False") as caught:
        model = hybridload.dispatch(plan, device_map="cpu")
    assert "builds another tree here (first difference: transformer.h.0" in str(caught[0].message)
    assert mlp_class(model) == "SplitMLP"  # what this machine really serves
    assert any(line.startswith("compute capability") for line in model.hybridload_device_differences)
    with pytest.raises(DeviceProfileMismatchError, match="strict mode") as refused:
        hybridload.dispatch(plan, device_map="cpu", strict=True)
    assert refused.value.differences == model.hybridload_device_differences

    here = hybridload.resolve(folder, trust_remote_code=True, device_profile="current")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        served = hybridload.dispatch(here, device_map="cpu", verify_tree=True)
    assert served.hybridload_device_differences == []


ASKS_BUT_SAME_TREE = """
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

ON_GPU = torch.cuda.is_available() and torch.cuda.is_bf16_supported()  # read at import, used only in forward


class AskConfig(PretrainedConfig):
    model_type = "askdev"

    def __init__(self, hidden_size=8, **kwargs):
        self.hidden_size = hidden_size
        super().__init__(**kwargs)


class AskModel(PreTrainedModel):
    config_class = AskConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.post_init()

    def forward(self, x):
        return self.proj(x.bfloat16() if ON_GPU else x)
"""


def test_a_device_the_tree_does_not_depend_on_is_recorded_silently(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "llama")
    asks = write_code_folder(tmp_path / "askdev", {"modeling_askdev.py": ASKS_BUT_SAME_TREE}, model_type="askdev",
                             architecture="AskModel",
                             auto_map={"AutoConfig": "modeling_askdev.AskConfig", "AutoModel": "modeling_askdev.AskModel"})
    from transformers import AutoConfig, AutoModel

    AutoModel.from_config(AutoConfig.from_pretrained(asks, trust_remote_code=True), trust_remote_code=True).save_pretrained(asks)

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        native = hybridload.dispatch(tmp_path / "llama", strict=True)  # transformers' own class: not even compared
        remote = hybridload.dispatch(asks, trust_remote_code=True, auto_class="AutoModel", strict=True)
    assert native.hybridload_device_differences == []
    assert "CUDA available: True (plan's device profile) != False (this machine)" in remote.hybridload_device_differences
