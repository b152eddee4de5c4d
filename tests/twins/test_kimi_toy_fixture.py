"""A Kimi-Linear-style remote-code model builds on meta GPU-less (twins + stand-ins), and runs on meta."""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from accelerate import init_empty_weights
from transformers import AutoConfig, AutoModelForCausalLM

import hybridload  # noqa: F401  (installs the from_config integration)
from hybridload.errors import KernelUnavailableError
from hybridload.shim.kernel_shim import kernel_shim
from hybridload.twins import real_name
from kimi_toy_fixture import write_kimi_toy

SHORT_CONV = "fla.modules.causal_conv1d.ops.ShortConvolution"
GATED_NORM = "fla.modules.norm.fused_norm_gate.FusedRMSNormGated"


@pytest.fixture(scope="module")
def kimi(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    folder = write_kimi_toy(tmp_path_factory.mktemp("kimi") / "kimi_toy_model")
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    with kernel_shim() as report, init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    return model, report


def test_kernel_packages_are_really_absent_here() -> None:
    for package in ("fla", "flash_attn", "triton"):
        assert importlib.util.find_spec(package) is None, f"{package} is installed: this test needs it absent"


def test_builds_on_meta_with_twins_for_every_fla_class(kimi: tuple) -> None:
    model, report = kimi
    assert all(p.device.type == "meta" for p in model.parameters())
    assert model.config._attn_implementation == "flash_attention_2"
    lin = model.config.linear_attn_config
    projection = lin["num_heads"] * lin["head_dim"]
    kda_layers = [i for i in range(model.config.num_hidden_layers) if model.config.is_kda_layer(i)]
    assert kda_layers == [0, 1, 3]
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        if i not in kda_layers:
            assert not any(real_name(type(m)).startswith("fla.") for m in attn.modules())
            continue
        convs = [attn.q_conv1d, attn.k_conv1d, attn.v_conv1d]
        for conv in convs:
            assert real_name(type(conv)) == SHORT_CONV
            assert isinstance(conv, torch.nn.Conv1d)
            assert conv.weight.shape == (projection, 1, lin["short_conv_kernel_size"])
            assert conv.bias is None and conv.activation == "silu"
        assert real_name(type(attn.o_norm)) == GATED_NORM
        assert attn.o_norm.weight.shape == (lin["head_dim"],) and attn.o_norm.activation == "sigmoid"
    # exactly three short convolutions and one gated norm per KDA layer, nothing else twinned
    twinned = [real_name(type(m)) for m in model.modules() if hasattr(type(m), "__hybridload_twin_of__")]
    assert sorted(twinned) == sorted([SHORT_CONV] * 3 * len(kda_layers) + [GATED_NORM] * len(kda_layers))


def test_the_window_reports_every_kernel_symbol_the_remote_code_imported(kimi: tuple) -> None:
    _, report = kimi
    assert {
        "fla.modules.ShortConvolution",
        "fla.modules.FusedRMSNormGated",
        "fla.ops.kda.chunk_kda",
        "fla.ops.kda.fused_recurrent_kda",
        "fla.ops.kda.gate.fused_kda_gate",
        "fla.utils.tensor_cache",
    } <= set(report.stand_ins["fla"])
    assert "flash_attn.flash_attn_func" in report.stand_ins["flash_attn"]


@pytest.mark.parametrize("length", [8, 80])  # <= 64: fused_recurrent_kda path; > 64: chunk_kda path
def test_meta_forward_flows_shapes_through_stand_ins_and_twins(kimi: tuple, length: int) -> None:
    model, _ = kimi
    ids = torch.zeros(2, length, dtype=torch.long, device="meta")
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (2, length, model.config.vocab_size)
    assert logits.dtype == torch.float32 and logits.device.type == "meta"


def test_real_tensors_still_reach_kernel_unavailable(kimi: tuple) -> None:
    model, _ = kimi
    real = copy.deepcopy(model.model.layers[0].self_attn).to_empty(device="cpu")  # real (uninitialised) memory
    with torch.no_grad(), pytest.raises(KernelUnavailableError, match="fla"):
        real(torch.randn(1, 8, model.config.hidden_size))
