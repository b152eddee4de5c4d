"""The files of the bundled example: lookup helper, tokenizer, checkpoint, config, and deterministic regeneration."""
from __future__ import annotations

import hashlib
import json
import math

import pytest

import hybridload
import hybridload.examples
from hybridload.errors import PlanError

FILES = [
    "config.json",
    "generation_config.json",
    "configuration_nemotron_h.py",
    "modeling_nemotron_h.py",
    "tokenizer.json",
    "tokenizer_config.json",
    "model.safetensors",
    "reference_signature.json",
    "make_example.py",
]


def test_path_finds_the_bundled_example(example_dir):
    assert hybridload.examples.names() == ["hybrid_tiny", "hybrid_tiny_nvfp4"]
    assert example_dir.name == "hybrid_tiny" and example_dir.is_dir()
    assert all((example_dir / name).is_file() for name in FILES)


@pytest.mark.parametrize("name", ["nope", "../examples", "", None])
def test_unknown_example_is_a_typed_error_that_lists_the_examples(name):
    with pytest.raises(PlanError, match="hybrid_tiny"):
        hybridload.examples.path(name)


def test_config_declares_the_nemotron_h_layout(example_dir):
    config = json.loads((example_dir / "config.json").read_text())
    assert config["model_type"] == "nemotron_h"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_nemotron_h.NemotronHConfig",
        "AutoModelForCausalLM": "modeling_nemotron_h.NemotronHForCausalLM",
    }
    pattern = config["hybrid_override_pattern"]
    assert len(pattern) == config["num_hidden_layers"] == 8
    assert set(pattern) == {"M", "-", "*", "E"}
    assert config["hidden_size"] == 64 and config["vocab_size"] == 512
    generation = json.loads((example_dir / "generation_config.json").read_text())
    assert generation["eos_token_id"] == config["eos_token_id"]


def test_modeling_file_imports_kernels_like_nemotron_h(example_dir):
    source = (example_dir / "modeling_nemotron_h.py").read_text()
    assert "from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn\nexcept ImportError:\n    raise ImportError(" in source
    assert "if is_mamba_2_ssm_available():\n    from mamba_ssm.ops.triton.selective_state_update import" in source
    assert "if is_causal_conv1d_available():\n    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update" in source
    assert "is_fast_path_available = all(" in source


def test_checkpoint_is_small_and_in_the_nemotron_h_layout(example_dir):
    from safetensors import safe_open

    path = example_dir / "model.safetensors"
    assert path.stat().st_size < 2 * 1024 * 1024  # well under the 5 MB budget
    with safe_open(str(path), framework="pt") as checkpoint:
        keys = set(checkpoint.keys())
        dtypes = {str(checkpoint.get_slice(k).get_dtype()) for k in keys}
        numel = sum(math.prod(checkpoint.get_slice(k).get_shape()) for k in keys)
    assert dtypes == {"F32"}
    # per-expert nn.Linear experts, router and shared expert, as real Nemotron-H MoE checkpoints store them
    for expert in range(4):
        assert f"backbone.layers.5.mixer.experts.{expert}.up_proj.weight" in keys
        assert f"backbone.layers.5.mixer.experts.{expert}.down_proj.weight" in keys
    assert {"backbone.layers.5.mixer.gate.weight", "backbone.layers.5.mixer.gate.e_score_correction_bias",
            "backbone.layers.5.mixer.shared_experts.up_proj.weight"} <= keys
    assert {"backbone.layers.0.mixer.A_log", "backbone.layers.0.mixer.conv1d.weight", "backbone.layers.0.mixer.norm.weight",
            "backbone.layers.3.mixer.q_proj.weight", "backbone.embeddings.weight", "lm_head.weight"} <= keys
    reference = hybridload.TreeSignature.read(example_dir / "reference_signature.json")
    assert set(reference.parameters) == keys and reference.numel() == numel


def test_tokenizer_round_trips(example_dir):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    tokenizer = AutoTokenizer.from_pretrained(example_dir)
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert len(tokenizer) == 512
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    texts = [
        "the model loads the weights on the GPU.",
        "Mamba2 + MoE: M-M*ME-M, 42 layers? no, 8.",
        "  leading spaces, tabs\tand\nnewlines  ",
        "ünïcödé, 中文, emoji 🙂 and code: def f(x): return x**2",
    ]
    for text in texts:
        ids = tokenizer(text).input_ids
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # trained merges compress the text it was trained on
    assert len(tokenizer(texts[0]).input_ids) < len(texts[0]) / 2
    batch = tokenizer([texts[0], "Hi"], padding=True)
    assert tokenizer.padding_side == "left"
    assert batch.input_ids[1][0] == tokenizer.pad_token_id and batch.attention_mask[1][0] == 0
    assert batch.input_ids[1][-2:] == tokenizer("Hi").input_ids[-2:]


def test_make_example_regenerates_the_shipped_files(example_runs, example_dir):
    regenerated = example_runs["server"].check().out / "regenerated" / "hybrid_tiny"
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        shipped = hashlib.sha256((example_dir / name).read_bytes()).hexdigest()
        fresh = hashlib.sha256((regenerated / name).read_bytes()).hexdigest()
        assert fresh == shipped, f"{name} differs from what make_example.py produces; run it and commit the result"
