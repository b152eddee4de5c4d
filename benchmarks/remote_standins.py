"""Remote-code model folders at the widths of published checkpoints, written locally (nothing from the Hub).

Each writer puts a ``trust_remote_code`` folder (``config.json`` with ``auto_map``, ``configuration_*.py``,
``modeling_*.py``) at ``folder`` and returns it. The modeling files are written for this benchmark; they keep
what decides the cost of a meta build of the real remote code:

* ``write_deepseek_v3`` — the DeepSeek-V3/R1 remote-code pattern: every routed expert is a module with its
  own three ``nn.Linear`` (256 experts, 58 MoE layers: 75,457 modules, 45,033 ``nn.Linear`` at full width), a
  gate whose own ``reset_parameters`` calls ``nn.init.kaiming_uniform_``, RMSNorms made with ``torch.ones``,
  a YaRN rotary embedding per layer whose ``inv_freq``/``cos_cached``/``sin_cached`` buffers are computed in
  ``__init__`` (163,840 positions), an ``_init_weights`` that writes ``weight.data`` in place, and
  ``post_init`` called by both the backbone and the causal-LM head.
* ``write_kimi_linear`` — the Kimi-Linear-48B-A3B pattern: KDA layers with three fla ``ShortConvolution``
  and a ``FusedRMSNormGated`` each (fla imported at module level; stood in for without fla), an ``A_log``
  drawn with ``uniform_`` in ``__init__``, MLA layers, and 256 per-expert ``nn.Linear`` MLPs per MoE layer.
* ``write_nemotron_h`` — hybridload's bundled Nemotron-H-style remote code (Mamba2 + attention + per-expert
  MoE, mamba_ssm imported at module level) with a Nemotron-3-Nano-30B-A3B-sized config.

Keyword arguments override config values, so tests can build the same code at tiny widths.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------------
# DeepSeek-V3 / R1 (config.json values of deepseek-ai/DeepSeek-V3, without its fp8 quantization_config)
# --------------------------------------------------------------------------------------------------

DEEPSEEK_V3_CONFIG: dict[str, Any] = {
    "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1,
    "n_routed_experts": 256, "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8,
    "topk_group": 4, "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3,
    "norm_topk_prob": True, "scoring_func": "sigmoid", "hidden_act": "silu", "max_position_embeddings": 163840,
    "initializer_range": 0.02, "rms_norm_eps": 1e-6, "rope_theta": 10000,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "attention_bias": False, "attention_dropout": 0.0, "tie_word_embeddings": False, "dtype": "bfloat16",
    "bos_token_id": 0, "eos_token_id": 1,
}

_DEEPSEEK_CONFIGURATION = '''
from transformers import PretrainedConfig


class DeepseekV3Config(PretrainedConfig):
    model_type = "deepseek_v3"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
                 num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128, n_shared_experts=1,
                 n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536,
                 qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, topk_method="noaux_tc", n_group=8,
                 topk_group=4, num_experts_per_tok=8, moe_layer_freq=1, first_k_dense_replace=3,
                 norm_topk_prob=True, scoring_func="sigmoid", hidden_act="silu", max_position_embeddings=4096,
                 initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True, pad_token_id=None, bos_token_id=0,
                 eos_token_id=1, tie_word_embeddings=False, rope_theta=10000.0, rope_scaling=None,
                 attention_bias=False, attention_dropout=0.0, **kwargs):
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.moe_intermediate_size = moe_intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.n_shared_experts = n_shared_experts
        self.n_routed_experts = n_routed_experts
        self.routed_scaling_factor = routed_scaling_factor
        self.kv_lora_rank = kv_lora_rank
        self.q_lora_rank = q_lora_rank
        self.qk_rope_head_dim = qk_rope_head_dim
        self.v_head_dim = v_head_dim
        self.qk_nope_head_dim = qk_nope_head_dim
        self.topk_method = topk_method
        self.n_group = n_group
        self.topk_group = topk_group
        self.num_experts_per_tok = num_experts_per_tok
        self.moe_layer_freq = moe_layer_freq
        self.first_k_dense_replace = first_k_dense_replace
        self.norm_topk_prob = norm_topk_prob
        self.scoring_func = scoring_func
        self.num_key_value_heads = num_key_value_heads if num_key_value_heads is not None else num_attention_heads
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
'''

_DEEPSEEK_MODELING = '''
"""DeepSeek-V3-style model: per-expert nn.Linear MoE, MLA attention, YaRN rotary buffers built in __init__."""
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

from .configuration_deepseek import DeepseekV3Config


class DeepseekV3RMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon)).to(dtype)


def yarn_correction_dim(num_rotations, dim, base, max_position_embeddings):
    return (dim * math.log(max_position_embeddings / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def yarn_correction_range(low_rot, high_rot, dim, base, max_position_embeddings):
    low = math.floor(yarn_correction_dim(low_rot, dim, base, max_position_embeddings))
    high = math.ceil(yarn_correction_dim(high_rot, dim, base, max_position_embeddings))
    return max(low, 0), min(high, dim - 1)


def yarn_mscale(scale=1.0, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_ramp(low, high, dim):
    if low == high:
        high += 0.001
    ramp = (torch.arange(dim, dtype=torch.float32) - low) / (high - low)
    return torch.clamp(ramp, 0, 1)


class DeepseekV3YarnRotaryEmbedding(nn.Module):
    """inv_freq and the cos/sin tables for every position are computed (and registered) in __init__."""

    def __init__(self, dim, max_position_embeddings, base, scaling_factor, original_max_position_embeddings,
                 beta_fast, beta_slow, mscale, mscale_all_dim, device=None):
        super().__init__()
        self.dim = dim
        self.max_position_embeddings = max_position_embeddings
        self.base = base
        self.scaling_factor = scaling_factor
        self.original_max_position_embeddings = original_max_position_embeddings
        self.beta_fast, self.beta_slow = beta_fast, beta_slow
        self.mscale, self.mscale_all_dim = mscale, mscale_all_dim
        self._set_cos_sin_cache(max_position_embeddings, device, torch.get_default_dtype())

    def _set_cos_sin_cache(self, seq_len, device, dtype):
        self.max_seq_len_cached = seq_len
        dim = self.dim
        freq_extra = 1.0 / (self.base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
        freq_inter = 1.0 / (
            self.scaling_factor * self.base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)
        )
        low, high = yarn_correction_range(self.beta_fast, self.beta_slow, dim, self.base,
                                          self.original_max_position_embeddings)
        mask = 1.0 - yarn_ramp(low, high, dim // 2).to(device=device, dtype=torch.float32)
        inv_freq = freq_inter * (1 - mask) + freq_extra * mask
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        t = torch.arange(seq_len, device=device, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        scale = float(yarn_mscale(self.scaling_factor, self.mscale) / yarn_mscale(self.scaling_factor, self.mscale_all_dim))
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", (emb.cos() * scale).to(dtype), persistent=False)
        self.register_buffer("sin_cached", (emb.sin() * scale).to(dtype), persistent=False)

    def forward(self, x, seq_len=None):
        return self.cos_cached[:seq_len].to(dtype=x.dtype), self.sin_cached[:seq_len].to(dtype=x.dtype)


class DeepseekV3MLP(nn.Module):
    def __init__(self, config, hidden_size=None, intermediate_size=None):
        super().__init__()
        self.hidden_size = config.hidden_size if hidden_size is None else hidden_size
        self.intermediate_size = config.intermediate_size if intermediate_size is None else intermediate_size
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class MoEGate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.n_routed_experts = config.n_routed_experts
        self.routed_scaling_factor = config.routed_scaling_factor
        self.n_group, self.topk_group = config.n_group, config.topk_group
        self.norm_topk_prob = config.norm_topk_prob
        self.weight = nn.Parameter(torch.empty((self.n_routed_experts, config.hidden_size)))
        if config.topk_method == "noaux_tc":
            self.e_score_correction_bias = nn.Parameter(torch.empty((self.n_routed_experts)))
        self.reset_parameters()

    def reset_parameters(self):
        import torch.nn.init as init

        init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, hidden_states):
        flat = hidden_states.view(-1, hidden_states.shape[-1])
        scores = F.linear(flat.float(), self.weight.float()).sigmoid()
        choice = scores + self.e_score_correction_bias.unsqueeze(0)
        groups = choice.view(flat.shape[0], self.n_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
        group_idx = torch.topk(groups, k=self.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(groups).scatter_(1, group_idx, 1)
        score_mask = group_mask.unsqueeze(-1).expand(flat.shape[0], self.n_group, self.n_routed_experts // self.n_group)
        choice = choice.masked_fill(~score_mask.reshape(flat.shape[0], -1).bool(), 0.0)
        topk_idx = torch.topk(choice, k=self.top_k, dim=-1, sorted=False)[1]
        topk_weight = scores.gather(1, topk_idx)
        if self.top_k > 1 and self.norm_topk_prob:
            topk_weight = topk_weight / (topk_weight.sum(dim=-1, keepdim=True) + 1e-20)
        return topk_idx, topk_weight * self.routed_scaling_factor


class DeepseekV3MoE(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_experts_per_tok = config.num_experts_per_tok
        self.experts = nn.ModuleList(
            [DeepseekV3MLP(config, intermediate_size=config.moe_intermediate_size) for _ in range(config.n_routed_experts)]
        )
        self.gate = MoEGate(config)
        if config.n_shared_experts is not None:
            self.shared_experts = DeepseekV3MLP(
                config, intermediate_size=config.moe_intermediate_size * config.n_shared_experts
            )

    def forward(self, hidden_states):
        shape = hidden_states.shape
        topk_idx, topk_weight = self.gate(hidden_states)
        flat = hidden_states.view(-1, shape[-1])
        out = torch.zeros_like(flat)
        for slot in range(topk_idx.shape[1]):
            for expert_idx, expert in enumerate(self.experts):
                chosen = (topk_idx[:, slot] == expert_idx).to(flat.dtype)[:, None]
                out = out + expert(flat) * chosen * topk_weight[:, slot, None].to(flat.dtype)
        return out.view(*shape) + self.shared_experts(hidden_states)


class DeepseekV3Attention(nn.Module):
    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.q_lora_rank = config.q_lora_rank
        self.qk_rope_head_dim = config.qk_rope_head_dim
        self.kv_lora_rank = config.kv_lora_rank
        self.v_head_dim = config.v_head_dim
        self.qk_nope_head_dim = config.qk_nope_head_dim
        self.q_head_dim = config.qk_nope_head_dim + config.qk_rope_head_dim
        if self.q_lora_rank is None:
            self.q_proj = nn.Linear(self.hidden_size, self.num_heads * self.q_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(self.hidden_size, config.q_lora_rank, bias=config.attention_bias)
            self.q_a_layernorm = DeepseekV3RMSNorm(config.q_lora_rank)
            self.q_b_proj = nn.Linear(config.q_lora_rank, self.num_heads * self.q_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(
            self.hidden_size, config.kv_lora_rank + config.qk_rope_head_dim, bias=config.attention_bias
        )
        self.kv_a_layernorm = DeepseekV3RMSNorm(config.kv_lora_rank)
        self.kv_b_proj = nn.Linear(
            config.kv_lora_rank, self.num_heads * (self.qk_nope_head_dim + self.v_head_dim), bias=False
        )
        self.o_proj = nn.Linear(self.num_heads * self.v_head_dim, self.hidden_size, bias=config.attention_bias)
        scaling = config.rope_scaling or {}
        self.rotary_emb = DeepseekV3YarnRotaryEmbedding(
            self.qk_rope_head_dim,
            max_position_embeddings=config.max_position_embeddings,
            base=config.rope_theta,
            scaling_factor=scaling.get("factor", 1.0),
            original_max_position_embeddings=scaling.get("original_max_position_embeddings", 4096),
            beta_fast=scaling.get("beta_fast", 32),
            beta_slow=scaling.get("beta_slow", 1),
            mscale=scaling.get("mscale", 1.0),
            mscale_all_dim=scaling.get("mscale_all_dim", 0.0),
        )
        self.softmax_scale = self.q_head_dim ** (-0.5)
        if scaling.get("mscale_all_dim"):
            factor = yarn_mscale(scaling["factor"], scaling["mscale_all_dim"])
            self.softmax_scale = self.softmax_scale * factor * factor

    def forward(self, hidden_states, **kwargs):
        bsz, q_len, _ = hidden_states.shape
        if self.q_lora_rank is None:
            q = self.q_proj(hidden_states)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(hidden_states)))
        q = q.view(bsz, q_len, self.num_heads, self.q_head_dim).transpose(1, 2)
        compressed, k_pe = torch.split(self.kv_a_proj_with_mqa(hidden_states), [self.kv_lora_rank, self.qk_rope_head_dim], -1)
        kv = self.kv_b_proj(self.kv_a_layernorm(compressed)).view(bsz, q_len, self.num_heads, -1).transpose(1, 2)
        k_nope, value = torch.split(kv, [self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        k_pe = k_pe.view(bsz, q_len, 1, self.qk_rope_head_dim).transpose(1, 2).expand(-1, self.num_heads, -1, -1)
        key = torch.cat([k_nope, k_pe], dim=-1)
        out = F.scaled_dot_product_attention(q, key, F.pad(value, [0, self.q_head_dim - self.v_head_dim]),
                                             is_causal=True, scale=self.softmax_scale)
        return self.o_proj(out[..., : self.v_head_dim].transpose(1, 2).reshape(bsz, q_len, -1))


class DeepseekV3DecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = DeepseekV3Attention(config=config, layer_idx=layer_idx)
        moe = (config.n_routed_experts is not None and layer_idx >= config.first_k_dense_replace
               and layer_idx % config.moe_layer_freq == 0)
        self.mlp = DeepseekV3MoE(config) if moe else DeepseekV3MLP(config)
        self.input_layernorm = DeepseekV3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = DeepseekV3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, **kwargs):
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class DeepseekV3PreTrainedModel(PreTrainedModel):
    config_class = DeepseekV3Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DeepseekV3DecoderLayer"]
    _skip_keys_device_placement = "past_key_values"
    _supports_sdpa = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()


class DeepseekV3Model(DeepseekV3PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([DeepseekV3DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = DeepseekV3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids=None, **kwargs):
        hidden_states = self.embed_tokens(input_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states))


class DeepseekV3ForCausalLM(DeepseekV3PreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.model = DeepseekV3Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, **kwargs):
        hidden = self.model(input_ids=input_ids).last_hidden_state
        return CausalLMOutputWithPast(logits=self.lm_head(hidden).float())
'''


def write_deepseek_v3(folder: str | Path, **overrides: Any) -> Path:
    """A DeepSeek-V3/R1-style remote-code folder (full widths unless ``overrides`` change them)."""
    config = {**DEEPSEEK_V3_CONFIG, **overrides}
    return _write(folder, "deepseek", "DeepseekV3", "deepseek_v3", _DEEPSEEK_CONFIGURATION, _DEEPSEEK_MODELING, config)


# --------------------------------------------------------------------------------------------------
# Kimi-Linear-48B-A3B (config.json values of moonshotai/Kimi-Linear-48B-A3B-Instruct)
# --------------------------------------------------------------------------------------------------

KIMI_LINEAR_CONFIG: dict[str, Any] = {
    "vocab_size": 163840, "hidden_size": 2304, "intermediate_size": 9216, "moe_intermediate_size": 1024,
    "num_hidden_layers": 27, "num_attention_heads": 32, "num_key_value_heads": 32, "num_experts": 256,
    "num_experts_per_token": 8, "num_shared_experts": 1, "first_k_dense_replace": 1, "moe_layer_freq": 1,
    "kv_lora_rank": 512, "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "rms_norm_eps": 1e-5, "hidden_act": "silu", "initializer_range": 0.02, "tie_word_embeddings": False,
    "dtype": "bfloat16",
    "linear_attn_config": {
        "full_attn_layers": [4, 8, 12, 16, 20, 24, 27],
        "kda_layers": [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15, 17, 18, 19, 21, 22, 23, 25, 26],
        "head_dim": 128, "num_heads": 32, "short_conv_kernel_size": 4,
    },
}

_KIMI_CONFIGURATION = '''
from transformers import PretrainedConfig


class KimiLinearConfig(PretrainedConfig):
    model_type = "kimi_linear"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, vocab_size=163840, hidden_size=4096, intermediate_size=11008, moe_intermediate_size=1024,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=None, num_experts=None,
                 num_experts_per_token=1, num_shared_experts=0, first_k_dense_replace=0, moe_layer_freq=1,
                 kv_lora_rank=None, q_lora_rank=None, qk_nope_head_dim=None, qk_rope_head_dim=None, v_head_dim=None,
                 rms_norm_eps=1e-6, hidden_act="silu", initializer_range=0.02, linear_attn_config=None,
                 tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.moe_intermediate_size = moe_intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.num_experts = num_experts
        self.num_experts_per_token = num_experts_per_token
        self.num_shared_experts = num_shared_experts
        self.first_k_dense_replace = first_k_dense_replace
        self.moe_layer_freq = moe_layer_freq
        self.kv_lora_rank = kv_lora_rank
        self.q_lora_rank = q_lora_rank
        self.qk_nope_head_dim = qk_nope_head_dim
        self.qk_rope_head_dim = qk_rope_head_dim
        self.v_head_dim = v_head_dim
        self.rms_norm_eps = rms_norm_eps
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.linear_attn_config = linear_attn_config
        super().__init__(tie_word_embeddings=tie_word_embeddings, pad_token_id=pad_token_id,
                         bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)

    def is_kda_layer(self, layer_idx):
        return self.linear_attn_config is not None and (layer_idx + 1) in self.linear_attn_config["kda_layers"]

    def is_moe_layer(self, layer_idx):
        return (self.num_experts is not None and layer_idx >= self.first_k_dense_replace
                and layer_idx % self.moe_layer_freq == 0)
'''

_KIMI_MODELING = '''
"""Kimi-Linear-style hybrid: KDA layers built from fla classes, MLA layers, per-expert nn.Linear MoE."""
import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

try:
    from fla.modules import FusedRMSNormGated, ShortConvolution
    from fla.ops.kda import chunk_kda, fused_recurrent_kda
    from fla.ops.kda.gate import fused_kda_gate
except ImportError:
    raise ImportError("Plese run `pip install -U fla-core`")

from .configuration_kimi import KimiLinearConfig


class KimiRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon)).to(dtype)


class KimiDeltaAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        lin = config.linear_attn_config
        self.hidden_size = config.hidden_size
        self.head_dim = lin["head_dim"]
        self.num_heads = lin["num_heads"]
        self.layer_idx = layer_idx
        size = self.head_dim * self.num_heads
        kernel = lin["short_conv_kernel_size"]
        self.q_proj = nn.Linear(self.hidden_size, size, bias=False)
        self.k_proj = nn.Linear(self.hidden_size, size, bias=False)
        self.v_proj = nn.Linear(self.hidden_size, size, bias=False)
        self.q_conv1d = ShortConvolution(hidden_size=size, kernel_size=kernel, activation="silu")
        self.k_conv1d = ShortConvolution(hidden_size=size, kernel_size=kernel, activation="silu")
        self.v_conv1d = ShortConvolution(hidden_size=size, kernel_size=kernel, activation="silu")
        self.A_log = nn.Parameter(torch.log(torch.empty(self.num_heads, dtype=torch.float32).uniform_(1, 16)).view(1, 1, -1, 1))
        self.f_a_proj = nn.Linear(self.hidden_size, self.head_dim, bias=False)
        self.f_b_proj = nn.Linear(self.head_dim, size, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(size, dtype=torch.float32))
        self.b_proj = nn.Linear(self.hidden_size, self.num_heads, bias=False)
        self.g_a_proj = nn.Linear(self.hidden_size, self.head_dim, bias=False)
        self.g_b_proj = nn.Linear(self.head_dim, size, bias=False)
        self.o_norm = FusedRMSNormGated(self.head_dim, eps=config.rms_norm_eps, activation="sigmoid")
        self.o_proj = nn.Linear(size, self.hidden_size, bias=False)

    def forward(self, hidden_states, **kwargs):
        q, _ = self.q_conv1d(x=self.q_proj(hidden_states), cache=None, output_final_state=False)
        k, _ = self.k_conv1d(x=self.k_proj(hidden_states), cache=None, output_final_state=False)
        v, _ = self.v_conv1d(x=self.v_proj(hidden_states), cache=None, output_final_state=False)
        g = fused_kda_gate(self.f_b_proj(self.f_a_proj(hidden_states)), self.A_log, self.head_dim, g_bias=self.dt_bias)
        beta = self.b_proj(hidden_states).float().sigmoid()
        split = lambda x: x.reshape(*x.shape[:-1], -1, self.head_dim)  # noqa: E731
        o, _ = chunk_kda(q=split(q), k=split(k), v=split(v), g=g, beta=beta, initial_state=None,
                         output_final_state=False, use_qk_l2norm_in_kernel=True)
        o = self.o_norm(o, split(self.g_b_proj(self.g_a_proj(hidden_states))))
        return self.o_proj(o.flatten(-2))


class KimiMLAAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.q_head_dim = config.qk_nope_head_dim + config.qk_rope_head_dim
        self.qk_nope_head_dim, self.qk_rope_head_dim = config.qk_nope_head_dim, config.qk_rope_head_dim
        self.v_head_dim, self.kv_lora_rank = config.v_head_dim, config.kv_lora_rank
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.q_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(config.hidden_size, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = KimiRMSNorm(self.kv_lora_rank)
        self.kv_b_proj = nn.Linear(self.kv_lora_rank, self.num_heads * (self.qk_nope_head_dim + self.v_head_dim), bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.v_head_dim, config.hidden_size, bias=False)

    def forward(self, hidden_states, **kwargs):
        bsz, q_len, _ = hidden_states.shape
        q = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.q_head_dim).transpose(1, 2)
        compressed, k_rot = torch.split(self.kv_a_proj_with_mqa(hidden_states), [self.kv_lora_rank, self.qk_rope_head_dim], -1)
        kv = self.kv_b_proj(self.kv_a_layernorm(compressed)).view(bsz, q_len, self.num_heads, -1).transpose(1, 2)
        k_nope, v = torch.split(kv, [self.qk_nope_head_dim, self.v_head_dim], -1)
        k_rot = k_rot.view(bsz, q_len, 1, self.qk_rope_head_dim).transpose(1, 2).expand(-1, self.num_heads, -1, -1)
        k = torch.cat([k_nope, k_rot], dim=-1)
        out = F.scaled_dot_product_attention(q, k, F.pad(v, [0, self.q_head_dim - self.v_head_dim]), is_causal=True)
        return self.o_proj(out[..., : self.v_head_dim].transpose(1, 2).reshape(bsz, q_len, -1))


class KimiMLP(nn.Module):
    def __init__(self, config, intermediate_size=None):
        super().__init__()
        size = intermediate_size or config.intermediate_size
        self.gate_proj = nn.Linear(config.hidden_size, size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, size, bias=False)
        self.down_proj = nn.Linear(size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class KimiMoEGate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_token
        self.weight = nn.Parameter(torch.empty((config.num_experts, config.hidden_size)))
        self.e_score_correction_bias = nn.Parameter(torch.empty(config.num_experts))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, hidden_states):
        scores = F.linear(hidden_states.float(), self.weight.float()).sigmoid()
        idx = torch.topk(scores + self.e_score_correction_bias, k=self.top_k, dim=-1, sorted=False)[1]
        return idx, scores.gather(-1, idx)


class KimiSparseMoeBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.experts = nn.ModuleList(
            [KimiMLP(config, intermediate_size=config.moe_intermediate_size) for _ in range(config.num_experts)]
        )
        self.gate = KimiMoEGate(config)
        self.shared_experts = KimiMLP(config, intermediate_size=config.moe_intermediate_size * config.num_shared_experts)

    def forward(self, hidden_states):
        idx, weight = self.gate(hidden_states)
        out = self.shared_experts(hidden_states)
        for expert_idx, expert in enumerate(self.experts):
            chosen = ((idx == expert_idx).to(weight.dtype) * weight).sum(-1, keepdim=True).to(hidden_states.dtype)
            out = out + expert(hidden_states) * chosen
        return out


class KimiDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.is_linear_attn = config.is_kda_layer(layer_idx)
        self.self_attn = KimiDeltaAttention(config, layer_idx) if self.is_linear_attn else KimiMLAAttention(config, layer_idx)
        self.mlp = KimiSparseMoeBlock(config) if config.is_moe_layer(layer_idx) else KimiMLP(config)
        self.input_layernorm = KimiRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = KimiRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states):
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class KimiPreTrainedModel(PreTrainedModel):
    config_class = KimiLinearConfig
    base_model_prefix = "model"
    _no_split_modules = ["KimiDecoderLayer"]
    _supports_flash_attn_2 = True
    _supports_flash_attn = True
    _supports_sdpa = True

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)


class KimiLinearModel(KimiPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([KimiDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = KimiRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(self, input_ids=None, **kwargs):
        hidden_states = self.embed_tokens(input_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states))


class KimiLinearForCausalLM(KimiPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.model = KimiLinearModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, **kwargs):
        return CausalLMOutputWithPast(logits=self.lm_head(self.model(input_ids=input_ids).last_hidden_state))
'''


def write_kimi_linear(folder: str | Path, **overrides: Any) -> Path:
    """A Kimi-Linear-style remote-code folder (needs fla, or hybridload's fla stand-ins, to build)."""
    config = {**KIMI_LINEAR_CONFIG, **overrides}
    return _write(folder, "kimi", "KimiLinear", "kimi_linear", _KIMI_CONFIGURATION, _KIMI_MODELING, config)


# --------------------------------------------------------------------------------------------------
# Nemotron-H (hybridload's bundled remote code) at Nemotron-3-Nano-30B-A3B widths
# --------------------------------------------------------------------------------------------------

NEMOTRON_H_CONFIG: dict[str, Any] = {
    "vocab_size": 131072, "hidden_size": 2688, "num_hidden_layers": 52,
    "hybrid_override_pattern": "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
    "intermediate_size": 1856, "mlp_hidden_act": "relu2", "num_attention_heads": 32, "num_key_value_heads": 2,
    "head_dim": 128, "attention_bias": False, "mlp_bias": False, "use_bias": False, "ssm_state_size": 128,
    "mamba_num_heads": 64, "mamba_n_groups": 8, "mamba_head_dim": 64, "mamba_d_conv": 4, "mamba_expand": 2,
    "mamba_hidden_act": "silu", "mamba_chunk_size": 128, "mamba_conv_bias": True, "mamba_proj_bias": False,
    "n_routed_experts": 128, "n_shared_experts": 1, "moe_intermediate_size": 1856,
    "moe_shared_expert_intermediate_size": 3712, "num_experts_per_tok": 6, "routed_scaling_factor": 2.5,
    "n_group": 1, "topk_group": 1, "norm_topk_prob": True, "layer_norm_epsilon": 1e-5,
    "initializer_range": 0.02, "residual_in_fp32": False, "tie_word_embeddings": False,
    "max_position_embeddings": 262144, "dtype": "bfloat16", "pad_token_id": 0, "bos_token_id": 1,
    "eos_token_id": 2,
}


def write_nemotron_h(folder: str | Path, **overrides: Any) -> Path:
    """hybridload's bundled Nemotron-H-style remote code with a Nemotron-3-Nano-30B-A3B-sized config."""
    from hybridload.examples import path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = path("hybrid_tiny")
    for name in ("configuration_nemotron_h.py", "modeling_nemotron_h.py"):
        shutil.copyfile(source / name, folder / name)
    config = {**NEMOTRON_H_CONFIG, **overrides}
    if "num_hidden_layers" in overrides and "hybrid_override_pattern" not in overrides:
        config["hybrid_override_pattern"] = NEMOTRON_H_CONFIG["hybrid_override_pattern"][: config["num_hidden_layers"]]
    payload = {
        "architectures": ["NemotronHForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_nemotron_h.NemotronHConfig",
            "AutoModelForCausalLM": "modeling_nemotron_h.NemotronHForCausalLM",
        },
        "model_type": "nemotron_h",
        **config,
    }
    (folder / "config.json").write_text(json.dumps(payload, indent=1))
    return folder


def _write(folder: str | Path, stem: str, prefix: str, model_type: str, configuration: str, modeling: str,
           config: dict[str, Any]) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"configuration_{stem}.py").write_text(configuration)
    (folder / f"modeling_{stem}.py").write_text(modeling)
    payload = {
        "architectures": [f"{prefix}ForCausalLM"],
        "auto_map": {
            "AutoConfig": f"configuration_{stem}.{prefix}Config",
            "AutoModel": f"modeling_{stem}.{prefix}Model",
            "AutoModelForCausalLM": f"modeling_{stem}.{prefix}ForCausalLM",
        },
        "model_type": model_type,
        **config,
    }
    (folder / "config.json").write_text(json.dumps(payload, indent=1))
    return folder
