"""detect_format / QuantFormat: each supported format is recognised from its JSON files, others refused clearly."""
from __future__ import annotations

import json

import pytest

from hybridload.errors import PlanError, QuantizationError
from hybridload.quant.formats import (
    CT_NVFP4,
    FP8_BLOCK,
    MODELOPT_FP8,
    MODELOPT_NVFP4,
    QuantFormat,
    detect_format,
    read_format,
)

# what Model Optimizer 0.47 writes (export_hf_checkpoint of an NVFP4 / FP8 model)
MODELOPT_NVFP4_QC = {
    "config_groups": {"group_0": {"input_activations": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16},
                                  "weights": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16},
                                  "targets": ["Linear"]}},
    "ignore": ["lm_head", "model.embed_tokens"],
    "quant_algo": "NVFP4",
    "producer": {"name": "modelopt", "version": "0.47.0"},
    "quant_method": "modelopt",
}
HF_QUANT_NVFP4 = {
    "producer": {"name": "modelopt", "version": "0.47.0"},
    "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16,
                     "exclude_modules": ["lm_head", "model.embed_tokens"]},
}
# DeepSeek-V3/R1's published quantization_config
DEEPSEEK_V3_QC = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]}


def test_modelopt_nvfp4_from_config_and_from_hf_quant_config_agree() -> None:
    from_config = detect_format({"quantization_config": MODELOPT_NVFP4_QC})
    from_hf = detect_format({}, HF_QUANT_NVFP4)
    both = detect_format({"quantization_config": MODELOPT_NVFP4_QC}, HF_QUANT_NVFP4)
    for fmt in (from_config, from_hf, both):
        assert fmt.method == MODELOPT_NVFP4 and fmt.group_size == 16 and fmt.is_nvfp4
        assert fmt.exclude == ("lm_head", "model.embed_tokens")
        assert fmt.producer == "modelopt 0.47.0"


def test_modelopt_fp8_and_kv_cache_algo_are_recorded() -> None:
    hf = {"producer": {"name": "modelopt", "version": "0.47.0"},
          "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]}}
    fmt = detect_format({}, hf)
    assert (fmt.method, fmt.group_size, fmt.kv_cache, fmt.exclude) == (MODELOPT_FP8, None, "FP8", ("lm_head",))


def test_deepseek_v3_fine_grained_fp8() -> None:
    fmt = detect_format({"model_type": "deepseek_v3", "quantization_config": DEEPSEEK_V3_QC})
    assert fmt.method == FP8_BLOCK and fmt.block_size == (128, 128) and fmt.activation_scheme == "dynamic"
    assert fmt.extra == {"scale_fmt": "float"}


def test_compressed_tensors_nvfp4_pack_quantized() -> None:
    qc = {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
          "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "float", "group_size": 16}, "targets": ["Linear"]}},
          "ignore": ["lm_head", "re:.*mlp.gate$"]}
    fmt = detect_format({"quantization_config": qc})
    assert fmt.method == CT_NVFP4 and fmt.exclude == ("lm_head",)
    assert fmt.excludes("model.layers.3.mlp.gate") and not fmt.excludes("model.layers.3.mlp.gate_proj")


def test_unquantized_config_gives_none() -> None:
    assert detect_format({"model_type": "llama"}) is None


@pytest.mark.parametrize(
    "algo,why",
    [("NVFP4_AWQ", "pre_quant_scale"), ("W4A8_AWQ", "int4 AWQ"), ("MIXED_PRECISION", "mixed"), ("MXFP4", "not among")],
)
def test_unsupported_modelopt_algorithms_are_typed_errors(algo: str, why: str) -> None:
    with pytest.raises(QuantizationError, match=why) as info:
        detect_format({"quantization_config": {**MODELOPT_NVFP4_QC, "quant_algo": algo}})
    assert isinstance(info.value, QuantizationError) and isinstance(info.value, ValueError)
    assert algo in str(info.value)


@pytest.mark.parametrize(
    "config,hf,match",
    [
        ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, None, "gptq"),
        ({"quantization_config": {**DEEPSEEK_V3_QC, "fmt": "e5m2"}}, None, "e5m2"),
        ({"quantization_config": {**DEEPSEEK_V3_QC, "weight_block_size": [128]}}, None, "two positive ints"),
        ({"quantization_config": {"quant_method": "compressed-tensors", "format": "int-quantized"}}, None, "int-quantized"),
        ({"quantization_config": MODELOPT_NVFP4_QC}, {"quantization": {"quant_algo": "FP8"}}, "mixes two exports"),
        ({"quantization_config": DEEPSEEK_V3_QC}, HF_QUANT_NVFP4, "mixes two exports"),
        ({}, {"producer": {}}, "no 'quantization' object"),
        ({"quantization_config": {**MODELOPT_NVFP4_QC, "ignore": "lm_head"}}, None, "list of module-name patterns"),
    ],
)
def test_malformed_or_inconsistent_configs_are_refused(config, hf, match) -> None:
    with pytest.raises(QuantizationError, match=match):
        detect_format(config, hf)


def test_to_dict_from_dict_round_trips_through_json() -> None:
    for fmt in (
        detect_format({"quantization_config": MODELOPT_NVFP4_QC}),
        detect_format({"quantization_config": DEEPSEEK_V3_QC}),
    ):
        again = QuantFormat.from_dict(json.loads(json.dumps(fmt.to_dict())))
        assert again == fmt and hash(again) == hash(fmt)
    with pytest.raises(QuantizationError, match="schema"):
        QuantFormat.from_dict({**fmt.to_dict(), "schema": 99})
    with pytest.raises(QuantizationError, match="unknown fields"):
        QuantFormat.from_dict({**fmt.to_dict(), "surprise": 1})
    with pytest.raises(QuantizationError, match="group_size 16"):
        QuantFormat(method=MODELOPT_NVFP4, group_size=32)


def test_exclude_patterns_match_the_module_or_a_parent() -> None:
    fmt = QuantFormat(method=MODELOPT_NVFP4, group_size=16, exclude=("lm_head", "*mixer.conv1d*", "model.layers.0.mlp"))
    assert fmt.excludes("lm_head")
    assert fmt.excludes("backbone.layers.2.mixer.conv1d")
    assert fmt.excludes("model.layers.0.mlp.down_proj")  # under an excluded parent
    assert not fmt.excludes("model.layers.10.mlp.down_proj")
    assert not fmt.excludes("model.lm_head_norm")


def test_read_format_reads_a_folder(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert read_format(tmp_path) is None
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(HF_QUANT_NVFP4))
    assert read_format(tmp_path).method == MODELOPT_NVFP4
    (tmp_path / "hf_quant_config.json").write_text("{not json")
    with pytest.raises(QuantizationError, match="not valid JSON"):
        read_format(tmp_path)
