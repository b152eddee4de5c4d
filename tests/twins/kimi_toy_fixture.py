"""A Kimi-Linear-style remote-code model folder, written by the tests (nothing comes from the Hub).

It keeps the kernel idioms of moonshotai/Kimi-Linear-48B-A3B's ``modeling_kimi.py`` that matter for a
GPU-less build: module-level ``from fla... import`` of classes and kernels, three ``ShortConvolution`` and
one ``FusedRMSNormGated`` per KDA layer, fla 0.4's ``fused_kda_gate(g, A_log, head_dim, g_bias=...)``
call, an fla ``@tensor_cache`` decorator on a module-level helper, ``flash_attn_func`` in the MLA layers,
and the model forcing ``config._attn_implementation = "flash_attention_2"`` in ``__init__``.
Layers are tiny and the forward is structurally faithful (same kernel calls, shapes and dtypes).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_PY = '''
from transformers import PretrainedConfig


class KimiToyConfig(PretrainedConfig):
    model_type = "kimi_toy"

    def __init__(self, vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                 num_attention_heads=2, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
                 rms_norm_eps=1e-5, linear_attn_config=None, tie_word_embeddings=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.kv_lora_rank = kv_lora_rank
        self.qk_nope_head_dim = qk_nope_head_dim
        self.qk_rope_head_dim = qk_rope_head_dim
        self.v_head_dim = v_head_dim
        self.rms_norm_eps = rms_norm_eps
        self.linear_attn_config = linear_attn_config or {
            "kda_layers": [1, 2, 4], "full_attn_layers": [3], "num_heads": 2, "head_dim": 16,
            "short_conv_kernel_size": 4,
        }
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    def is_kda_layer(self, layer_idx):
        return (layer_idx + 1) in self.linear_attn_config["kda_layers"]
'''

MODELING_PY = '''
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

try:
    from fla.modules import FusedRMSNormGated, ShortConvolution
    from fla.ops.kda import chunk_kda, fused_recurrent_kda
    from fla.ops.kda.gate import fused_kda_gate
    from fla.utils import tensor_cache
except ImportError:
    raise ImportError("Plese run `pip install -U fla-core`")
from flash_attn import flash_attn_func

from .configuration_kimi_toy import KimiToyConfig


@tensor_cache
def head_split(x, head_dim):
    return x.reshape(*x.shape[:-1], x.shape[-1] // head_dim, head_dim)


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
        self.conv_size = lin["short_conv_kernel_size"]
        self.head_dim = lin["head_dim"]
        self.num_heads = lin["num_heads"]
        self.head_k_dim = self.head_dim
        self.layer_idx = layer_idx
        projection_size = self.head_dim * self.num_heads
        self.q_proj = nn.Linear(self.hidden_size, projection_size, bias=False)
        self.k_proj = nn.Linear(self.hidden_size, projection_size, bias=False)
        self.v_proj = nn.Linear(self.hidden_size, projection_size, bias=False)
        self.q_conv1d = ShortConvolution(hidden_size=projection_size, kernel_size=self.conv_size, activation="silu")
        self.k_conv1d = ShortConvolution(hidden_size=projection_size, kernel_size=self.conv_size, activation="silu")
        self.v_conv1d = ShortConvolution(hidden_size=projection_size, kernel_size=self.conv_size, activation="silu")
        self.A_log = nn.Parameter(torch.log(torch.empty(self.num_heads, dtype=torch.float32).uniform_(1, 16)).view(1, 1, -1, 1))
        self.f_a_proj = nn.Linear(self.hidden_size, self.head_dim, bias=False)
        self.f_b_proj = nn.Linear(self.head_dim, projection_size, bias=False)
        self.dt_bias = nn.Parameter(torch.empty(projection_size, dtype=torch.float32))
        self.b_proj = nn.Linear(self.hidden_size, self.num_heads, bias=False)
        self.g_a_proj = nn.Linear(self.hidden_size, self.head_dim, bias=False)
        self.g_b_proj = nn.Linear(self.head_dim, projection_size, bias=False)
        self.o_norm = FusedRMSNormGated(self.head_dim, eps=config.rms_norm_eps, activation="sigmoid")
        self.o_proj = nn.Linear(projection_size, self.hidden_size, bias=False)

    def forward(self, hidden_states, **kwargs):
        q_len = hidden_states.shape[1]
        q, _ = self.q_conv1d(x=self.q_proj(hidden_states), cache=None, output_final_state=False)
        k, _ = self.k_conv1d(x=self.k_proj(hidden_states), cache=None, output_final_state=False)
        v, _ = self.v_conv1d(x=self.v_proj(hidden_states), cache=None, output_final_state=False)
        g = self.f_b_proj(self.f_a_proj(hidden_states))
        g = fused_kda_gate(g, self.A_log, self.head_dim, g_bias=self.dt_bias)
        beta = self.b_proj(hidden_states).float().sigmoid()
        q, k, v = head_split(q, self.head_k_dim), head_split(k, self.head_k_dim), head_split(v, self.head_dim)
        kernel = fused_recurrent_kda if q_len <= 64 else chunk_kda
        o, _ = kernel(q=q, k=k, v=v, g=g, beta=beta, initial_state=None, output_final_state=True,
                      use_qk_l2norm_in_kernel=True)
        g = head_split(self.g_b_proj(self.g_a_proj(hidden_states)), self.head_dim)
        o = self.o_norm(o, g)
        return self.o_proj(o.flatten(-2))


class KimiMLAAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.config = config
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
        q = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.q_head_dim)
        compressed, k_rot = torch.split(self.kv_a_proj_with_mqa(hidden_states), [self.kv_lora_rank, self.qk_rope_head_dim], -1)
        kv = self.kv_b_proj(self.kv_a_layernorm(compressed)).view(bsz, q_len, self.num_heads, -1)
        k_nope, v = torch.split(kv, [self.qk_nope_head_dim, self.v_head_dim], -1)
        k_rot = k_rot.view(bsz, q_len, 1, self.qk_rope_head_dim).expand(-1, -1, self.num_heads, -1)
        k = torch.cat([k_nope, k_rot], dim=-1)
        assert self.config._attn_implementation == "flash_attention_2"
        v = F.pad(v, [0, self.q_head_dim - self.v_head_dim])  # flash-attn needs v's head dim == q's
        out = flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=self.q_head_dim ** -0.5, causal=True)
        out = out[..., : self.v_head_dim].reshape(bsz, q_len, -1)
        return self.o_proj(out)


class KimiMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class KimiDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.is_linear_attn = config.is_kda_layer(layer_idx)
        self.self_attn = KimiDeltaAttention(config, layer_idx) if self.is_linear_attn else KimiMLAAttention(config, layer_idx)
        self.input_layernorm = KimiRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = KimiRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = KimiMLP(config)

    def forward(self, hidden_states):
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class KimiToyPreTrainedModel(PreTrainedModel):
    config_class = KimiToyConfig
    base_model_prefix = "model"
    _no_split_modules = ["KimiDecoderLayer"]
    _supports_flash_attn_2 = True
    _supports_flash_attn = True


class KimiToyModel(KimiToyPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([KimiDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = KimiRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        if getattr(config, "_attn_implementation", None) != "flash_attention_2":
            config._attn_implementation = "flash_attention_2"  # Kimi-Linear only supports flash attention
        self.post_init()

    def forward(self, input_ids=None, **kwargs):
        hidden_states = self.embed_tokens(input_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return BaseModelOutput(last_hidden_state=self.norm(hidden_states))


class KimiToyForCausalLM(KimiToyPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.model = KimiToyModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, **kwargs):
        hidden = self.model(input_ids=input_ids).last_hidden_state
        return CausalLMOutput(logits=self.lm_head(hidden))
'''


def write_kimi_toy(folder: Path, **config: Any) -> Path:
    """Write the remote-code folder (``config.json`` with ``auto_map`` and the two Python files)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_kimi_toy.py").write_text(CONFIG_PY)
    (folder / "modeling_kimi_toy.py").write_text(MODELING_PY)
    payload = {
        "model_type": "kimi_toy",
        "architectures": ["KimiToyForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_kimi_toy.KimiToyConfig",
            "AutoModel": "modeling_kimi_toy.KimiToyModel",
            "AutoModelForCausalLM": "modeling_kimi_toy.KimiToyForCausalLM",
        },
        **config,
    }
    (folder / "config.json").write_text(json.dumps(payload, indent=1))
    return folder
