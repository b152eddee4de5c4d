"""Each kernel-import pattern builds a meta model through plain ``Auto*.from_config`` once hybridload is imported."""
from __future__ import annotations

import pytest
import torch

import hybridload
from fixtures.building import build, load_config, namespace_of, parameter_shapes
from fixtures.remote_code import PATTERNS, describe, expected_parameter_shapes
from hybridload.shim.standins import is_stand_in
from hybridload.substitutes import unregister

BUILDABLE = [p for p in PATTERNS if describe(p).builds_under_shim]

# per pattern, a config that changes the layer structure (so shapes really come from the config)
RESHAPED = {
    "nemotron_h": {"num_hidden_layers": 5, "hybrid_override_pattern": "M-*MM", "mamba_num_heads": 2},
    "hymba": {"num_hidden_layers": 3, "num_memory_tokens": 0, "mamba_expand": 3},
    "kimi_linear_imports_only": {
        "linear_attn_config": {"kda_layers": [2], "num_heads": 4, "head_dim": 4, "short_conv_kernel_size": 3}
    },
    "triton_kernels": {"norm_bias": True, "num_hidden_layers": 1},
    "fast_path_guard": {"attn_layer_indices": [0, 2], "num_hidden_layers": 4},
    "broken_install": {"num_hidden_layers": 3, "state_size": 4},
}


def test_every_buildable_pattern_has_a_reshaped_variant():
    assert sorted(RESHAPED) == sorted(BUILDABLE)


@pytest.mark.parametrize("how", ["meta", "init_empty_weights"])
@pytest.mark.parametrize("reshaped", [False, True], ids=["defaults", "reshaped"])
@pytest.mark.parametrize("pattern", BUILDABLE)
def test_meta_model_builds_with_expected_parameters(pattern, reshaped, how, remote_model):
    folder = remote_model(pattern, **(RESHAPED[pattern] if reshaped else {}))
    model = build(folder, how=how)

    assert parameter_shapes(model) == expected_parameter_shapes(folder)
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.parametrize("pattern", BUILDABLE)
def test_automodel_backbone_builds(pattern, remote_model):
    folder = remote_model(pattern)
    model = build(folder, auto="AutoModel")
    assert parameter_shapes(model) == expected_parameter_shapes(folder, head=False)
    assert {p.device.type for p in model.parameters()} == {"meta"}


@pytest.mark.parametrize("pattern", BUILDABLE)
def test_report_names_exactly_the_stood_in_packages(pattern, remote_model):
    info = describe(pattern)
    with hybridload.kernel_shim() as report:
        model = build(remote_model(pattern))
    assert report.packages == sorted(info.kernel_packages)
    served = {path for paths in report.stand_ins.values() for path in paths}
    assert set(info.symbols) <= served
    for package, paths in report.stand_ins.items():
        assert all(path.split(".")[0] == package for path in paths)
    # the names the module bound at import time are the stand-ins the report lists
    namespace = namespace_of(model)
    for symbol in info.symbols:
        bound = namespace[symbol.rpartition(".")[2]]
        assert is_stand_in(bound) and bound.__hybridload_path__ == symbol
        assert bound.__hybridload_package__ == symbol.split(".")[0]


def test_meta_build_session_reports_the_shim(remote_model):
    """Integrations build inside a ``meta`` build session; its shim report is the kernel shim's."""
    from hybridload.build import BuildSpec, build_session

    folder = remote_model("hymba")
    config = load_config(folder)
    with build_session(BuildSpec("meta", config=config)) as record:
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    report = record.shim
    assert report.packages == sorted(describe("hymba").kernel_packages)


def test_import_time_idioms_evaluate(remote_model):
    """Module-level code that inspects or combines kernel symbols runs with stand-ins."""
    hymba = namespace_of(build(remote_model("hymba")))
    assert isinstance(hymba["_flash_supports_window_size"], bool)  # inspect.signature(flash_attn_func) worked
    for bare in ("causal_conv1d_cuda", "selective_scan_cuda"):
        assert is_stand_in(hymba[bare]) and hymba[bare].__version__ == "0.0.0"

    guard = namespace_of(build(remote_model("fast_path_guard")))
    assert guard["is_fast_path_available"] is True  # all((stand-ins...)): stand-ins are truthy
    assert guard["flash_attn_func"] is not None

    nemotron = namespace_of(build(remote_model("nemotron_h")))
    # availability stays truthful (no CUDA here), so the guarded imports are skipped as without hybridload
    assert nemotron["mamba_chunk_scan_combined"] is None and nemotron["causal_conv1d_fn"] is None
    assert nemotron["is_fast_path_available"] is False


def test_triton_kernel_file_decorators_and_annotations(remote_model):
    folder = remote_model("triton_kernels")
    with hybridload.kernel_shim() as report:
        model = build(folder)
    ops = model.model.norm.forward.__globals__["rms_norm_fwd"].__globals__
    kernel = ops["_rms_norm_fwd_kernel"]
    assert is_stand_in(kernel) and is_stand_in(ops["_square_kernel"])
    assert kernel.__hybridload_package__ == "triton"
    # stacked decorators (@autotune over @heuristics over @jit) keep naming the kernel function
    assert ops["_square_kernel"].__hybridload_path__.endswith("triton_ops._square_kernel")
    assert kernel.__hybridload_path__.endswith("triton_ops._rms_norm_fwd_kernel")
    assert ops["TRITON_3"] is False  # triton.__version__ == "0.0.0"
    served = set(report.stand_ins["triton"])
    assert {"triton.autotune", "triton.heuristics", "triton.jit", "triton.Config", "triton.language.constexpr"} <= served


def test_kimi_linear_without_twins_fails_with_a_typed_error(remote_model, monkeypatch):
    """Instantiating an fla class that has no twin raises KernelUnavailableError naming it (no raw traceback)."""
    from hybridload.substitutes import registry

    monkeypatch.setitem(registry._defaults, "twin", {})
    with pytest.raises(hybridload.KernelUnavailableError) as raised:
        build(remote_model("kimi_linear"))
    message = str(raised.value)
    assert "fla.modules.ShortConvolution" in message and "'fla'" in message


def test_kimi_linear_builds_with_registered_twins(remote_model, monkeypatch):
    """With twins registered for the fla classes, the instantiating variant builds the same tree."""
    from hybridload.substitutes import registry

    monkeypatch.setitem(registry._defaults, "twin", {})

    class ShortConvolutionTwin(torch.nn.Conv1d):
        def __init__(self, hidden_size, kernel_size, bias=False, activation="silu", **kwargs):
            super().__init__(hidden_size, hidden_size, kernel_size, groups=hidden_size, padding=kernel_size - 1, bias=bias)

    class FusedRMSNormGatedTwin(torch.nn.Module):
        def __init__(self, hidden_size, eps=1e-5, activation="swish", **kwargs):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(hidden_size))

    hybridload.register_twin("fla.modules.ShortConvolution", ShortConvolutionTwin)
    hybridload.register_twin("fla.modules.FusedRMSNormGated", FusedRMSNormGatedTwin)
    try:
        folder = remote_model("kimi_linear")
        model = build(folder)
    finally:
        unregister("fla.modules.ShortConvolution", "twin")
        unregister("fla.modules.FusedRMSNormGated", "twin")
    assert parameter_shapes(model) == expected_parameter_shapes(folder)
    conv = model.model.layers[0].self_attn.q_conv1d
    assert isinstance(conv, ShortConvolutionTwin)
    assert not isinstance(conv, namespace_of(model)["ShortConvolution"])  # isinstance against a stand-in: False
