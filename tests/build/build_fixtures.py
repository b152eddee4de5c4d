"""Remote-code folders and tree facts for the fast-build tests (everything is written locally).

``write_init_zoo`` writes a model whose construction exercises every way code initialises weights: per-expert
``nn.Linear`` MoE, a gate with its own ``reset_parameters``, rotary buffers computed in ``__init__`` (on the
build device and explicitly on CPU, with values), ``nn.init.*`` called directly in ``__init__`` (also on CPU
tensors whose values end up in buffers), torch layers with ``reset_parameters`` (conv, norms, batch norm,
embedding with padding), and an ``_init_weights`` that is *structural* (it adds a buffer and a parameter)
and that the model's own ``__init__`` applies (``self.apply(self._init_weights)``), as older remote code does.

``write_scalar_layers`` writes a model whose layer count is read from a tensor value in ``__init__``
(``x.fill_(n); int(x.item())``): it builds on meta only with hybridload's ``cpu_scalars``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fixtures.code_folder import write_code_folder

ROOT = Path(__file__).resolve().parents[2]

_ZOO_CONFIGURATION = '''
from transformers import PretrainedConfig


class InitZooConfig(PretrainedConfig):
    model_type = "init_zoo"

    def __init__(self, vocab_size=32, hidden_size=16, num_hidden_layers=2, n_experts=4, expert_size=8,
                 rope_dim=8, tie_word_embeddings=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.n_experts = n_experts
        self.expert_size = expert_size
        self.rope_dim = rope_dim
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
'''

_ZOO_MODELING = '''
import math

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_init_zoo import InitZooConfig


class Rotary(nn.Module):
    def __init__(self, dim, base=10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        cpu_inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device="cpu") / dim))
        self.register_buffer("cpu_inv_freq", cpu_inv_freq, persistent=False)
        table = torch.empty(4, dim, device="cpu")
        table.fill_(0.5)
        table[0].zero_()
        self.register_buffer("cpu_table", table)
        generator = torch.Generator().manual_seed(1234)
        self.register_buffer("cpu_noise", torch.empty(3, device="cpu").normal_(0.0, 1.0, generator=generator))
        self.register_buffer("cpu_uniform", torch.empty(3, device="cpu").uniform_(-1.0, 1.0, generator=generator))


class Expert(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.expert_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.expert_size, bias=False)
        self.down_proj = nn.Linear(config.expert_size, config.hidden_size, bias=False)


class Gate(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.n_experts, config.hidden_size))
        self.e_score_correction_bias = nn.Parameter(torch.zeros(config.n_experts), requires_grad=False)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))


class MoE(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.experts = nn.ModuleList([Expert(config) for _ in range(config.n_experts)])
        self.gate = Gate(config)


class DirectInit(nn.Module):
    """nn.init.* called directly in __init__, and torch layers that reset themselves."""

    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.proj = nn.Linear(h, h)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        self.pos = nn.Parameter(torch.empty(1, 8, h))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.rot = nn.Parameter(torch.empty(h, h))
        nn.init.orthogonal_(self.rot)
        self.eye = nn.Parameter(torch.empty(h, h))
        nn.init.eye_(self.eye)
        self.xavier = nn.Parameter(torch.empty(h, 2 * h))
        nn.init.xavier_normal_(self.xavier)
        self.conv = nn.Conv1d(h, h, 3, groups=h, padding=2)
        self.norm = nn.LayerNorm(h)
        self.batch_norm = nn.BatchNorm1d(h)
        self.group_norm = nn.GroupNorm(2, h)
        self.embed = nn.Embedding(10, h, padding_idx=0)
        self.attn = nn.MultiheadAttention(h, 2)
        self.register_buffer("cpu_scale", nn.init.constant_(torch.empty(h, device="cpu"), 2.0))
        self.register_buffer("cpu_ones", nn.init.ones_(torch.empty(2, device="cpu")))
        self.register_buffer("A_log", torch.log(torch.arange(1, 5, dtype=torch.float32)))


class Structural(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class Layer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.rotary = Rotary(config.rope_dim)
        self.mlp = MoE(config)
        self.direct = DirectInit(config)
        self.structural = Structural(config)


class InitZooPreTrainedModel(PreTrainedModel):
    config_class = InitZooConfig
    base_model_prefix = "model"

    def _init_weights(self, module):
        if isinstance(module, Structural) and "scale" not in module._buffers:
            # structural: adds a buffer and a parameter, and replaces the dense layer's bias
            module.register_buffer("scale", torch.ones(module.dense.out_features))
            module.extra = nn.Parameter(torch.zeros(2, module.dense.in_features))
            module.dense.bias = nn.Parameter(torch.zeros(module.dense.out_features + 1))
        elif isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=0.02)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=0.02)
            module.weight.data[module.padding_idx or 0].zero_()


class InitZooModel(InitZooPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Layer(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size)
        self.apply(self._init_weights)  # remote code's own init helper, run on every device
        self.post_init()


class InitZooForCausalLM(InitZooPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.model = InitZooModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, **kwargs):
        return CausalLMOutput(logits=self.lm_head(self.model.embed_tokens(input_ids)))
'''

_SCALAR_CONFIGURATION = '''
from transformers import PretrainedConfig


class ScalarLayersConfig(PretrainedConfig):
    model_type = "scalar_layers"

    def __init__(self, hidden_size=8, depth=3, tie_word_embeddings=False, **kwargs):
        self.hidden_size = hidden_size
        self.depth = depth
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
'''

_SCALAR_MODELING = '''
import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_scalar_layers import ScalarLayersConfig


class ScalarLayersModel(PreTrainedModel):
    config_class = ScalarLayersConfig

    def __init__(self, config):
        super().__init__(config)
        steps = torch.zeros(1)
        steps.fill_(float(config.depth))  # a value written in place, then read back
        scale = torch.empty(2).normal_(0.0, 0.0)  # zero std: the value is the mean, 0.0
        depth = int(steps.item()) + int(scale.sum().item())
        self.layers = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size) for _ in range(depth))
        self.post_init()
'''


def _write(folder: Path, stem: str, prefix: str, model_type: str, configuration: str, modeling: str,
           auto_model: str, config: dict[str, Any]) -> Path:
    auto_map = {"AutoConfig": f"configuration_{stem}.{prefix}Config", "AutoModel": f"modeling_{stem}.{auto_model}"}
    if auto_model != f"{prefix}ForCausalLM":
        auto_map["AutoModelForCausalLM"] = f"modeling_{stem}.{prefix}ForCausalLM"
    return write_code_folder(folder, {f"configuration_{stem}.py": configuration, f"modeling_{stem}.py": modeling},
                             model_type=model_type, architecture=auto_model, auto_map=auto_map, config=config)


def write_init_zoo(folder: Path, **config: Any) -> Path:
    return _write(folder, "init_zoo", "InitZoo", "init_zoo", _ZOO_CONFIGURATION, _ZOO_MODELING, "InitZooModel", config)


def write_scalar_layers(folder: Path, **config: Any) -> Path:
    return write_code_folder(
        folder,
        {"configuration_scalar_layers.py": _SCALAR_CONFIGURATION, "modeling_scalar_layers.py": _SCALAR_MODELING},
        model_type="scalar_layers", architecture="ScalarLayersModel",
        auto_map={"AutoConfig": "configuration_scalar_layers.ScalarLayersConfig",
                  "AutoModel": "modeling_scalar_layers.ScalarLayersModel"},
        config=config,
    )


def benchmark_standins() -> Any:
    """``benchmarks/remote_standins.py``: the remote code the meta-build benchmark times, for tiny builds here."""
    spec = importlib.util.spec_from_file_location("hl_bench_remote_standins", ROOT / "benchmarks" / "remote_standins.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: tiny widths for the benchmark's stand-ins (same code, same structure rules)
TINY_DEEPSEEK = dict(
    num_hidden_layers=5, first_k_dense_replace=2, n_routed_experts=8, hidden_size=64, intermediate_size=96,
    moe_intermediate_size=32, q_lora_rank=32, kv_lora_rank=16, num_attention_heads=4, num_key_value_heads=4,
    qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, vocab_size=100, max_position_embeddings=64, n_group=2,
    topk_group=1, dtype="float32",
)
TINY_KIMI = dict(
    num_hidden_layers=4, num_experts=8, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
    kv_lora_rank=16, num_attention_heads=4, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, vocab_size=100,
    dtype="float32",
    linear_attn_config={"full_attn_layers": [4], "kda_layers": [1, 2, 3], "head_dim": 16, "num_heads": 4,
                        "short_conv_kernel_size": 4},
)
TINY_NEMOTRON = dict(
    num_hidden_layers=6, hidden_size=64, n_routed_experts=4, vocab_size=100, mamba_num_heads=8, mamba_head_dim=16,
    mamba_n_groups=2, ssm_state_size=16, head_dim=16, num_attention_heads=4, intermediate_size=64,
    moe_intermediate_size=32, moe_shared_expert_intermediate_size=64, dtype="float32",
)


# --------------------------------------------------------------------------------------------------
# what a tree is made of, beyond the signature
# --------------------------------------------------------------------------------------------------


def tree_facts(model: Any) -> dict[str, Any]:
    """Every module, parameter and buffer path with class, shape, dtype, device, grad flag, persistence,
    transformers' ``_is_hf_initialized`` flags, and the values of every tensor that is not on meta."""
    facts: dict[str, Any] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        facts[f"module {name}"] = (type(module).__qualname__, getattr(module, "_is_hf_initialized", None))
        for key, tensor in module._parameters.items():
            facts[f"param {name}.{key}"] = _tensor_fact(tensor)
        for key, tensor in module._buffers.items():
            persistent = key not in module._non_persistent_buffers_set
            facts[f"buffer {name}.{key}"] = (*_tensor_fact(tensor), persistent)
    return facts


def _tensor_fact(tensor: Any) -> tuple:
    if tensor is None:
        return (None,)
    values = None if tensor.is_meta else tensor.detach().cpu().tolist()
    return (type(tensor).__name__, tuple(tensor.shape), str(tensor.dtype), tensor.device.type,
            tensor.requires_grad, getattr(tensor, "_is_hf_initialized", None), values)


def real_values(model: Any) -> dict[str, Any]:
    """name -> tensor (cloned) of every parameter and buffer not on meta."""
    out = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if not tensor.is_meta:
            out[name] = tensor.detach().clone()
    return out
