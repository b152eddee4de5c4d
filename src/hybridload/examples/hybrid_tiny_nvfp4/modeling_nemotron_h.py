# coding=utf-8
# Copyright 2025 the hybridload developers. Apache-2.0.
# Written in the style of NVIDIA's Nemotron-H remote code (modeling_nemotron_h.py): the same kernel imports,
# the same fast-path test, a Mamba2 mixer with a CUDA-kernel forward and a plain-torch forward, and a gated
# RMSNorm that calls mamba_ssm's ``rmsnorm_fn`` on every path.
"""PyTorch NemotronH-style hybrid model (Mamba2 + attention + MLP + MoE) of hybridload's example ``hybrid_tiny``."""

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, LinearAttentionLayer

try:  # later transformers 5.x (5.23; not 5.17): a cache layer that holds nothing, for MoE/MLP blocks
    from transformers.cache_utils import DummyLayer as NoCacheLayer
except ImportError:  # earlier 5.x give those blocks an empty linear-attention layer (never updated)
    NoCacheLayer = LinearAttentionLayer
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import logging
from transformers.utils.import_utils import is_causal_conv1d_available, is_mamba_2_ssm_available

from .configuration_nemotron_h import NemotronHConfig

logger = logging.get_logger(__name__)


if is_mamba_2_ssm_available():
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined
else:
    mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined, selective_state_update = None, None, None

try:
    from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
except ImportError:
    raise ImportError("mamba-ssm is required by the Mamba model but cannot be imported")

if is_causal_conv1d_available():
    from causal_conv1d import causal_conv1d_fn, causal_conv1d_update
else:
    causal_conv1d_update, causal_conv1d_fn = None, None

is_fast_path_available = all(
    (
        selective_state_update,
        mamba_chunk_scan_combined,
        mamba_split_conv1d_scan_combined,
        causal_conv1d_fn,
        causal_conv1d_update,
    )
)


def apply_mask_to_padding_states(hidden_states, attention_mask):
    """Zero the hidden states of padding tokens (https://github.com/state-spaces/mamba/issues/66)."""
    if attention_mask is not None and attention_mask.shape[1] > 1 and attention_mask.shape[0] > 1:
        dtype = hidden_states.dtype
        hidden_states = (hidden_states * attention_mask[:, :, None]).to(dtype)
    return hidden_states


def segment_sum(input_tensor):
    """out[..., i, j] = sum(input[..., j + 1 : i + 1]) for j <= i, -inf above the diagonal (stable cumsum form)."""
    chunk_size = input_tensor.size(-1)
    input_tensor = input_tensor[..., None].expand(*input_tensor.size(), chunk_size)
    mask = torch.tril(torch.ones(chunk_size, chunk_size, device=input_tensor.device, dtype=torch.bool), diagonal=-1)
    input_tensor = input_tensor.masked_fill(~mask, 0)
    tensor_segsum = torch.cumsum(input_tensor, dim=-2)
    mask = torch.tril(torch.ones(chunk_size, chunk_size, device=input_tensor.device, dtype=torch.bool), diagonal=0)
    return tensor_segsum.masked_fill(~mask, -torch.inf)


def _chunks(tensor, chunk_size):
    """(batch, seqlen, ...) -> (batch, nchunks, chunk_size, ...), zero-padded to a whole number of chunks."""
    pad = (chunk_size - tensor.shape[1] % chunk_size) % chunk_size
    tensor = F.pad(tensor, (0, 0) * (tensor.dim() - 2) + (0, pad))
    return tensor.reshape(tensor.shape[0], -1, chunk_size, *tensor.shape[2:])


class NemotronHHybridDynamicCache(DynamicCache):
    """One cache layer per block: conv + SSM states for Mamba2, keys/values for attention, nothing otherwise."""

    def __init__(self, config):
        layers = []
        for block_type in config.layers_block_type:
            if block_type == "mamba":
                layers.append(LinearAttentionLayer())
            elif block_type == "attention":
                layers.append(DynamicLayer())
            else:
                layers.append(NoCacheLayer())
        Cache.__init__(self, layers=layers)


class MambaRMSNormGated(torch.nn.Module):
    def __init__(self, hidden_size, group_size, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps
        self.group_size = group_size

    def forward(self, hidden_states, gate=None):
        return rmsnorm_fn(
            x=hidden_states,
            weight=self.weight,
            bias=None,
            z=gate,
            eps=self.variance_epsilon,
            group_size=self.group_size,
            norm_before_gate=False,
        )


class NemotronHMamba2Mixer(nn.Module):
    """Mamba2 mixer: in_proj -> causal conv1d -> SSD scan -> gated RMSNorm -> out_proj."""

    def __init__(self, config: NemotronHConfig, layer_idx: int):
        super().__init__()
        self.num_heads = config.mamba_num_heads
        self.hidden_size = config.hidden_size
        self.ssm_state_size = config.ssm_state_size
        self.conv_kernel_size = config.conv_kernel
        self.intermediate_size = config.mamba_num_heads * config.mamba_head_dim
        self.layer_idx = layer_idx
        self.use_conv_bias = config.use_conv_bias
        self.activation = config.mamba_hidden_act
        self.act = ACT2FN[config.mamba_hidden_act]
        self.layer_norm_epsilon = config.layer_norm_epsilon
        self.n_groups = config.n_groups
        self.head_dim = config.mamba_head_dim
        self.chunk_size = config.chunk_size
        self.time_step_limit = tuple(config.time_step_limit)
        self.time_step_min = config.time_step_min
        self.time_step_max = config.time_step_max

        self.conv_dim = self.intermediate_size + 2 * self.n_groups * self.ssm_state_size
        self.conv1d = nn.Conv1d(
            in_channels=self.conv_dim,
            out_channels=self.conv_dim,
            bias=config.use_conv_bias,
            kernel_size=config.conv_kernel,
            groups=self.conv_dim,
            padding=config.conv_kernel - 1,
        )
        projection_size = self.intermediate_size + self.conv_dim + self.num_heads
        self.in_proj = nn.Linear(self.hidden_size, projection_size, bias=config.use_bias)
        self.dt_bias = nn.Parameter(torch.ones(self.num_heads))
        A = torch.arange(1, self.num_heads + 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.norm = MambaRMSNormGated(
            self.intermediate_size, eps=self.layer_norm_epsilon, group_size=self.intermediate_size // self.n_groups
        )
        self.D = nn.Parameter(torch.ones(self.num_heads))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=config.use_bias)
        self.use_bias = config.use_bias

        if not is_fast_path_available:
            logger.warning_once(
                "The fast path is not available because one of `(selective_state_update, causal_conv1d_fn, "
                "causal_conv1d_update)` is None. Falling back to the naive implementation. To install follow "
                "https://github.com/state-spaces/mamba/#installation and https://github.com/Dao-AILab/causal-conv1d"
            )

    def _states(self, cache_params):
        """(conv state, SSM state) of this layer, or Nones before its first update; the layer's own state
        slots and Cache.has_previous_state exist in every transformers 5.x this code runs on."""
        if cache_params is None or not cache_params.has_previous_state(self.layer_idx):
            return None, None
        layer = cache_params.layers[self.layer_idx]
        return layer.conv_states[0], layer.recurrent_states[0]

    def cuda_kernels_forward(
        self,
        hidden_states: torch.Tensor,
        cache_params: Optional[Cache] = None,
        attention_mask: Optional[torch.Tensor] = None,
    ):
        batch_size, seq_len, _ = hidden_states.shape
        conv_state, ssm_state = self._states(cache_params)
        hidden_states = apply_mask_to_padding_states(hidden_states, attention_mask)
        projected_states = self.in_proj(hidden_states)
        groups_time_state_size = self.n_groups * self.ssm_state_size
        d_mlp = (
            projected_states.shape[-1] - 2 * self.intermediate_size - 2 * groups_time_state_size - self.num_heads
        ) // 2
        A = -torch.exp(self.A_log.float())
        dt_limit_kwargs = {} if self.time_step_limit == (0.0, float("inf")) else {"dt_limit": self.time_step_limit}

        # single decode step on the cached conv and SSM states (both updated in place by the kernels)
        if conv_state is not None and seq_len == 1:
            _, _, gate, hidden_states_B_C, dt = projected_states[:, 0].split(
                [d_mlp, d_mlp, self.intermediate_size, self.conv_dim, self.num_heads], dim=-1
            )
            hidden_states_B_C = causal_conv1d_update(
                hidden_states_B_C, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.activation
            )
            hidden_states, B, C = torch.split(
                hidden_states_B_C, [self.intermediate_size, groups_time_state_size, groups_time_state_size], dim=-1
            )
            A = A[:, None, None].expand(-1, self.head_dim, self.ssm_state_size).to(dtype=torch.float32)
            dt = dt[:, :, None].expand(-1, -1, self.head_dim)
            dt_bias = self.dt_bias[:, None].expand(-1, self.head_dim)
            D = self.D[:, None].expand(-1, self.head_dim)
            B = B.view(batch_size, self.n_groups, self.ssm_state_size)
            C = C.view(batch_size, self.n_groups, self.ssm_state_size)
            hidden_states = selective_state_update(
                ssm_state,
                hidden_states.view(batch_size, self.num_heads, self.head_dim),
                dt,
                A,
                B,
                C,
                D,
                z=None,
                dt_bias=dt_bias,
                dt_softplus=True,
            )
            hidden_states = hidden_states.view(batch_size, self.num_heads * self.head_dim)
            hidden_states = self.norm(hidden_states, gate)
            return self.out_proj(hidden_states)[:, None, ...]

        # training without a cache: one fused kernel for conv1d, scan, gated norm and out_proj
        if self.training and cache_params is None:
            return mamba_split_conv1d_scan_combined(
                projected_states,
                self.conv1d.weight.squeeze(1),
                self.conv1d.bias,
                self.dt_bias,
                A,
                D=self.D,
                chunk_size=self.chunk_size,
                seq_idx=None,
                activation=self.activation,
                rmsnorm_weight=self.norm.weight,
                rmsnorm_eps=self.norm.variance_epsilon,
                outproj_weight=self.out_proj.weight,
                outproj_bias=self.out_proj.bias,
                headdim=self.head_dim,
                ngroups=self.n_groups,
                norm_before_gate=False,
                return_final_states=False,
                **dt_limit_kwargs,
            )

        _, _, gate, hidden_states_B_C, dt = projected_states.split(
            [d_mlp, d_mlp, self.intermediate_size, self.conv_dim, self.num_heads], dim=-1
        )
        conv_input = hidden_states_B_C.transpose(1, 2)
        if cache_params is not None:
            # caches the last conv_kernel inputs; returns the previous ones + these (left context for the conv)
            conv_input = cache_params.update_conv_state(conv_input, self.layer_idx, conv_kernel_size=self.conv_kernel_size)
        if self.activation not in ["silu", "swish"]:
            hidden_states_B_C = self.act(self.conv1d(conv_input)[..., : conv_input.shape[-1]])
        else:
            hidden_states_B_C = causal_conv1d_fn(
                x=conv_input,
                weight=self.conv1d.weight.squeeze(1),
                bias=self.conv1d.bias,
                activation=self.activation,
            )
        hidden_states_B_C = hidden_states_B_C[..., -seq_len:].transpose(1, 2)
        hidden_states_B_C = apply_mask_to_padding_states(hidden_states_B_C, attention_mask)
        hidden_states, B, C = torch.split(
            hidden_states_B_C, [self.intermediate_size, groups_time_state_size, groups_time_state_size], dim=-1
        )
        scan_output, final_state = mamba_chunk_scan_combined(
            hidden_states.view(batch_size, seq_len, -1, self.head_dim),
            dt,
            A,
            B.view(batch_size, seq_len, self.n_groups, -1),
            C.view(batch_size, seq_len, self.n_groups, -1),
            chunk_size=self.chunk_size,
            D=self.D,
            z=None,
            seq_idx=None,
            initial_states=ssm_state,
            return_final_states=True,
            dt_bias=self.dt_bias,
            dt_softplus=True,
            **dt_limit_kwargs,
        )
        if cache_params is not None:
            cache_params.update_recurrent_state(final_state, self.layer_idx)
        scan_output = scan_output.view(batch_size, seq_len, -1)
        scan_output = self.norm(scan_output, gate)
        return self.out_proj(scan_output)

    def torch_forward(
        self,
        input_states: torch.Tensor,
        cache_params: Optional[Cache] = None,
        attention_mask: Optional[torch.Tensor] = None,
    ):
        batch_size, seq_len, _ = input_states.shape
        dtype = input_states.dtype
        conv_state, ssm_state = self._states(cache_params)
        input_states = apply_mask_to_padding_states(input_states, attention_mask)
        projected_states = self.in_proj(input_states)
        d_mlp = (
            projected_states.shape[-1]
            - 2 * self.intermediate_size
            - 2 * self.n_groups * self.ssm_state_size
            - self.num_heads
        ) // 2
        _, _, gate, hidden_states_B_C, dt = projected_states.split(
            [d_mlp, d_mlp, self.intermediate_size, self.conv_dim, self.num_heads], dim=-1
        )

        # 1. causal depthwise convolution, continuing from the cached inputs when there are any
        conv_input = hidden_states_B_C.transpose(1, 2)
        if cache_params is not None:
            conv_input = cache_params.update_conv_state(conv_input, self.layer_idx, conv_kernel_size=self.conv_kernel_size)
        hidden_states_B_C = self.conv1d(conv_input)[..., : conv_input.shape[-1]]
        hidden_states_B_C = self.act(hidden_states_B_C[..., -seq_len:]).transpose(1, 2)
        hidden_states_B_C = apply_mask_to_padding_states(hidden_states_B_C, attention_mask)
        hidden_states, B, C = torch.split(
            hidden_states_B_C,
            [self.intermediate_size, self.n_groups * self.ssm_state_size, self.n_groups * self.ssm_state_size],
            dim=-1,
        )

        # 2. selective state space model, in fp32
        A = -torch.exp(self.A_log.float())
        dt = F.softplus(dt.float() + self.dt_bias.float())
        dt = torch.clamp(dt, self.time_step_limit[0], self.time_step_limit[1])
        x = hidden_states.reshape(batch_size, seq_len, self.num_heads, self.head_dim).float()
        rep = self.num_heads // self.n_groups
        B = B.reshape(batch_size, seq_len, self.n_groups, self.ssm_state_size).float().repeat_interleave(rep, dim=2)
        C = C.reshape(batch_size, seq_len, self.n_groups, self.ssm_state_size).float().repeat_interleave(rep, dim=2)
        D = self.D.float()[:, None]

        if ssm_state is not None and seq_len == 1:
            # recurrent form: one token
            dA = torch.exp(dt[:, 0] * A)  # (batch, heads)
            new_state = ssm_state.float() * dA[..., None, None] + (dt[:, 0, :, None] * x[:, 0])[..., None] * B[:, 0, :, None, :]
            cache_params.update_recurrent_state(new_state.to(ssm_state.dtype), self.layer_idx)
            y = (new_state * C[:, 0, :, None, :]).sum(-1) + D * x[:, 0]
            y = y[:, None]
        else:
            # chunked (SSD) form
            x_dt, A_dt = x * dt[..., None], A * dt  # (b, l, h, p), (b, l, h)
            x_dt, A_dt, B_c, C_c = (_chunks(t, self.chunk_size) for t in (x_dt, A_dt, B, C))
            A_dt = A_dt.permute(0, 3, 1, 2)  # (b, h, c, l)
            A_cumsum = torch.cumsum(A_dt, dim=-1)
            L = torch.exp(segment_sum(A_dt))  # (b, h, c, l, s)
            y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C_c, B_c, L, x_dt)
            decay_states = torch.exp(A_cumsum[..., -1:] - A_cumsum)
            states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B_c, decay_states, x_dt)
            initial = ssm_state.float() if ssm_state is not None else torch.zeros_like(states[:, 0])
            states = torch.cat([initial[:, None], states], dim=1)
            decay_chunk = torch.exp(segment_sum(F.pad(A_cumsum[..., -1], (1, 0))))  # (b, h, c + 1, c + 1)
            new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
            states, final_state = new_states[:, :-1], new_states[:, -1]
            y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C_c, states, torch.exp(A_cumsum))
            y = (y_diag + y_off).reshape(batch_size, -1, self.num_heads, self.head_dim)[:, :seq_len]
            y = y + D * x
            if cache_params is not None:
                cache_params.update_recurrent_state(final_state, self.layer_idx)

        y = y.reshape(batch_size, seq_len, -1).to(dtype)
        scan_output = self.norm(y, gate)
        return self.out_proj(scan_output.to(dtype))

    def forward(
        self,
        hidden_states,
        cache_params: Optional[Cache] = None,
        attention_mask: Optional[torch.Tensor] = None,
    ):
        if is_fast_path_available and "cuda" in self.in_proj.weight.device.type:
            return self.cuda_kernels_forward(hidden_states, cache_params, attention_mask)
        return self.torch_forward(hidden_states, cache_params, attention_mask)


class NemotronHRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return (self.weight.to(torch.float32) * hidden_states).to(input_dtype)


class NemotronHMLP(nn.Module):
    def __init__(self, config, intermediate_size=None, layer_idx: Optional[int] = None):
        super().__init__()
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        self.intermediate_size = intermediate_size or config.intermediate_size
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.mlp_hidden_act]

    def forward(self, x):
        return self.down_proj(self.act_fn(self.up_proj(x)))


class NemotronHTopkRouter(nn.Module):
    """Sigmoid router with a score-correction bias and group-limited top-k (DeepSeek-V3 style)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.top_k = config.num_experts_per_tok
        self.n_routed_experts = config.n_routed_experts
        self.routed_scaling_factor = config.routed_scaling_factor
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.norm_topk_prob = config.norm_topk_prob
        self.weight = nn.Parameter(torch.empty((self.n_routed_experts, config.hidden_size), dtype=torch.float32))
        self.e_score_correction_bias = nn.Parameter(
            torch.zeros(self.n_routed_experts, dtype=torch.float32), requires_grad=False
        )

    @torch.no_grad()
    def get_topk_indices(self, scores):
        scores_for_choice = scores.view(-1, self.n_routed_experts) + self.e_score_correction_bias.unsqueeze(0)
        group_scores = (
            scores_for_choice.view(-1, self.n_group, self.n_routed_experts // self.n_group)
            .topk(min(2, self.n_routed_experts // self.n_group), dim=-1)[0]
            .sum(dim=-1)
        )
        group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
        group_mask = torch.zeros_like(group_scores)
        group_mask.scatter_(1, group_idx, 1)
        score_mask = (
            group_mask.unsqueeze(-1)
            .expand(-1, self.n_group, self.n_routed_experts // self.n_group)
            .reshape(-1, self.n_routed_experts)
        )
        scores_for_choice = scores_for_choice.masked_fill(~score_mask.bool(), 0.0)
        return torch.topk(scores_for_choice, k=self.top_k, dim=-1, sorted=False)[1]

    def forward(self, hidden_states):
        hidden_states = hidden_states.view(-1, self.config.hidden_size)
        router_logits = F.linear(hidden_states.type(torch.float32), self.weight.type(torch.float32))
        scores = router_logits.sigmoid()
        topk_indices = self.get_topk_indices(scores)
        topk_weights = scores.gather(1, topk_indices)
        if self.norm_topk_prob:
            topk_weights = topk_weights / (topk_weights.sum(dim=-1, keepdim=True) + 1e-20)
        return topk_indices, topk_weights * self.routed_scaling_factor


class NemotronHMOE(nn.Module):
    """Routed experts (one ``nn.Linear`` pair each, as in Nemotron-H checkpoints) plus a shared expert.

    Dispatch is dense (every expert sees every token, weighted by its routing weight, zero if not chosen):
    the same result as a sparse gather, but with static shapes, so meta/fake-tensor scans run it too.
    """

    def __init__(self, config, layer_idx: Optional[int] = None):
        super().__init__()
        self.config = config
        self.experts = nn.ModuleList(
            [
                NemotronHMLP(config, intermediate_size=config.moe_intermediate_size, layer_idx=layer_idx)
                for _ in range(config.n_routed_experts)
            ]
        )
        self.gate = NemotronHTopkRouter(config)
        self.shared_experts = NemotronHMLP(
            config=config, intermediate_size=config.moe_shared_expert_intermediate_size, layer_idx=layer_idx
        )

    def moe(self, hidden_states: torch.Tensor, topk_indices: torch.Tensor, topk_weights: torch.Tensor):
        routing = torch.zeros(
            hidden_states.shape[0], len(self.experts), dtype=topk_weights.dtype, device=hidden_states.device
        ).scatter(1, topk_indices, topk_weights)
        final_hidden_states = torch.zeros_like(hidden_states, dtype=topk_weights.dtype)
        for expert_idx, expert in enumerate(self.experts):
            final_hidden_states = final_hidden_states + expert(hidden_states) * routing[:, expert_idx, None]
        return final_hidden_states.type(hidden_states.dtype)

    def forward(self, hidden_states):
        residuals = hidden_states
        orig_shape = hidden_states.shape
        topk_indices, topk_weights = self.gate(hidden_states)
        hidden_states = hidden_states.view(-1, hidden_states.shape[-1])
        hidden_states = self.moe(hidden_states, topk_indices, topk_weights).view(*orig_shape)
        return hidden_states + self.shared_experts(residuals)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask[:, :, :, : key_states.shape[-2]]
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class NemotronHAttention(nn.Module):
    """Grouped-query attention without positional embeddings (Nemotron-H's Mamba layers carry position)."""

    def __init__(self, config: NemotronHConfig, layer_idx: Optional[int] = None):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.attention_dropout = config.attention_dropout
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim if config.head_dim is not None else config.hidden_size // self.num_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.is_causal = True
        self.q_proj = nn.Linear(self.hidden_size, self.num_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(self.head_dim * self.num_heads, self.hidden_size, bias=config.attention_bias)
        self.scaling = self.head_dim**-0.5

    def forward(self, hidden_states, attention_mask=None, past_key_values: Optional[Cache] = None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        if past_key_values is not None:
            key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx)
        attention_interface = eager_attention_forward
        if self.config._attn_implementation != "eager":
            attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class NemotronHBlock(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = NemotronHRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.block_type = config.layers_block_type[layer_idx]
        if self.block_type == "mamba":
            self.mixer = NemotronHMamba2Mixer(config, layer_idx=layer_idx)
        elif self.block_type == "attention":
            self.mixer = NemotronHAttention(config, layer_idx=layer_idx)
        elif self.block_type == "mlp":
            self.mixer = NemotronHMLP(config, layer_idx=layer_idx)
        elif self.block_type == "moe":
            self.mixer = NemotronHMOE(config, layer_idx=layer_idx)
        else:
            raise ValueError(f"Invalid layer pattern {config.hybrid_override_pattern[layer_idx]}")

    def forward(self, hidden_states, past_key_values=None, attention_mask=None, **kwargs):
        residual = hidden_states
        hidden_states = self.norm(hidden_states.to(dtype=self.norm.weight.dtype))
        if self.residual_in_fp32:
            residual = residual.to(torch.float32)
        if self.block_type == "mamba":
            hidden_states = self.mixer(hidden_states, cache_params=past_key_values, attention_mask=attention_mask)
        elif self.block_type == "attention":
            hidden_states, _ = self.mixer(
                hidden_states, attention_mask=attention_mask, past_key_values=past_key_values, **kwargs
            )
        else:
            hidden_states = self.mixer(hidden_states)
        return residual + hidden_states


class NemotronHPreTrainedModel(PreTrainedModel):
    config_class = NemotronHConfig
    base_model_prefix = "backbone"
    _no_split_modules = ["NemotronHBlock"]
    supports_gradient_checkpointing = True
    _is_stateful = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _skip_keys_device_placement = ["past_key_values"]

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a plain DynamicCache: the model builds its hybrid cache on the first step
        return False

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, NemotronHMamba2Mixer):
            dt = torch.exp(
                torch.rand(self.config.mamba_num_heads)
                * (math.log(self.config.time_step_max) - math.log(self.config.time_step_min))
                + math.log(self.config.time_step_min)
            ).clamp(min=self.config.time_step_floor)
            inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
            module.dt_bias.copy_(inv_dt)
            module.A_log.copy_(torch.log(torch.arange(1, module.num_heads + 1, dtype=torch.float32)))
            module.D.fill_(1.0)
        elif isinstance(module, (NemotronHRMSNorm, MambaRMSNormGated)):
            module.weight.fill_(1.0)
        elif isinstance(module, NemotronHTopkRouter):
            module.weight.normal_(mean=0.0, std=std)
            module.e_score_correction_bias.zero_()
        elif isinstance(module, nn.Linear):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Conv1d):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(mean=0.0, std=std)


class NemotronHModel(NemotronHPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([NemotronHBlock(config, layer_idx=idx) for idx in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False
        self.norm_f = NemotronHRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        # positions come from what this model owns: the key/value length of its first attention layer (a
        # cache's default layer is layer 0, here a Mamba layer whose slot holds no token count)
        block_types = list(config.layers_block_type)
        self.first_attention_layer = block_types.index("attention") if "attention" in block_types else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    def _causal_mask(self, attention_mask, inputs_embeds, past_length):
        """4-D additive mask for eager/sdpa (causal + padding), the 2-D mask itself for flash attention."""
        if "flash" in (self.config._attn_implementation or ""):
            return attention_mask
        batch_size, query_length = inputs_embeds.shape[:2]
        key_length = past_length + query_length
        device, dtype = inputs_embeds.device, inputs_embeds.dtype
        query_positions = torch.arange(query_length, device=device)[:, None] + past_length
        allowed = (torch.arange(key_length, device=device)[None, :] <= query_positions)[None, None]
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, None, -key_length:].bool()
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return mask.masked_fill(~allowed, torch.finfo(dtype).min)

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        past_key_values: Optional[Cache] = None,
        use_cache: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        attention_mask: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> Union[Tuple, BaseModelOutputWithPast]:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        if use_cache and past_key_values is None:
            past_key_values = NemotronHHybridDynamicCache(self.config)

        past_length = 0
        if past_key_values is not None and self.first_attention_layer is not None:
            past_length = past_key_values.get_seq_length(self.first_attention_layer)
        causal_mask = self._causal_mask(attention_mask, inputs_embeds, past_length)
        # Mamba layers zero padding tokens when prefilling; a decode step has nothing to mask
        mamba_mask = attention_mask[:, -inputs_embeds.shape[1] :] if attention_mask is not None and inputs_embeds.shape[1] > 1 else None

        hidden_states = inputs_embeds
        all_hidden_states = () if output_hidden_states else None
        for mixer_block in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if mixer_block.block_type == "mamba":
                layer_mask = mamba_mask
            elif mixer_block.block_type == "attention":
                layer_mask = causal_mask
            else:
                layer_mask = None
            if self.gradient_checkpointing and self.training:
                hidden_states = self._gradient_checkpointing_func(
                    mixer_block.__call__, hidden_states, past_key_values, layer_mask
                )
            else:
                hidden_states = mixer_block(hidden_states, past_key_values=past_key_values, attention_mask=layer_mask)
        hidden_states = self.norm_f(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if not return_dict:
            return tuple(v for v in (hidden_states, past_key_values, all_hidden_states) if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=all_hidden_states,
        )


class NemotronHForCausalLM(NemotronHPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.backbone = NemotronHModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, new_embeddings):
        return self.backbone.set_input_embeddings(new_embeddings)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_decoder(self):
        return self.backbone

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        past_key_values: Optional[Cache] = None,
        labels: Optional[torch.LongTensor] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        use_cache: Optional[bool] = None,
        attention_mask: Optional[torch.Tensor] = None,
        logits_to_keep: Union[int, torch.Tensor] = 0,
        **kwargs,
    ) -> Union[Tuple, CausalLMOutputWithPast]:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.backbone(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            attention_mask=attention_mask,
        )
        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :].to(self.lm_head.weight.dtype)).float()
        loss = None
        if labels is not None:
            shift_logits = logits[..., :-1, :].contiguous().view(-1, self.config.vocab_size)
            shift_labels = labels[..., 1:].contiguous().view(-1).to(shift_logits.device)
            loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)
        if not return_dict:
            output = (logits, outputs.past_key_values, outputs.hidden_states)
            return ((loss,) + output) if loss is not None else output
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
        )
