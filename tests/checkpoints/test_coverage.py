"""checkpoint_coverage: every drift between a checkpoint and a meta tree is found from headers alone, with the
rule that mapped each tensor, and agrees with what from_pretrained then does with the same files."""
from __future__ import annotations

import json
from pathlib import Path

import coverage_fixtures as fx
import pytest
import torch

from hybridload.serve.coverage import TensorIndex, checkpoint_coverage, local_index, require_coverage
from hybridload.errors import CheckpointCoverageError, CheckpointError, HybridloadError, PlanError

NATIVE = ["qwen2_moe", "mixtral", "deepseek_v3", "nemotron_h"]
FUSE = "conversion MergeModulelist(dim=0) + Concatenate(dim=1)"


def loading_info(config, folder: Path, **kwargs) -> dict[str, set[str]]:
    """What from_pretrained reports for these files (the real load the check must predict)."""
    _, info = fx.causal_lm_class(config).from_pretrained(folder, config=config, output_loading_info=True, **kwargs)
    return {name: set(keys) for name, keys in info.items() if name in ("missing_keys", "unexpected_keys")}


def predicted(report) -> dict[str, set[str]]:
    return {
        "missing_keys": {t.key for t in report.unfilled},
        "unexpected_keys": {t.mapped_to for t in report.unconsumed},
    }


@pytest.mark.parametrize("model_type", NATIVE)
def test_fitting_checkpoints_are_ok_and_every_tensor_has_its_rule(saved, model_type: str) -> None:
    folder = saved(model_type)  # save_pretrained: experts per expert on disk, fused in the tree
    config = fx.make_config(model_type)
    report = checkpoint_coverage(fx.build_meta(config), folder)

    assert report.ok, report.format()
    assert report.checkpoint_tensors == len(fx.read_state(folder))
    # every checkpoint tensor is consumed by a named rule or explicitly ignored
    ignored = [a for a in report.allowed if a.side == "checkpoint"]
    assert sum(report.rules.values()) + len(ignored) == report.checkpoint_tensors
    assert any(rule.startswith("conversion MergeModulelist(dim=0)") for rule in report.rules), report.rules
    assert loading_info(config, folder) == {"missing_keys": set(), "unexpected_keys": set()}


def test_renames_of_the_conversion_mapping_are_named(saved) -> None:
    report = checkpoint_coverage(fx.build_meta(fx.make_config("nemotron_h")), saved("nemotron_h"))
    assert report.ok
    assert any("conversion mapping rename 'backbone" in rule for rule in report.rules), report.rules
    mixtral = checkpoint_coverage(fx.build_meta(fx.make_config("mixtral")), saved("mixtral"))
    assert any(".block_sparse_moe." in rule for rule in mixtral.rules), mixtral.rules


@pytest.mark.parametrize("checkpoint_layout, tree_layout", [("per_expert", "fused"), ("fused", "per_expert")])
def test_per_expert_and_fused_experts_without_a_conversion_rule(tmp_path: Path, checkpoint_layout: str, tree_layout: str) -> None:
    folder = fx.save_random(fx.TinyMoeConfig(experts_layout=checkpoint_layout), tmp_path / checkpoint_layout)
    config = fx.TinyMoeConfig(experts_layout=tree_layout)
    report = checkpoint_coverage(fx.build_meta(config), folder)

    assert not report.ok
    assert predicted(report) == loading_info(config, folder)
    per_expert = {t.key for t in (report.unconsumed if checkpoint_layout == "per_expert" else report.unfilled)}
    fused = {t.key for t in (report.unfilled if checkpoint_layout == "per_expert" else report.unconsumed)}
    assert per_expert == {f"model.layers.{l}.experts.{e}.{p}.weight" for l in range(2) for e in range(4)
                          for p in ("gate_proj", "up_proj", "down_proj")}
    assert fused == {f"model.layers.{l}.experts.{p}" for l in range(2) for p in ("gate_up_proj", "down_proj")}
    expected_hint = "stores them per expert" if checkpoint_layout == "per_expert" else "stores them fused"
    assert any(hint.startswith("experts:") and expected_hint in hint for hint in report.hints), report.hints


def test_renamed_prefix_is_found_and_key_mapping_fixes_it(saved, tmp_path: Path) -> None:
    config = fx.make_config("llama")
    state = {key.replace("model.", "decoder.", 1): t for key, t in fx.read_state(saved("llama")).items()}
    folder = fx.write_state(tmp_path / "renamed", state, config=config)
    report = checkpoint_coverage(fx.build_meta(config), folder)

    assert not report.ok
    assert predicted(report) == loading_info(config, folder)
    assert {t.key for t in report.unconsumed} == {k for k in state if k.startswith("decoder.")}
    hint = next(h for h in report.hints if h.startswith("renamed prefix"))
    assert "'decoder.'" in hint and "'model.'" in hint and "key_mapping={'^decoder\\\\.': 'model.'}" in hint

    mapping = {r"^decoder\.": "model."}
    fixed = checkpoint_coverage(fx.build_meta(config), folder, key_mapping=mapping)
    assert fixed.ok, fixed.format()
    assert any(rule.startswith("key_mapping '^decoder\\\\.' -> 'model.'") for rule in fixed.rules), fixed.rules
    assert loading_info(config, folder, key_mapping=mapping) == {"missing_keys": set(), "unexpected_keys": set()}


def test_a_missing_tensor_is_unfilled(saved, tmp_path: Path) -> None:
    config = fx.make_config("qwen2_moe")
    state = fx.read_state(saved("qwen2_moe"))
    del state["model.layers.1.self_attn.o_proj.weight"]
    folder = fx.write_state(tmp_path / "missing", state, config=config)
    report = checkpoint_coverage(fx.build_meta(config), folder)

    assert [t.key for t in report.unfilled] == ["model.layers.1.self_attn.o_proj.weight"]
    assert report.unfilled[0].shape == (16, 16) and not report.unconsumed and not report.mismatches
    assert predicted(report) == loading_info(config, folder)


def test_an_extra_tensor_is_unconsumed(saved, tmp_path: Path) -> None:
    config = fx.make_config("qwen2_moe")
    state = fx.read_state(saved("qwen2_moe"))
    state["model.layers.0.mlp.adapter.weight"] = torch.zeros(4, 16)
    folder = fx.write_state(tmp_path / "extra", state, config=config)
    report = checkpoint_coverage(fx.build_meta(config), folder)

    assert [(t.key, t.rule) for t in report.unconsumed] == [
        ("model.layers.0.mlp.adapter.weight", "no tensor of this name in the tree")
    ]
    assert report.unconsumed[0].shape == (4, 16) and report.unconsumed[0].dtype == "F32"
    assert not report.unfilled and predicted(report) == loading_info(config, folder)


def test_a_missing_expert_is_a_shape_mismatch_of_the_fused_tensor(saved, tmp_path: Path) -> None:
    config = fx.make_config("qwen2_moe")
    state = {k: t for k, t in fx.read_state(saved("qwen2_moe")).items() if ".layers.1.mlp.experts.3." not in k}
    folder = fx.write_state(tmp_path / "three_experts", state, config=config)
    report = checkpoint_coverage(fx.build_meta(config), folder)

    shapes = {m.target: m for m in report.mismatches_of("shape")}
    assert set(shapes) == {"model.layers.1.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj"}
    gate_up = shapes["model.layers.1.mlp.experts.gate_up_proj"]
    assert gate_up.checkpoint.startswith("[3, 16, 16]") and gate_up.model == "[4, 16, 16]"
    assert "x3" in gate_up.checkpoint and gate_up.rule.startswith(FUSE)
    assert len(gate_up.sources) == 6  # gate and up of the three experts that are there


def test_a_wrong_config_dimension_is_a_shape_mismatch(saved) -> None:
    config = fx.make_config("llama", intermediate_size=48)  # the checkpoint was saved with 32
    report = checkpoint_coverage(fx.build_meta(config), saved("llama"))
    targets = sorted(m.target for m in report.mismatches_of("shape"))
    assert targets == sorted(f"model.layers.{l}.mlp.{p}_proj.weight" for l in range(2) for p in ("gate", "up", "down"))
    down = next(m for m in report.mismatches if m.target == "model.layers.0.mlp.down_proj.weight")
    assert (down.checkpoint, down.model, down.rule) == ("[16, 32]", "[16, 48]", "same name")


def _linear_weights(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, t in state.items() if k.endswith(".weight") and t.dim() == 2
            and not any(s in k for s in ("embed_tokens", "lm_head", "norm", "mlp.gate.weight"))]


def test_quantized_scales_the_tree_has_no_place_for(saved, tmp_path: Path) -> None:
    config = fx.make_config("llama")
    state = fx.read_state(saved("llama"))
    quantized = _linear_weights(state)
    folder = fx.write_state(tmp_path / "fp8", fx.fp8_quantize(state, quantized), config=config)
    report = checkpoint_coverage(fx.build_meta(config), folder)

    scales = {t.key: t.rule for t in report.unconsumed}
    assert set(scales) == {k.removesuffix(".weight") + ".weight_scale_inv" for k in quantized}
    rule = scales["model.layers.0.self_attn.q_proj.weight_scale_inv"]
    assert rule == ("quantization scale of model.layers.0.self_attn.q_proj.weight (the config declares no "
                    "quantization_config): the tree has no place for it")
    dtype = {m.target: m for m in report.mismatches_of("dtype")}
    assert set(dtype) == set(quantized)
    assert dtype["model.layers.0.self_attn.q_proj.weight"].checkpoint == "F8_E4M3"
    assert "dequantizing" in dtype["model.layers.0.self_attn.q_proj.weight"].rule
    assert any(h.startswith("quantized checkpoint:") for h in report.hints)


def test_a_tree_prepared_by_the_quantizer_consumes_the_scales(saved, tmp_path: Path) -> None:
    from transformers.quantizers import AutoHfQuantizer

    fp8 = {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [8, 8]}
    config = fx.make_config("deepseek_v3", quantization_config=fp8)
    state = fx.read_state(saved("deepseek_v3"))
    folder = fx.write_state(tmp_path / "fp8", fx.fp8_quantize(state, _linear_weights(state)), config=config)
    plain = checkpoint_coverage(fx.build_meta(config, torch.bfloat16), folder)
    assert not plain.ok and all("quantization_config: fp8" in t.rule for t in plain.unconsumed)

    tree = fx.build_meta(config, torch.bfloat16)
    quantizer = AutoHfQuantizer.from_config(config.quantization_config, pre_quantized=True)
    quantizer.preprocess_model(tree, dtype=torch.bfloat16)  # what from_pretrained does before loading
    tree.hf_quantizer = quantizer
    report = checkpoint_coverage(tree, folder)
    assert report.ok, report.format()
    assert sum(report.rules.values()) == report.checkpoint_tensors  # scales included (the rules differ by version)


def test_ties_and_the_class_ignore_rules_are_allowed_not_problems(saved, tmp_path: Path) -> None:
    mixtral = checkpoint_coverage(fx.build_meta(fx.make_config("mixtral")), saved("mixtral"))
    assert mixtral.ok
    assert [(a.key, a.side, a.rule) for a in mixtral.allowed] == [
        ("lm_head.weight", "model", "tied to model.embed_tokens.weight")
    ]
    assert "allowed (not problems): 1 model tensor tied" in mixtral.format()

    config = fx.make_config("deepseek_v3")  # DeepSeek-V3 checkpoints carry an MTP layer 61 the class ignores
    state = fx.read_state(saved("deepseek_v3"))
    state["model.layers.61.eh_proj.weight"] = torch.zeros(16, 32)
    report = checkpoint_coverage(fx.build_meta(config), fx.write_state(tmp_path / "mtp", state, config=config))
    assert report.ok
    assert [(a.key, a.rule) for a in report.allowed] == [
        ("model.layers.61.eh_proj.weight",
         "ignored on load: DeepseekV3ForCausalLM._keys_to_ignore_on_load_unexpected 'model\\\\.layers\\\\.61.*'")
    ]

    tiny = fx.TinyMoeConfig(router_bias=True)
    state = {k: t for k, t in fx.read_state(fx.save_random(tiny, tmp_path / "tiny")).items() if "router.bias" not in k}
    report = checkpoint_coverage(fx.build_meta(tiny), fx.write_state(tmp_path / "no_bias", state, shards=1))
    assert report.ok
    assert {a.key for a in report.allowed} == {"model.layers.0.router.bias", "model.layers.1.router.bias"}
    assert all("_keys_to_ignore_on_load_missing" in a.rule for a in report.allowed)


def test_float_casts_are_notes_and_kind_changes_are_mismatches(saved, tmp_path: Path) -> None:
    config = fx.make_config("llama")
    bf16 = checkpoint_coverage(fx.build_meta(config, torch.bfloat16), saved("llama"))
    assert bf16.ok and bf16.casts == {"F32 -> bfloat16": bf16.checkpoint_tensors}

    state = fx.read_state(saved("llama"))
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
    report = checkpoint_coverage(fx.build_meta(config), fx.write_state(tmp_path / "int", state, shards=1))
    [mismatch] = report.mismatches
    assert (mismatch.kind, mismatch.target, mismatch.checkpoint, mismatch.model) == (
        "dtype", "model.norm.weight", "I32", "float32")


def test_report_text_is_bounded_and_json_is_complete(tmp_path: Path) -> None:
    folder = fx.save_random(fx.TinyMoeConfig(experts_layout="per_expert"), tmp_path / "per_expert")
    report = checkpoint_coverage(fx.build_meta(fx.TinyMoeConfig()), folder)
    text = report.format(max_items=5)
    assert text.splitlines()[0] == (
        f"checkpoint does not fill the tree: 28 problems (24 unconsumed, 4 unfilled) between {folder} "
        "(30 tensors) and TinyMoeForCausalLM (10 tensors)"
    )
    assert "... 19 more (to_dict() lists all)" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["problems"] == 28
    assert len(data["unconsumed"]) == 24 and len(data["unfilled"]) == 4
    assert data["unconsumed"][0] == {
        "key": "model.layers.0.experts.0.down_proj.weight", "file": "model.safetensors", "shape": [8, 12],
        "dtype": "F32", "mapped_to": "model.layers.0.experts.0.down_proj.weight",
        "rule": "no tensor of this name in the tree",
    }


def test_require_coverage_refuses_with_the_report(tmp_path: Path) -> None:
    folder = fx.save_random(fx.TinyMoeConfig(experts_layout="fused"), tmp_path / "fused")
    tree = fx.build_meta(fx.TinyMoeConfig(experts_layout="per_expert"))
    with pytest.raises(CheckpointCoverageError) as caught:
        require_coverage(tree, folder)
    assert isinstance(caught.value, HybridloadError) and isinstance(caught.value, RuntimeError)
    assert caught.value.report is not None and not caught.value.report.ok
    assert "Nothing was read" in str(caught.value) and "stores them fused" in str(caught.value)
    assert require_coverage(fx.build_meta(fx.TinyMoeConfig()), folder).ok


def test_bad_input_gets_typed_errors(saved) -> None:
    with pytest.raises(PlanError, match="PreTrainedModel"):
        checkpoint_coverage(torch.nn.Linear(2, 2), saved("llama"))
    with pytest.raises(PlanError, match="no checkpoint given"):
        checkpoint_coverage(fx.build_meta(fx.make_config("llama")))
    with pytest.raises(PlanError, match="key_mapping"):
        checkpoint_coverage(fx.build_meta(fx.make_config("llama")), saved("llama"), key_mapping={"(": "x"})


def test_an_index_file_gives_the_same_report_as_the_folder(saved, tmp_path: Path) -> None:
    folder = saved("deepseek_v3")
    index = local_index(folder)
    index.write(tmp_path / "index.json")
    again = TensorIndex.read(tmp_path / "index.json")
    assert again == index and again.to_json() == index.to_json()
    tree = fx.build_meta(fx.make_config("deepseek_v3"))
    from_folder = checkpoint_coverage(tree, folder).to_dict()
    from_file = checkpoint_coverage(tree, tmp_path / "index.json").to_dict()
    assert from_file == from_folder
    assert checkpoint_coverage(tree, index).to_dict() == from_folder


def test_the_plan_path_checks_the_bundled_remote_code_example(tmp_path: Path) -> None:
    """coverage_for_plan: resolve, meta-build through the kernel shim, check the plan's own checkpoint."""
    import shutil

    from hybridload.serve.coverage import coverage_for_plan
    from hybridload.examples import path

    meta, report = coverage_for_plan(str(path("hybrid_tiny")), trust_remote_code=True)
    assert report.ok and report.model == "NemotronHForCausalLM"
    assert report.checkpoint_tensors == report.model_tensors == len(fx.read_state(path("hybrid_tiny")))
    assert checkpoint_coverage(meta).to_dict() == report.to_dict()  # default: the plan's folder

    copy = tmp_path / "hybrid_tiny"
    shutil.copytree(path("hybrid_tiny"), copy)
    state = fx.read_state(copy)
    dropped = sorted(state)[-1]
    del state[dropped]
    (copy / "model.safetensors").unlink()
    fx.write_state(copy, state, shards=1)
    _, broken = coverage_for_plan(str(copy), trust_remote_code=True)
    assert [t.key for t in broken.unfilled] == [dropped]
