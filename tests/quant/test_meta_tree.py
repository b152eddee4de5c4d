"""quantize_meta_tree: the GPU-less client builds the tree a pre-quantized checkpoint is served with."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import hybridload
from hybridload.errors import QuantizationError
from hybridload.quant import quantize_meta_tree, read_format, signature_header
from hybridload.quant.formats import FP8_BLOCK, QuantFormat
from hybridload.quant.modules import CompressedTensorsNVFP4Linear, ModeloptFP8Linear, NVFP4Linear

NVFP4 = QuantFormat(method="modelopt-nvfp4", group_size=16, exclude=("lm_head",))


@pytest.fixture(scope="module")
def nvfp4_example() -> Path:
    return hybridload.examples.path("hybrid_tiny_nvfp4")


def _meta(path: Path):
    """The client's build: the plan records the checkpoint's format and load_meta builds the quantized tree."""
    return hybridload.load_meta(hybridload.resolve(str(path), trust_remote_code=True))


def _plain(path: Path):
    """The same model's unquantized tree (the plan without its format), to compare module paths with."""
    import dataclasses

    plan = hybridload.resolve(str(path), trust_remote_code=True)
    return hybridload.load_meta(dataclasses.replace(plan, quantization=None))


def test_client_tree_equals_the_served_reference_signature(nvfp4_example: Path) -> None:
    """The shipped reference was signed after a real streamed load (make_example.py); the client build,
    GPU-less and without any quantization package, gives the identical tree."""
    meta = _meta(nvfp4_example)
    record = meta.hybridload_quant_record
    assert record.format == read_format(nvfp4_example)
    assert dict(meta.hybridload_plan.quantization) == record.format.to_dict()
    reference = hybridload.TreeSignature.read(nvfp4_example / "reference_signature.json")
    signed = hybridload.signature(meta)
    assert signed.header["quantization"] == signature_header(meta)["quantization"]
    assert hybridload.compare(signed, reference).identical
    assert len(record.replaced) == 26 and record.kept == ("lm_head",)
    assert signed.header["quantization"]["method"] == "modelopt-nvfp4"
    assert reference.header["quantization"] == signed.header["quantization"]


def test_module_paths_and_layer_kinds_are_unchanged(nvfp4_example: Path) -> None:
    plain = _plain(nvfp4_example)
    quantized = _meta(nvfp4_example)
    assert [path for path, _ in quantized.named_modules()] == [path for path, _ in plain.named_modules()]
    assert list(hybridload.layer_kinds(quantized)) == list(hybridload.layer_kinds(plain))
    assert not hybridload.compare(plain, quantized).identical  # classes, names and dtypes of the weights differ


def test_quantized_linears_hold_the_checkpoint_names_shapes_and_dtypes(nvfp4_example: Path) -> None:
    meta = _meta(nvfp4_example)
    from safetensors import safe_open

    with safe_open(str(nvfp4_example / "model.safetensors"), "pt") as f:
        stored = {key: (tuple(f.get_slice(key).get_shape()), f.get_slice(key).get_dtype()) for key in f.keys()}
    names = {"U8": torch.uint8, "F8_E4M3": torch.float8_e4m3fn, "F32": torch.float32, "BF16": torch.bfloat16}
    state = meta.state_dict()
    assert set(state) == set(stored)
    quantized = {f"{path}." for path, m in meta.named_modules() if isinstance(m, NVFP4Linear)}
    for key, tensor in state.items():
        assert tuple(tensor.shape) == stored[key][0], key
        if key.rpartition(".")[0] + "." in quantized:  # packed tensors must match exactly (others are cast on load)
            assert tensor.dtype == names[stored[key][1]], key
    expert = meta.backbone.layers[5].mixer.experts[3].up_proj
    assert type(expert) is NVFP4Linear  # per-expert layout, as the checkpoint and the server hold it
    assert type(meta.lm_head) is nn.Linear


def test_modelopt_fp8_and_compressed_tensors_trees(nvfp4_example: Path) -> None:
    fp8 = _plain(nvfp4_example)
    quantize_meta_tree(fp8, QuantFormat(method="modelopt-fp8", exclude=("lm_head",)))
    proj = fp8.backbone.layers[3].mixer.q_proj
    assert type(proj) is ModeloptFP8Linear
    assert {n: (tuple(p.shape), p.dtype) for n, p in proj.named_parameters()} == {
        "weight": ((64, 64), torch.float8_e4m3fn), "weight_scale": ((), torch.float32), "input_scale": ((), torch.float32)
    }
    ct = _plain(nvfp4_example)
    quantize_meta_tree(ct, QuantFormat(method="compressed-tensors-nvfp4", group_size=16, exclude=("lm_head",)))
    proj = ct.backbone.layers[0].mixer.out_proj
    assert type(proj) is CompressedTensorsNVFP4Linear
    assert {n: (tuple(p.shape), p.dtype) for n, p in proj.named_parameters()} == {
        "weight_packed": ((64, 64), torch.uint8), "weight_scale": ((64, 8), torch.float8_e4m3fn),
        "weight_global_scale": ((1,), torch.float32), "input_global_scale": ((1,), torch.float32),
    }
    # three formats, three different trees: the digest records the format
    assert len({hybridload.signature(m).digest for m in (fp8, ct, _meta(nvfp4_example))}) == 3


def _deepseek_v3_config(tmp_path: Path) -> Path:
    config = {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 256,
        "hidden_size": 256, "intermediate_size": 384, "moe_intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "n_routed_experts": 4, "n_shared_experts": 1,
        "num_experts_per_tok": 2, "first_k_dense_replace": 1, "q_lora_rank": 192, "kv_lora_rank": 128,
        "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32, "n_group": 1, "topk_group": 1,
        "dtype": "bfloat16", "tie_word_embeddings": False,
        "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_fine_grained_fp8_tree_is_transformers_own(tmp_path: Path) -> None:
    """DeepSeek-V3's FP8 block config: transformers' FP8 modules with block scales, built on a CPU machine
    (where transformers' own loader would fall back to dequantizing)."""
    from transformers.integrations.finegrained_fp8 import FP8Linear

    folder = _deepseek_v3_config(tmp_path)
    meta = hybridload.load_meta(hybridload.resolve(str(folder)))
    paths_before = [path for path, _ in _plain(folder).named_modules()]
    fmt = read_format(folder)
    assert fmt.method == FP8_BLOCK
    record = meta.hybridload_quant_record
    assert record.format == fmt
    assert [path for path, _ in meta.named_modules()] == paths_before
    q_b = meta.model.layers[0].self_attn.q_b_proj  # 192 -> 4 * 48
    assert type(q_b) is FP8Linear
    assert (q_b.weight.dtype, tuple(q_b.weight.shape)) == (torch.float8_e4m3fn, (192, 192))
    assert (q_b.weight_scale_inv.dtype, tuple(q_b.weight_scale_inv.shape)) == (torch.float32, (2, 2))
    assert type(meta.lm_head) is not FP8Linear  # transformers' default skip list keeps the output layer
    assert "lm_head" in record.kept
    experts = meta.model.layers[1].mlp.experts
    assert experts.gate_up_proj.dtype == torch.float8_e4m3fn  # fused experts, as transformers serves them
    assert all(t.device.type == "meta" for t in meta.parameters())


def test_refuses_a_model_with_real_weights_and_a_second_pass(nvfp4_example: Path) -> None:
    real = nn.Sequential(nn.Linear(32, 32))
    with pytest.raises(QuantizationError, match="meta-built"):
        quantize_meta_tree(real, NVFP4)
    meta = _plain(nvfp4_example)
    quantize_meta_tree(meta, NVFP4.to_dict())  # the plan's dict form works too
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_meta_tree(meta, NVFP4)
    with torch.device("meta"):
        only_head = nn.ModuleDict({"lm_head": nn.Linear(16, 16)})
    with pytest.raises(QuantizationError, match="no linear layer"):
        quantize_meta_tree(only_head, NVFP4)


def test_meta_forward_gives_shapes(nvfp4_example: Path) -> None:
    meta = _meta(nvfp4_example)
    x = torch.empty(2, 5, 64, device="meta", dtype=torch.bfloat16)
    assert meta.backbone.layers[0].mixer.in_proj(x).shape == (2, 5, 328)
