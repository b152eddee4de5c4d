"""The server's device profile on a GPU-less client: remote code that reads torch.cuda at import and in
__init__ builds, inside the window, exactly the tree it builds on the GPU server; everything else keeps the
truth (other threads, torch, transformers, accelerate, hybridload), and nothing outlives the window."""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import device_fixtures as dfx
import pytest
import torch

import hybridload
from hybridload.build.device_window import QUERIES, device_profile_window
from hybridload.plan.device_profile import DeviceProfile, check_device_matches, choose_profile, profile_from_lock
from hybridload.errors import DeviceProfileError, HybridloadError

SERVED = DeviceProfile.served_default()
A100 = DeviceProfile(cuda=True, device_count=8, capability=(8, 0), bf16=True, bf16_native=True,
                     device_name="NVIDIA A100-SXM4-80GB", total_memory=85_899_345_920, multi_processor_count=108)


def build(folder: Path) -> torch.nn.Module:
    """The user's meta build (``import hybridload`` runs from_config in the build path, under the default
    device profile: "as served")."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=True)


def truthful_build(folder: Path) -> torch.nn.Module:
    """The same build with ``HYBRIDLOAD_DEVICE_PROFILE=none``: this CPU machine's own answers."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYBRIDLOAD_DEVICE_PROFILE", "none")
        return build(folder)


def remote_namespace(model: torch.nn.Module) -> dict:
    """The globals of the remote module that defined the model (alive after the module left sys.modules)."""
    return type(model).__init__.__globals__


def test_client_tree_under_the_served_profile_is_the_server_tree(tmp_path: Path) -> None:
    folder = dfx.write_device_model(tmp_path, name="devq_served")
    server = dfx.server_signature(tmp_path, folder)

    plain = truthful_build(folder)  # this CPU machine's answers: no flash attention, the split MLP
    with device_profile_window(SERVED) as report:
        served = build(folder)
    after = truthful_build(folder)

    assert hybridload.compare(server, served, labels=("server", "client")).identical
    diff = hybridload.compare(server, plain, labels=("server", "client"))
    assert not diff.identical and "core_attention_flash" in diff.first_path
    assert len([n for n, _ in served.named_modules() if n.endswith("core_attention_flash")]) == 3
    assert hybridload.signature(after) == hybridload.signature(plain)  # truthful again after the window
    asked = {query for (requester, query) in report.queries if requester.endswith(".modeling_devq")}
    assert asked == {"is_available", "is_bf16_supported", "get_device_capability", "device_count", "get_device_properties"}
    assert report.lies_possible
    assert any(name.endswith(".modeling_devq") for name in report.evicted_on_entry)  # executed truthfully before


def test_module_level_answers_never_outlive_the_window(tmp_path: Path) -> None:
    # use_flash_attn=False: no kernel package is imported, so only the profile window evicts the module
    folder = dfx.write_device_model(tmp_path, name="devq_module_level", use_flash_attn=False)
    before = truthful_build(folder)
    assert remote_namespace(before)["SUPPORT_BF16"] is False
    with device_profile_window(SERVED) as report:
        inside = build(folder)  # the module executed before the window is executed again under the profile
        assert remote_namespace(inside)["SUPPORT_BF16"] is True
        assert type(inside.transformer.h[0].mlp).__name__ == "FusedGateUpMLP"
    assert any(name.endswith(".modeling_devq") for name in report.evicted_on_entry)
    assert any(name.endswith(".modeling_devq") for name in report.evicted_on_exit)
    assert not any(name.endswith(".modeling_devq") for name in sys.modules)
    from transformers import AutoModelForCausalLM

    registered = [cls.__module__ for cls in AutoModelForCausalLM._model_mapping._extra_content.values()]
    assert not set(registered) & set(report.evicted_on_exit)  # no Auto registration points into them
    after = truthful_build(folder)
    assert remote_namespace(after)["SUPPORT_BF16"] is False
    assert type(after.transformer.h[0].mlp).__name__ == "SplitMLP"


def _caller(module_name: str):
    """A function whose frames belong to ``module_name`` (what the requester check reads)."""
    namespace = {"__name__": module_name, "torch": torch}
    exec(
        "def ask():\n"
        "    return (torch.cuda.is_available(), torch.cuda.device_count(), torch.cuda.is_bf16_supported())\n",
        namespace,
    )
    return namespace["ask"]


def test_frameworks_and_other_threads_keep_the_truth() -> None:
    truth = (torch.cuda.is_available(), torch.cuda.device_count(), torch.cuda.is_bf16_supported())
    remote = _caller("transformers_modules.some_repo.abc123.modeling_x")
    with device_profile_window(SERVED):
        assert remote() == (True, 1, True)
        assert _caller("user_code")() == (True, 1, True)
        for framework in ("torch.cuda.amp", "transformers.modeling_utils", "accelerate.utils", "hybridload.serve", "nnsight.x"):
            assert _caller(framework)() == truth, framework
        seen = []
        thread = threading.Thread(target=lambda: seen.append(remote()))
        thread.start()
        thread.join()
        assert seen == [truth]
        # torch's own internals, reached from remote code, are never answered by the profile
        from transformers.utils import is_torch_bf16_gpu_available

        namespace = {"__name__": "transformers_modules.r.modeling", "is_torch_bf16_gpu_available": is_torch_bf16_gpu_available}
        exec("def helper():\n    return is_torch_bf16_gpu_available()\n", namespace)
        assert namespace["helper"]() is False
        # torch's own function, called by remote code, asks get_device_properties internally: torch gets the truth
        if not torch.cuda.is_available():
            namespace["original"] = torch.cuda.get_device_capability.__wrapped__
            exec("def torch_capability():\n    return original()\n", namespace)
            with pytest.raises(AssertionError, match="Torch not compiled with CUDA enabled"):
                namespace["torch_capability"]()
    assert remote() == truth


def test_the_patches_exist_only_while_a_window_is_open() -> None:
    originals = {name: getattr(torch.cuda, name) for name in QUERIES if hasattr(torch.cuda, name)}
    with device_profile_window(SERVED):
        assert all(getattr(torch.cuda, name) is not original for name, original in originals.items())
        with device_profile_window(SERVED):  # nested, same profile
            assert _caller("transformers_modules.r.m")()[0] is True
        assert _caller("transformers_modules.r.m")()[0] is True
    assert {name: getattr(torch.cuda, name) for name in originals} == originals


def test_conflicting_windows_are_refused() -> None:
    with device_profile_window(SERVED):
        with pytest.raises(DeviceProfileError, match="nested window must use the same profile"):
            with device_profile_window(A100):
                pass
        errors = []

        def other_thread() -> None:
            try:
                with device_profile_window(A100):
                    pass
            except DeviceProfileError as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert errors and "different device profile" in errors[0]
    with pytest.raises(DeviceProfileError, match="needs a DeviceProfile"):
        with device_profile_window({"cuda": True}):  # type: ignore[arg-type]
            pass


def test_answers_follow_torch_argument_handling() -> None:
    namespace = {"__name__": "transformers_modules.r.modeling", "torch": torch}
    exec(
        "def capability(device=None):\n    return torch.cuda.get_device_capability(device)\n"
        "def name(device=None):\n    return torch.cuda.get_device_name(device)\n"
        "def props(device=None):\n    return torch.cuda.get_device_properties(device)\n"
        "def current():\n    return torch.cuda.current_device()\n"
        "def bf16(emulation=True):\n    return torch.cuda.is_bf16_supported(including_emulation=emulation)\n",
        namespace,
    )
    with device_profile_window(A100):
        for device in (None, 0, 7, "cuda", "cuda:3", torch.device("cuda", 5)):
            assert namespace["capability"](device) == (8, 0)
        assert namespace["name"]() == "NVIDIA A100-SXM4-80GB" and namespace["current"]() == 0
        props = namespace["props"](1)
        assert (props.major, props.minor, props.total_memory, props.multi_processor_count) == (8, 0, 85_899_345_920, 108)
        with pytest.raises(AssertionError, match="Invalid device id"):
            namespace["capability"](8)
        with pytest.raises(ValueError, match="Expected a cuda device"):
            namespace["capability"]("cpu")
    volta = DeviceProfile(cuda=True, device_count=1, capability=(7, 0), bf16=True, bf16_native=False)
    with device_profile_window(volta):
        assert namespace["bf16"](True) is True and namespace["bf16"](False) is False
    unpinned = DeviceProfile(cuda=True, device_count=1, capability=(9, 0), bf16=True, bf16_native=True)
    with device_profile_window(unpinned):
        assert namespace["props"]().major == 9
        with pytest.raises(DeviceProfileError, match="total memory, which the device profile .* leaves unpinned"):
            namespace["props"]().total_memory
        with pytest.raises(DeviceProfileError, match="device name"):
            namespace["name"]()
    cpu = DeviceProfile(cuda=False)
    with device_profile_window(cpu):
        assert _caller("transformers_modules.r.m")() == (False, 0, False)
        with pytest.raises(RuntimeError, match="No CUDA GPUs are available"):
            namespace["capability"]()


def test_profiles_round_trip_and_bad_ones_are_refused(tmp_path: Path) -> None:
    for profile in (SERVED, A100, DeviceProfile(cuda=False), DeviceProfile.current()):
        assert DeviceProfile.from_json(profile.to_json()) == profile
        assert DeviceProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    (tmp_path / "p.json").write_text(A100.to_json())
    assert DeviceProfile.read(tmp_path / "p.json") == A100
    bad = [
        ({"schema": "other/1", "cuda": True}, "schema"),
        ({"cuda": True, "gpus": 8}, "unknown keys: \\['gpus'\\]"),
        ({"device_count": 1}, "'cuda' missing"),
        ({"cuda": True, "device_count": 1}, "needs device_count >= 1 and a capability"),
        ({"cuda": False, "bf16": True}, "without CUDA has no devices"),
        ({"cuda": "yes"}, "field 'cuda' must be a bool"),
        ({"cuda": True, "device_count": 1, "capability": [9]}, "field 'capability'"),
        ([1, 2], "is a JSON object"),
    ]
    for data, fragment in bad:
        with pytest.raises(DeviceProfileError, match=fragment):
            DeviceProfile.from_dict(data)
    with pytest.raises(DeviceProfileError, match="invalid JSON"):
        DeviceProfile.from_json("{")
    assert issubclass(DeviceProfileError, (HybridloadError, ValueError))


def test_differences_name_each_answer_that_differs() -> None:
    assert SERVED.differences(SERVED) == []
    assert SERVED.differences(A100) == [
        "device count: 1 (profile) != 8 (this machine)",
        "compute capability: 9.0 (profile) != 8.0 (this machine)",
        "device name: 'NVIDIA H100 80GB HBM3' (profile) != 'NVIDIA A100-SXM4-80GB' (this machine)",
        "multiprocessor count: 132 (profile) != 108 (this machine)",
    ]  # the served default leaves total memory unpinned (it varies by driver and ECC)
    assert A100.differences(SERVED, labels=("lock", "server"))[3] == "total memory: 85899345920 (lock) != None (server)"
    unpinned = DeviceProfile(cuda=True, device_count=8, capability=(8, 0), bf16=True, bf16_native=True)
    assert unpinned.differences(A100) == []  # name, memory and multiprocessors left open


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU side of the check (the GPU side is the gpu test)")
def test_check_device_matches_on_a_cpu_machine() -> None:
    assert check_device_matches(DeviceProfile.current()) == []
    assert check_device_matches(SERVED)[:3] == [
        "CUDA available: True (plan's device profile) != False (this machine)",
        "device count: 1 (plan's device profile) != 0 (this machine)",
        "compute capability: 9.0 (plan's device profile) != None (this machine)",
    ]


@pytest.mark.gpu
def test_current_reads_the_real_device_and_matches_itself() -> None:
    current = DeviceProfile.current()
    props = torch.cuda.get_device_properties(0)
    assert current.cuda and current.device_count == torch.cuda.device_count()
    assert current.capability == (props.major, props.minor) and current.device_name == props.name
    assert current.total_memory == props.total_memory
    assert check_device_matches(current) == []
    served = check_device_matches(SERVED)
    if props.name == SERVED.device_name and torch.cuda.device_count() == 1:
        assert served == []
    else:
        assert served and all("(plan's device profile)" in line for line in served)


def test_choose_profile_from_environment_and_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRIDLOAD_DEVICE_PROFILE", raising=False)
    assert choose_profile() == SERVED
    monkeypatch.setenv("HYBRIDLOAD_DEVICE_PROFILE", "current")
    assert choose_profile() == DeviceProfile.current()
    monkeypatch.setenv("HYBRIDLOAD_DEVICE_PROFILE", "none")
    assert choose_profile() is None
    lock = {"schema": "hybridload.lock/1", "plan": {"device_profile": A100.to_dict()}, "signature": None}
    (tmp_path / "model.lock.json").write_text(json.dumps(lock))
    monkeypatch.setenv("HYBRIDLOAD_DEVICE_PROFILE", str(tmp_path / "model.lock.json"))
    assert choose_profile() == A100 == profile_from_lock(lock)
    assert profile_from_lock({"plan": {}}) is None
    monkeypatch.setenv("HYBRIDLOAD_DEVICE_PROFILE", str(tmp_path / "absent.json"))
    with pytest.raises(DeviceProfileError, match="not 'served', 'current', 'none' or a readable"):
        choose_profile()
