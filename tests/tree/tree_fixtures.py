"""Model builders of the tree tests (importable from subprocesses too, so no pytest here).

``write_tiny_hybrid`` writes a tiny Nemotron-H-style remote-code model: Mamba2 + attention + MLP + MoE blocks
chosen by ``hybrid_override_pattern``; its Mamba mixer imports a CUDA-only kernel at module import, so a meta
build needs hybridload's kernel shim, like real Hub remote code. The others are tiny native configs.
"""
from __future__ import annotations

import json
from pathlib import Path

CONFIGURATION = '''
from transformers import PretrainedConfig


class TinyHybridConfig(PretrainedConfig):
    model_type = "tiny_hybrid"

    def __init__(self, vocab_size=64, hidden_size=32, hybrid_override_pattern="M-*E", num_attention_heads=4,
                 n_routed_experts=4, ssm_state_size=8, tie_word_embeddings=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.hybrid_override_pattern = hybrid_override_pattern
        self.num_hidden_layers = len(hybrid_override_pattern)
        self.num_attention_heads = num_attention_heads
        self.n_routed_experts = n_routed_experts
        self.ssm_state_size = ssm_state_size
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
'''

MODELING = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from mamba_ssm.ops.triton.selective_state_update import selective_state_update  # CUDA-only kernel

from .configuration_tiny_hybrid import TinyHybridConfig


class TinyHybridRMSNorm(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))


class TinyHybridMamba2Mixer(nn.Module):
    def __init__(self, config):
        super().__init__()
        inner = 2 * config.hidden_size
        self.in_proj = nn.Linear(config.hidden_size, 2 * inner + 2 * config.ssm_state_size, bias=False)
        self.conv1d = nn.Conv1d(inner, inner, kernel_size=4, groups=inner, padding=3)
        self.A_log = nn.Parameter(torch.zeros(4))
        self.D = nn.Parameter(torch.ones(4))
        self.dt_bias = nn.Parameter(torch.zeros(4))
        self.norm = TinyHybridRMSNorm(inner)
        self.out_proj = nn.Linear(inner, config.hidden_size, bias=False)


class TinyHybridAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        size = config.hidden_size
        self.q_proj = nn.Linear(size, size, bias=False)
        self.k_proj = nn.Linear(size, size // 2, bias=False)
        self.v_proj = nn.Linear(size, size // 2, bias=False)
        self.o_proj = nn.Linear(size, size, bias=False)
        self.register_buffer("inv_freq", torch.ones(size // config.num_attention_heads // 2), persistent=False)


class TinyHybridMLP(nn.Module):
    def __init__(self, config, size=None):
        super().__init__()
        size = size or 2 * config.hidden_size
        self.up_proj = nn.Linear(config.hidden_size, size, bias=False)
        self.down_proj = nn.Linear(size, config.hidden_size, bias=False)


class TinyHybridTopkRouter(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(config.n_routed_experts, config.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(config.n_routed_experts))


class TinyHybridMOE(nn.Module):
    def __init__(self, config):
        super().__init__()
        experts = [TinyHybridMLP(config, config.hidden_size) for _ in range(config.n_routed_experts)]
        self.experts = nn.ModuleList(experts)
        self.gate = TinyHybridTopkRouter(config)
        self.shared_experts = TinyHybridMLP(config)


MIXERS = {"M": TinyHybridMamba2Mixer, "*": TinyHybridAttention, "-": TinyHybridMLP, "E": TinyHybridMOE}


class TinyHybridBlock(nn.Module):
    def __init__(self, config, index):
        super().__init__()
        self.norm = TinyHybridRMSNorm(config.hidden_size)
        self.mixer = MIXERS[config.hybrid_override_pattern[index]](config)


class TinyHybridPreTrainedModel(PreTrainedModel):
    config_class = TinyHybridConfig
    base_model_prefix = "backbone"

    def _init_weights(self, module):
        pass


class TinyHybridModel(TinyHybridPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([TinyHybridBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm_f = TinyHybridRMSNorm(config.hidden_size)
        self.post_init()


class TinyHybridForCausalLM(TinyHybridPreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.backbone = TinyHybridModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
'''


def write_tiny_hybrid(root: Path, name: str = "tiny_hybrid", **config: object) -> Path:
    """Write the remote-code folder ``root/name`` (config.json with auto_map + two code files)."""
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_tiny_hybrid.py").write_text(CONFIGURATION)
    (folder / "modeling_tiny_hybrid.py").write_text(MODELING)
    values = {
        "model_type": "tiny_hybrid",
        "architectures": ["TinyHybridForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_tiny_hybrid.TinyHybridConfig",
            "AutoModelForCausalLM": "modeling_tiny_hybrid.TinyHybridForCausalLM",
        },
        "hybrid_override_pattern": "M-*E",
        **config,
    }
    (folder / "config.json").write_text(json.dumps(values, indent=2))
    return folder


def build_tiny_hybrid(folder: Path):
    """Meta build of the remote-code model inside hybridload's meta-build window (the kernel shim)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from hybridload.build import BuildSpec, build_session

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=True)
    with build_session(BuildSpec("meta")):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=True)


def tiny_llama_config(**overrides: object):
    from transformers import LlamaConfig

    values = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_gpt2_config(**overrides: object):
    from transformers import GPT2Config

    values = dict(n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
    values.update(overrides)
    return GPT2Config(**values)


def meta_build(config):
    """``AutoModelForCausalLM.from_config`` under ``torch.device("meta")`` (no weights allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
