"""Tiny MoE models, per-expert sharded checkpoints and comparison helpers for the streaming-loader tests.

Test modules reach the helpers through the ``kit`` fixture (pytest runs with --import-mode=importlib,
so a test module cannot import this conftest).

Checkpoints are written by transformers' own ``save_pretrained``, which reverts the fused expert
parameters to the Hub's per-expert layout (its reverse conversion); every fixture asserts that the
layout on disk really is per-expert, so the loader's conversions are exercised. Written once per session.
"""
from __future__ import annotations

import json
import shutil
import types
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from safetensors import safe_open

# model_type -> (config kwargs, substring only per-expert checkpoint keys have, fused parameter suffixes)
MOE_MODELS: dict[str, tuple[dict[str, Any], str, tuple[str, ...]]] = {
    "qwen2_moe": (
        dict(
            vocab_size=96, hidden_size=16, intermediate_size=32, moe_intermediate_size=8,
            shared_expert_intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            num_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
        ),
        ".mlp.experts.3.gate_proj.weight",
        ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"),
    ),
    "mixtral": (
        dict(
            vocab_size=96, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
            tie_word_embeddings=True,
        ),
        ".block_sparse_moe.experts.3.w1.weight",
        ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"),
    ),
    "deepseek_v3": (
        dict(
            vocab_size=96, hidden_size=16, intermediate_size=32, moe_intermediate_size=8, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, n_routed_experts=4, n_shared_experts=1,
            num_experts_per_tok=2, first_k_dense_replace=1, q_lora_rank=8, kv_lora_rank=8, qk_rope_head_dim=4,
            qk_nope_head_dim=4, v_head_dim=4, n_group=1, topk_group=1, max_position_embeddings=64,
        ),
        ".mlp.experts.3.up_proj.weight",
        ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"),
    ),
    # Nemotron-H-style hybrid: Mamba2 mixer, attention, MoE (non-gated experts) and MLP layers;
    # checkpoints use the original "backbone." prefix and per-expert up/down projections.
    "nemotron_h": (
        dict(
            vocab_size=96, hidden_size=16, num_hidden_layers=4, hybrid_override_pattern="M*E-",
            num_attention_heads=2, num_key_value_heads=1, head_dim=8, mamba_num_heads=4, mamba_head_dim=8,
            ssm_state_size=8, n_groups=1, mamba_d_conv=4, expand=2, n_routed_experts=4, num_experts_per_tok=2,
            moe_intermediate_size=8, moe_shared_expert_intermediate_size=8, intermediate_size=32, n_group=1,
            topk_group=1,
        ),
        "backbone.layers.2.mixer.experts.3.up_proj.weight",
        ("mixer.experts.up_proj", "mixer.experts.down_proj"),
    ),
}
SHARD_SIZE = "24KB"  # small enough that every tiny model spans several shards


def make_config(model_type: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    kwargs = dict(MOE_MODELS[model_type][0])
    kwargs.update(overrides)
    return AutoConfig.for_model(model_type, **kwargs)


def model_class(config: Any) -> type:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]


def build_meta(config: Any, dtype: torch.dtype = torch.float32) -> Any:
    """A meta build the way from_pretrained makes one (class ctor under the dtype, on meta)."""
    from transformers.modeling_utils import local_torch_dtype

    cls = model_class(config)
    with local_torch_dtype(dtype, cls.__name__), torch.device("meta"):
        return cls(config)


def write_checkpoint(config: Any, folder: Path, *, seed: int = 0, shard_size: str = SHARD_SIZE) -> Path:
    """Random weights saved by save_pretrained (per-expert layout), sharded."""
    torch.manual_seed(seed)
    model = model_class(config)(config)
    # non-trivial values for tensors whose init is constant (norms, biases), so a mix-up would show
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param))
    model.save_pretrained(folder, max_shard_size=shard_size)
    return folder


def checkpoint_keys(folder: Path) -> dict[str, str]:
    """checkpoint key -> shard file name."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return json.loads(index.read_text())["weight_map"]
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        return {key: "model.safetensors" for key in fh.keys()}


def all_tensors(model: Any) -> dict[str, torch.Tensor]:
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return tensors


def assert_bit_identical(expected: Any, actual: Any) -> None:
    """Every parameter and buffer (persistent or not): same names, dtype, device, shape and bits."""
    want, got = all_tensors(expected), all_tensors(actual)
    assert sorted(got) == sorted(want)
    differing = [
        name
        for name, tensor in want.items()
        if got[name].dtype != tensor.dtype
        or got[name].device != tensor.device
        or got[name].shape != tensor.shape
        or not torch.equal(got[name].view(torch.uint8) if tensor.dtype.is_floating_point else got[name],
                           tensor.view(torch.uint8) if tensor.dtype.is_floating_point else tensor)
    ]
    assert differing == []
    assert actual.training == expected.training


def assert_all_meta(model: Any) -> None:
    """Nothing half-loaded: every parameter and buffer the meta build had is still on meta."""
    real = [name for name, t in all_tensors(model).items() if t.device.type != "meta"]
    assert real == []


@pytest.fixture(scope="session")
def kit() -> types.SimpleNamespace:
    return types.SimpleNamespace(
        MOE_MODELS=MOE_MODELS,
        make_config=make_config,
        model_class=model_class,
        build_meta=build_meta,
        write_checkpoint=write_checkpoint,
        checkpoint_keys=checkpoint_keys,
        all_tensors=all_tensors,
        assert_bit_identical=assert_bit_identical,
        assert_all_meta=assert_all_meta,
    )


@pytest.fixture(scope="session")
def moe_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """model_type -> folder of a per-expert, multi-shard checkpoint (written on first use)."""
    written: dict[str, Path] = {}

    def get(model_type: str) -> Path:
        if model_type not in written:
            folder = write_checkpoint(make_config(model_type), tmp_path_factory.mktemp(model_type))
            keys = checkpoint_keys(folder)
            marker = MOE_MODELS[model_type][1]
            assert any(key.endswith(marker) for key in keys), f"{model_type}: not a per-expert checkpoint"
            assert not any(key.endswith(f) for key in keys for f in MOE_MODELS[model_type][2])
            assert len(set(keys.values())) >= 2, "checkpoint must be sharded"
            written[model_type] = folder
        return written[model_type]

    return get


@pytest.fixture
def checkpoint_copy(tmp_path: Path) -> Callable[[Path], Path]:
    """A writable copy of a session checkpoint, for tests that damage it."""

    def copy(folder: Path) -> Path:
        target = tmp_path / folder.name
        shutil.copytree(folder, target)
        return target

    return copy
