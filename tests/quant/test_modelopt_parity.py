"""hybridload's NVFP4 writer against NVIDIA Model Optimizer itself (``nvidia-modelopt``, part of the test extra).

Model Optimizer quantizes and exports on CPU, so CI runs it live: the same bf16 weights and the same
calibration batches go through ``mtq.quantize(NVFP4_DEFAULT_CFG)`` + ``export_hf_checkpoint`` and through
:func:`hybridload.quant.write_nvfp4_checkpoint`; every exported tensor must be bit-identical. The
modelopt checkpoint is then served by :func:`hybridload.quant.load_quantized` and its logits compared with
modelopt's own fake-quantized forward.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch

import hybridload
from hybridload.quant import read_format, write_nvfp4_checkpoint
from hybridload.serve.quantized import load_quantized



def _mtq():
    """Model Optimizer's quantization API (the test extra installs nvidia-modelopt); imported when a test
    runs, not at collection, so other tests never see what it registers on import."""
    import modelopt.torch.quantization as mtq

    return mtq


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, architectures=["LlamaForCausalLM"])
    return LlamaForCausalLM(config).to(torch.bfloat16).eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    from modelopt.torch.export import export_hf_checkpoint

    mtq = _mtq()
    root = tmp_path_factory.mktemp("parity")
    model = _tiny_llama()
    calibration = [torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    write_nvfp4_checkpoint(copy.deepcopy(model), root / "hybridload", calibration_inputs=calibration, exclude=("lm_head",))

    def forward_loop(m):
        for batch in calibration:
            m(batch)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = mtq.quantize(model, mtq.NVFP4_DEFAULT_CFG, forward_loop)
        export_hf_checkpoint(quantized, export_dir=str(root / "modelopt"))
    return {"root": root, "calibration": calibration}


def test_writer_and_modelopt_export_the_same_tensors(exports: dict) -> None:
    from safetensors.torch import load_file

    ours = load_file(str(exports["root"] / "hybridload" / "model.safetensors"))
    theirs = load_file(str(exports["root"] / "modelopt" / "model.safetensors"))
    assert set(ours) == set(theirs)
    quantized = [k for k in theirs if k.endswith(".weight_scale_2")]
    assert len(quantized) == 14  # 7 linears x 2 layers
    for key, value in theirs.items():
        mine = ours[key]
        assert (mine.shape, mine.dtype) == (value.shape, value.dtype), key
        as_bits = (lambda t: t.view(torch.uint8)) if value.dtype == torch.float8_e4m3fn else (lambda t: t)
        assert torch.equal(as_bits(mine), as_bits(value)), key
    # q/k/v and gate/up share their per-tensor scales, as Model Optimizer fuses them
    assert torch.equal(ours["model.layers.0.self_attn.q_proj.weight_scale_2"], ours["model.layers.0.self_attn.v_proj.weight_scale_2"])
    assert not torch.equal(ours["model.layers.0.self_attn.q_proj.weight_scale_2"], ours["model.layers.0.self_attn.o_proj.weight_scale_2"])


def test_both_folders_declare_the_same_format(exports: dict) -> None:
    ours, theirs = read_format(exports["root"] / "hybridload"), read_format(exports["root"] / "modelopt")
    assert (ours.method, ours.group_size) == (theirs.method, theirs.group_size) == ("modelopt-nvfp4", 16)
    assert set(ours.exclude) <= set(theirs.exclude)  # modelopt also lists the (never quantized) embedding
    modelopt_qc = json.loads((exports["root"] / "modelopt" / "config.json").read_text())["quantization_config"]
    ours_qc = json.loads((exports["root"] / "hybridload" / "config.json").read_text())["quantization_config"]
    assert ours_qc["config_groups"] == modelopt_qc["config_groups"] and ours_qc["quant_method"] == "modelopt"


def _served_logits(folder: Path, batch: torch.Tensor, device: str) -> tuple[torch.Tensor, dict]:
    served = load_quantized(hybridload.load_meta(hybridload.resolve(str(folder))), folder, device_map=device)
    with torch.no_grad():
        return served(batch.to(device)).logits.float().cpu(), served.hybridload_quant_backends


def _swap_in_modelopt_dequantized(served: torch.nn.Module, folder: Path) -> None:
    """Replace each quantized linear of ``served`` by a dense bf16 nn.Linear holding the weight Model
    Optimizer's own ``NVFP4QTensor.dequantize`` gives back from the checkpoint (on the linear's device)."""
    from modelopt.torch.quantization.qtensor import NVFP4QTensor
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    for name, module in list(served.named_modules()):
        if f"{name}.weight_scale_2" in tensors:
            packed = tensors[f"{name}.weight"]
            qtensor = NVFP4QTensor(torch.Size((packed.shape[0], packed.shape[1] * 2)), torch.bfloat16, packed)
            dense = torch.nn.Linear(module.in_features, module.out_features, bias=False, dtype=torch.bfloat16)
            dense.weight.data = qtensor.dequantize(dtype=torch.bfloat16, scale=tensors[f"{name}.weight_scale"],
                                                   double_scale=tensors[f"{name}.weight_scale_2"], block_sizes={-1: 16})
            device = next(p.device for n, p in served.named_parameters() if n.startswith(name + "."))
            parent, _, child = name.rpartition(".")
            setattr(served.get_submodule(parent), child, dense.to(device))


def test_modelopt_checkpoint_served_by_hybridload_equals_modelopt_dequantized_weights(exports: dict) -> None:
    """CPU: the bf16 model holding the weights Model Optimizer's own NVFP4QTensor.dequantize gives back
    computes exactly what hybridload serves from that checkpoint (reference backend)."""
    folder = exports["root"] / "modelopt"
    batch = exports["calibration"][0]
    served = load_quantized(hybridload.load_meta(hybridload.resolve(str(folder))), folder)
    assert served.hybridload_quant_backends == {"reference": 14}
    with torch.no_grad():
        ours = served(batch).logits.float()
    _swap_in_modelopt_dequantized(served, folder)
    with torch.no_grad():
        theirs = served(batch).logits.float()
    assert torch.equal(ours, theirs)


@pytest.mark.gpu
def test_modelopt_checkpoint_served_on_gpu_matches_modelopt_dequantized_weights(exports: dict) -> None:
    """GPU: hybridload's W4A16 Triton kernels serving Model Optimizer's checkpoint against the same model with
    modelopt's own dequantized weights as dense bf16 layers. The bound is the one for the bundled example's
    W4A16 serving (2e-2 relative L2: the kernel dequantizes in-register and accumulates in fp32, the dense
    model rounds the bf16 weights first)."""
    folder = exports["root"] / "modelopt"
    batch = exports["calibration"][0].cuda()
    served = load_quantized(hybridload.load_meta(hybridload.resolve(str(folder))), folder, device_map="cuda")
    assert served.hybridload_quant_backends == {"triton-w4a16": 14}
    with torch.no_grad():
        ours = served(batch).logits.float().cpu()
    _swap_in_modelopt_dequantized(served, folder)
    with torch.no_grad():
        theirs = served(batch).logits.float().cpu()
    rel = float((ours - theirs).norm() / theirs.norm())
    assert rel < 2e-2, rel
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() > 0.9
