# coding=utf-8
# Copyright 2025 the hybridload developers. Apache-2.0.
# Written in the style of NVIDIA's Nemotron-H remote code (configuration_nemotron_h.py), for a tiny model.
"""NemotronH-style configuration of hybridload's bundled example ``hybrid_tiny``."""

from transformers.configuration_utils import PretrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

# one character per layer, as in Nemotron-H: M = Mamba2, * = attention, - = MLP, E = mixture of experts
_BLOCK_TYPES = {"M": "mamba", "*": "attention", "-": "mlp", "E": "moe"}


class NemotronHConfig(PretrainedConfig):
    r"""
    Configuration of a hybrid Mamba2 / attention / MLP / MoE decoder in the Nemotron-H layout.

    Args:
        vocab_size (`int`, defaults to 512): vocabulary size.
        hidden_size (`int`, defaults to 64): width of the residual stream.
        intermediate_size (`int`, defaults to 128): width of the MLP (`-`) layers.
        num_hidden_layers (`int`, defaults to 8): number of layers; must equal `len(hybrid_override_pattern)`.
        hybrid_override_pattern (`str`, defaults to `"M-M*ME-M"`): one character per layer, M: Mamba2,
            *: attention, -: MLP, E: MoE.
        num_attention_heads / num_key_value_heads / head_dim: attention shape (GQA).
        mlp_hidden_act (`str`, defaults to "relu2"): activation of MLP and expert layers.
        ssm_state_size, mamba_num_heads, mamba_n_groups, mamba_head_dim, mamba_d_conv: Mamba2 mixer shape.
        mamba_chunk_size (`int`, defaults to 16): chunk size of the SSD scan.
        mamba_dt_min / mamba_dt_max / mamba_dt_limit / mamba_dt_init_floor: time-step init and clamp.
        n_routed_experts, n_shared_experts, moe_intermediate_size, moe_shared_expert_intermediate_size,
            num_experts_per_tok, routed_scaling_factor, n_group, topk_group, norm_topk_prob: MoE routing.
    """

    model_type = "nemotron_h"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size=512,
        tie_word_embeddings=False,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=8,
        hybrid_override_pattern="M-M*ME-M",
        num_attention_heads=4,
        head_dim=16,
        num_key_value_heads=2,
        mlp_hidden_act="relu2",
        attention_bias=False,
        mlp_bias=False,
        use_bias=False,
        initializer_range=0.02,
        layer_norm_epsilon=1e-5,
        residual_in_fp32=False,
        use_cache=True,
        num_logits_to_keep=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        sliding_window=None,
        max_position_embeddings=4096,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        use_mamba_kernels=True,
        ssm_state_size=16,
        mamba_num_heads=8,
        mamba_n_groups=2,
        mamba_head_dim=16,
        mamba_d_conv=4,
        mamba_expand=2,
        mamba_hidden_act="silu",
        mamba_dt_min=0.001,
        mamba_dt_max=0.1,
        mamba_dt_limit=(0.0, float("inf")),
        mamba_dt_init_floor=1e-4,
        mamba_conv_bias=True,
        mamba_proj_bias=False,
        mamba_chunk_size=16,
        rescale_prenorm_residual=True,
        n_routed_experts=4,
        n_shared_experts=1,
        moe_intermediate_size=32,
        moe_shared_expert_intermediate_size=64,
        num_experts_per_tok=2,
        routed_scaling_factor=1.0,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        **kwargs,
    ):
        if len(hybrid_override_pattern) != num_hidden_layers:
            raise ValueError(
                f"hybrid_override_pattern has {len(hybrid_override_pattern)} characters but num_hidden_layers is "
                f"{num_hidden_layers}: give one character per layer"
            )
        unknown = sorted(set(hybrid_override_pattern) - set(_BLOCK_TYPES))
        if unknown:
            raise ValueError(
                f"hybrid_override_pattern may only contain 'M' (Mamba2), '*' (attention), '-' (MLP) or 'E' (MoE), "
                f"found {unknown}"
            )
        self.vocab_size = vocab_size
        self.tie_word_embeddings = tie_word_embeddings
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.hybrid_override_pattern = hybrid_override_pattern
        self.num_attention_heads = num_attention_heads
        self.head_dim = head_dim
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.sliding_window = sliding_window
        self.max_position_embeddings = max_position_embeddings
        self.attention_dropout = attention_dropout
        self.hidden_dropout = hidden_dropout
        self.mlp_hidden_act = mlp_hidden_act
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        self.use_bias = use_bias
        self.initializer_range = initializer_range
        self.layer_norm_epsilon = layer_norm_epsilon
        self.residual_in_fp32 = residual_in_fp32
        self.use_cache = use_cache
        self.num_logits_to_keep = num_logits_to_keep

        self.use_mamba_kernels = use_mamba_kernels
        self.n_groups = mamba_n_groups
        self.mamba_head_dim = mamba_head_dim
        self.ssm_state_size = ssm_state_size
        self.mamba_num_heads = mamba_num_heads
        self.conv_kernel = mamba_d_conv
        self.expand = mamba_expand
        self.mamba_hidden_act = mamba_hidden_act
        self.time_step_min = mamba_dt_min
        self.time_step_max = mamba_dt_max
        self.time_step_limit = tuple(mamba_dt_limit)
        self.time_step_floor = mamba_dt_init_floor
        self.use_conv_bias = mamba_conv_bias
        self.mamba_proj_bias = mamba_proj_bias
        self.chunk_size = mamba_chunk_size
        self.rescale_prenorm_residual = rescale_prenorm_residual

        self.n_routed_experts = n_routed_experts
        self.n_shared_experts = n_shared_experts
        self.moe_intermediate_size = moe_intermediate_size
        self.moe_shared_expert_intermediate_size = moe_shared_expert_intermediate_size
        self.num_experts_per_tok = num_experts_per_tok
        self.routed_scaling_factor = routed_scaling_factor
        self.n_group = n_group
        self.topk_group = topk_group
        self.norm_topk_prob = norm_topk_prob

        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def layers_block_type(self):
        """Nemotron-H's names: "mamba", "attention", "mlp" or "moe", one per layer."""
        return [_BLOCK_TYPES[c] for c in self.hybrid_override_pattern]
