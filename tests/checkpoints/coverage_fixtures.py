"""Tiny models and checkpoints for the coverage tests: each drift a real checkpoint can have, written locally.

* native transformers MoE models saved by ``save_pretrained`` (per-expert on disk, fused in the tree: the
  conversion mapping must be applied);
* ``TinyMoeForCausalLM``: a model outside transformers (like remote code, no conversion mapping applies) whose
  experts are fused or per expert by config, so a checkpoint of one layout can be checked against the other;
* checkpoints written key by key (``write_state``) to drop, add, rename or quantize tensors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

MOE_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2_moe": dict(
        vocab_size=64, hidden_size=16, intermediate_size=32, moe_intermediate_size=8,
        shared_expert_intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        num_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
    ),
    "mixtral": dict(
        vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
        tie_word_embeddings=True,
    ),
    "deepseek_v3": dict(
        vocab_size=64, hidden_size=16, intermediate_size=32, moe_intermediate_size=8, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, n_routed_experts=4, n_shared_experts=1,
        num_experts_per_tok=2, first_k_dense_replace=1, q_lora_rank=8, kv_lora_rank=8, qk_rope_head_dim=4,
        qk_nope_head_dim=4, v_head_dim=4, n_group=1, topk_group=1, max_position_embeddings=64,
    ),
    "nemotron_h": dict(
        vocab_size=64, hidden_size=16, num_hidden_layers=4, hybrid_override_pattern="M*E-",
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, mamba_num_heads=4, mamba_head_dim=8,
        ssm_state_size=8, n_groups=1, mamba_d_conv=4, expand=2, n_routed_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=8, moe_shared_expert_intermediate_size=8, intermediate_size=32, n_group=1,
        topk_group=1,
    ),
    "llama": dict(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=False,
    ),
}


def make_config(model_type: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **{**MOE_CONFIGS[model_type], **overrides})


def causal_lm_class(config: Any) -> type:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if isinstance(config, TinyMoeConfig):
        return TinyMoeForCausalLM
    return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]


def build_meta(config: Any, dtype: torch.dtype = torch.float32) -> Any:
    """The tree from_pretrained builds before loading (class ctor under the dtype, on meta)."""
    from transformers.modeling_utils import local_torch_dtype

    cls = causal_lm_class(config)
    with local_torch_dtype(dtype, cls.__name__), torch.device("meta"):
        return cls(config)


def save_random(config: Any, folder: Path, *, seed: int = 0, shard_size: str = "20KB") -> Path:
    """Random weights through save_pretrained (transformers writes native MoE experts per expert), sharded."""
    torch.manual_seed(seed)
    model = causal_lm_class(config)(config)
    model.save_pretrained(folder, max_shard_size=shard_size)
    return folder


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        state.update(load_file(shard))
    return state


def write_state(folder: Path, state: dict[str, torch.Tensor], *, config: Any = None, shards: int = 2) -> Path:
    """A safetensors checkpoint of exactly these tensors: ``shards`` files and an index (one file if 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        config.save_pretrained(folder)
    keys = sorted(state)
    if shards == 1:
        save_file({k: state[k].contiguous() for k in keys}, str(folder / "model.safetensors"))
        return folder
    per_shard = -(-len(keys) // shards)
    weight_map = {}
    for number in range(shards):
        name = f"model-{number + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[number * per_shard:(number + 1) * per_shard]}
        save_file(part, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": sum(t.nbytes for t in state.values())}, "weight_map": weight_map})
    )
    return folder


def fp8_quantize(state: dict[str, torch.Tensor], keys: list[str], block: int = 8) -> dict[str, torch.Tensor]:
    """Fine-grained FP8 as DeepSeek-V3 ships it: each listed weight in float8_e4m3fn, plus its
    ``weight_scale_inv`` (one float32 per block x block tile)."""
    out = dict(state)
    for key in keys:
        weight = state[key].float()
        rows, cols = weight.shape
        scale = torch.ones(-(-rows // block), -(-cols // block))
        out[key] = weight.to(torch.float8_e4m3fn)
        out[key.removesuffix(".weight") + ".weight_scale_inv"] = scale
    return out


# -- a model outside transformers whose expert layout is chosen by config -----------------------------------------


class TinyMoeConfig(PretrainedConfig):
    model_type = "hl_tiny_moe"

    def __init__(
        self,
        vocab_size: int = 32,
        hidden_size: int = 8,
        intermediate_size: int = 12,
        num_hidden_layers: int = 2,
        num_experts: int = 4,
        experts_layout: str = "fused",
        router_bias: bool = False,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_experts = num_experts
        self.experts_layout = experts_layout
        self.router_bias = router_bias
        super().__init__(**kwargs)


class _Expert(nn.Module):
    def __init__(self, config: TinyMoeConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)


class _FusedExperts(nn.Module):
    def __init__(self, config: TinyMoeConfig) -> None:
        super().__init__()
        e, h, i = config.num_experts, config.hidden_size, config.intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))
        self.down_proj = nn.Parameter(torch.empty(e, h, i))


class _Layer(nn.Module):
    def __init__(self, config: TinyMoeConfig) -> None:
        super().__init__()
        self.router = nn.Linear(config.hidden_size, config.num_experts, bias=config.router_bias)
        if config.experts_layout == "fused":
            self.experts = _FusedExperts(config)
        else:
            self.experts = nn.ModuleList(_Expert(config) for _ in range(config.num_experts))


class _Backbone(nn.Module):
    def __init__(self, config: TinyMoeConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size)


class TinyMoeForCausalLM(PreTrainedModel):
    config_class = TinyMoeConfig
    base_model_prefix = "model"
    _keys_to_ignore_on_load_missing = [r"\.router\.bias$"]

    def __init__(self, config: TinyMoeConfig) -> None:
        super().__init__(config)
        self.model = _Backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        for param in module.parameters(recurse=False):
            if param.device.type != "meta":
                with torch.no_grad():
                    param.normal_(0.0, 0.02)
