"""After a window closes, the interpreter is as it was: sys.modules, sys.meta_path, import functions, caches."""
from __future__ import annotations

import importlib
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.dynamic_module_utils import check_imports, get_class_from_dynamic_module

import hybridload
from fixtures.building import build, load_config
from fixtures.remote_code import PATTERNS, describe
from fixtures.shim_state import availability_functions, interpreter_state, stand_in_modules

BUILDABLE = [p for p in PATTERNS if describe(p).builds_under_shim]
AVAILABILITY = ("is_mamba_2_ssm_available", "is_mamba_ssm_available", "is_causal_conv1d_available",
                "is_flash_attn_2_available", "is_flash_linear_attention_available", "is_triton_available")


@pytest.mark.parametrize("pattern", BUILDABLE)
def test_state_after_a_build_equals_state_before(pattern, remote_model):
    folder = remote_model(pattern)
    config = load_config(folder)
    build(folder, config=config)  # warm-up: framework modules imported lazily on a first build stay, rightly
    before = interpreter_state()
    with hybridload.kernel_shim() as report:
        build(folder, config=config)
        assert stand_in_modules(), "the window served no stand-in module"
    after = interpreter_state()
    assert after == before  # sys.modules included: no remote module that bound a stand-in outlived the window
    # the shim evicts only remote code (the build's device-profile window may have evicted it already)
    assert all(name.startswith("transformers_modules.") for name in report.evicted)


def test_state_restored_when_the_window_exits_with_an_exception(remote_model):
    folder = remote_model("hymba")
    config = load_config(folder)
    build(folder, config=config)
    before = interpreter_state()
    with pytest.raises(hybridload.KernelUnavailableError):
        with hybridload.kernel_shim(), torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
            model.to_empty(device="cpu")(torch.zeros(1, 3, dtype=torch.long))
    assert interpreter_state() == before


def test_state_restored_when_a_non_kernel_import_fails(remote_model):
    folder = remote_model("unregistered_missing")
    config = load_config(folder)
    with pytest.raises(ImportError):  # first use imports lazy modules (transformers' auto classes ...)
        build(folder, config=config)
    before = interpreter_state()
    with pytest.raises(ImportError) as raised:
        build(folder, config=config)
    assert not isinstance(raised.value, hybridload.KernelUnavailableError)
    assert interpreter_state() == before


def test_availability_checks_are_truthful_and_leave_no_cache_entries(remote_model):
    from transformers.utils import import_utils

    functions = availability_functions()
    truth = {name: functions[name]() for name in AVAILABILITY}
    truth_raw = {pkg: import_utils._is_package_available(pkg) for pkg in ("mamba_ssm", "flash_attn", "fla", "triton")}
    for name in AVAILABILITY:
        functions[name].cache_clear()
    with hybridload.kernel_shim():
        build(remote_model("hymba"))
        build(remote_model("kimi_linear_imports_only"))
        build(remote_model("triton_kernels"))
        assert "mamba_ssm" in sys.modules and "triton" in sys.modules  # stand-ins are visible right now
        assert {name: functions[name]() for name in AVAILABILITY} == truth
        assert {pkg: import_utils._is_package_available(pkg) for pkg in truth_raw} == truth_raw
    for name in AVAILABILITY:
        assert functions[name].cache_info().currsize == 0, f"{name} kept an answer computed inside the window"
    assert {name: functions[name]() for name in AVAILABILITY} == truth


def test_torch_triton_probe_stays_truthful(remote_model):
    """torch caches ``has_triton_package()`` for the process: a stand-in must never answer it."""
    from torch.utils import _triton

    truth = _triton.has_triton_package.__wrapped__()
    _triton.has_triton_package.cache_clear()
    with hybridload.kernel_shim():
        build(remote_model("triton_kernels"))
        assert "triton" in sys.modules
        assert _triton.has_triton_package() is truth
    assert _triton.has_triton_package() is truth


def test_remote_modules_executed_inside_are_evicted_and_reexecuted_later(remote_model, plain_transformers):
    folder = remote_model("hymba")
    config = load_config(folder)
    class_ref = config.auto_map["AutoModelForCausalLM"]
    with hybridload.kernel_shim() as report, torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    module_name = type(model).__module__
    assert module_name in report.evicted and module_name not in sys.modules
    # a later real load executes the code again and hits the real ImportError (no stale stand-in class) ...
    with pytest.raises(ImportError, match="flash_attn") as raised:
        get_class_from_dynamic_module(class_ref, folder)
    assert not isinstance(raised.value, hybridload.KernelUnavailableError)
    # ... also through the Auto class, whose registration of the stand-in-bound class was reverted
    with pytest.raises(ImportError, match="flash_attn"), torch.device("meta"):
        AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    # objects built inside keep working
    assert sum(p.numel() for p in model.parameters()) > 0
    assert type(model).forward.__globals__["flash_attn_func"].__hybridload_package__ == "flash_attn"


def test_check_imports_passes_only_inside_the_window(remote_model):
    modeling = next(remote_model("hymba").glob("modeling_*.py"))
    with hybridload.kernel_shim():
        assert check_imports(modeling) == ["configuration_hymba"]  # its relative imports: it passed
    with pytest.raises(ImportError, match="flash_attn"):
        check_imports(modeling)


def test_outside_the_window_kernel_imports_fail_as_before():
    with hybridload.kernel_shim():
        importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")
    for name in ("mamba_ssm", "mamba_ssm.ops.triton.layernorm_gated", "flash_attn", "triton"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(name)
        assert importlib.util.find_spec(name.partition(".")[0]) is None
