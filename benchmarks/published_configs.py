"""config.json values of published checkpoints, for builds of transformers' native classes at full width.

Weights are never needed: these only feed ``AutoConfig.for_model(model_type, **values)``.
"""
from __future__ import annotations

from typing import Any

# deepseek-ai/DeepSeek-V3 (native deepseek_v3: experts fused into 3-d parameters)
DEEPSEEK_V3: dict[str, Any] = dict(
    model_type="deepseek_v3", vocab_size=129280, hidden_size=7168, intermediate_size=18432,
    moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128,
    n_shared_experts=1, n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536,
    qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8, topk_group=4, num_experts_per_tok=8,
    first_k_dense_replace=3, norm_topk_prob=True, max_position_embeddings=163840, rms_norm_eps=1e-6,
    tie_word_embeddings=False, dtype="bfloat16",
)

# Qwen/Qwen3-235B-A22B
QWEN3_235B: dict[str, Any] = dict(
    model_type="qwen3_moe", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
    moe_intermediate_size=1536, num_hidden_layers=94, num_attention_heads=64, num_key_value_heads=4,
    head_dim=128, num_experts=128, num_experts_per_tok=8, decoder_sparse_step=1, mlp_only_layers=[],
    max_position_embeddings=40960, rope_theta=1e6, rms_norm_eps=1e-6, norm_topk_prob=True,
    tie_word_embeddings=False, dtype="bfloat16",
)

# meta-llama/Llama-3.1-405B
LLAMA_405B: dict[str, Any] = dict(
    model_type="llama", vocab_size=128256, hidden_size=16384, intermediate_size=53248, num_hidden_layers=126,
    num_attention_heads=128, num_key_value_heads=8, max_position_embeddings=131072, rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192},
    tie_word_embeddings=False, dtype="bfloat16",
)

# nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B widths (native nemotron_h: Mamba2 + attention + 128-expert MoE)
NEMOTRON_H_30B: dict[str, Any] = dict(
    model_type="nemotron_h", vocab_size=131072, hidden_size=2688,
    hybrid_override_pattern="MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME",
    num_attention_heads=32, num_key_value_heads=2, head_dim=128, intermediate_size=1856,
    mlp_hidden_act="relu2", ssm_state_size=128, mamba_num_heads=64, mamba_head_dim=64, n_groups=8,
    conv_kernel=4, chunk_size=128, n_routed_experts=128, n_shared_experts=1, moe_intermediate_size=1856,
    moe_shared_expert_intermediate_size=3712, num_experts_per_tok=6, routed_scaling_factor=2.5,
    max_position_embeddings=262144, layer_norm_epsilon=1e-5, tie_word_embeddings=False, dtype="bfloat16",
)
