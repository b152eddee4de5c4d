"""Builders for the load-plan tests: tiny checkpoints, remote-code folders and a hand-made HF cache layout.

Nothing here reaches the Hub: folders are written by the tests, weights are random, and "Hub" repos live
in a temporary ``HF_HUB_CACHE`` laid out the way huggingface_hub lays it out
(``models--org--name/refs/<branch>``, ``snapshots/<sha>/<files>``).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

HYBRID_CONFIG_PY = '''
from transformers import PretrainedConfig

_MARKER = {marker!r}
if _MARKER:
    with open(_MARKER, "a") as _f:
        _f.write("configuration\\n")


class NemotronHConfig(PretrainedConfig):
    model_type = "nemotron_h"

    def __init__(self, vocab_size=64, hidden_size=16, num_hidden_layers=3, hybrid_override_pattern="M*-",
                 num_attention_heads=2, num_key_value_heads=1, head_dim=8, intermediate_size=32,
                 mamba_num_heads=2, mamba_head_dim=8, ssm_state_size=4, n_groups=1, conv_kernel=4, expand=1,
                 n_routed_experts=2, moe_intermediate_size=16, layer_norm_epsilon=1e-5,
                 tie_word_embeddings=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.hybrid_override_pattern = hybrid_override_pattern
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.intermediate_size = intermediate_size
        self.mamba_num_heads = mamba_num_heads
        self.mamba_head_dim = mamba_head_dim
        self.ssm_state_size = ssm_state_size
        self.n_groups = n_groups
        self.conv_kernel = conv_kernel
        self.expand = expand
        self.n_routed_experts = n_routed_experts
        self.moe_intermediate_size = moe_intermediate_size
        self.layer_norm_epsilon = layer_norm_epsilon
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
'''

HYBRID_MODELING_PY = '''
import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_nemotron_h import NemotronHConfig

{kernel_import}

VERSION = {version}
_MARKER = {marker!r}
if _MARKER:
    with open(_MARKER, "a") as _f:
        _f.write("modeling\\n")


class RMSNorm(nn.Module):
    def __init__(self, size, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaMixer(nn.Module):
    def __init__(self, config):
        super().__init__()
        inner = config.mamba_num_heads * config.mamba_head_dim
        conv_dim = inner + 2 * config.n_groups * config.ssm_state_size
        self.in_proj = nn.Linear(config.hidden_size, inner + conv_dim + config.mamba_num_heads, bias=False)
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, config.conv_kernel, groups=conv_dim, padding=config.conv_kernel - 1)
        self.dt_bias = nn.Parameter(torch.ones(config.mamba_num_heads))
        self.A_log = nn.Parameter(torch.zeros(config.mamba_num_heads))
        self.D = nn.Parameter(torch.ones(config.mamba_num_heads))
        self.norm = RMSNorm(inner)
        self.out_proj = nn.Linear(inner, config.hidden_size, bias=False)

    def forward(self, x):
        return self.out_proj(self.in_proj(x)[..., : self.out_proj.in_features])


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.q_proj = nn.Linear(h, config.num_attention_heads * d, bias=False)
        self.k_proj = nn.Linear(h, config.num_key_value_heads * d, bias=False)
        self.v_proj = nn.Linear(h, config.num_key_value_heads * d, bias=False)
        self.o_proj = nn.Linear(config.num_attention_heads * d, h, bias=False)

    def forward(self, x):
        return self.o_proj(self.q_proj(x))


class SdpaAttention(Attention):
    pass


class FlashAttention2(Attention):
    pass


ATTENTION_CLASSES = {{"eager": Attention, "sdpa": SdpaAttention, "flash_attention_2": FlashAttention2}}


class MLP(nn.Module):
    def __init__(self, config, size=None):
        super().__init__()
        size = size or config.intermediate_size
        self.up_proj = nn.Linear(config.hidden_size, size, bias=False)
        self.down_proj = nn.Linear(size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(torch.relu(self.up_proj(x)) ** 2)


class MoE(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate = nn.Linear(config.hidden_size, config.n_routed_experts, bias=False)
        self.experts = nn.ModuleList(MLP(config, config.moe_intermediate_size) for _ in range(config.n_routed_experts))

    def forward(self, x):
        return sum(expert(x) for expert in self.experts)


class Block(nn.Module):
    def __init__(self, config, kind):
        super().__init__()
        self.norm = RMSNorm(config.hidden_size, config.layer_norm_epsilon)
        if kind == "M":
            self.mixer = MambaMixer(config)
        elif kind == "*":
            self.mixer = ATTENTION_CLASSES[config._attn_implementation](config)
        elif kind == "E":
            self.mixer = MoE(config)
        else:
            self.mixer = MLP(config)

    def forward(self, x):
        return x + self.mixer(self.norm(x))


class NemotronHPreTrainedModel(PreTrainedModel):
    config_class = NemotronHConfig
    base_model_prefix = "backbone"
    _supports_flash_attn = True
    _supports_sdpa = True


class NemotronHModel(NemotronHPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, kind) for kind in config.hybrid_override_pattern)
        self.norm_f = RMSNorm(config.hidden_size, config.layer_norm_epsilon)
        {v2_line}
        self.post_init()

    def forward(self, input_ids):
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.norm_f(x)


class NemotronHForCausalLM(NemotronHPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.backbone = NemotronHModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, **kwargs):
        return CausalLMOutputWithPast(logits=self.lm_head(self.backbone(input_ids)))
'''

TOY_CONFIG_PY = '''
from transformers import PretrainedConfig

_MARKER = {marker!r}
if _MARKER:
    with open(_MARKER, "a") as _f:
        _f.write("configuration\\n")


class ToyConfig(PretrainedConfig):
    model_type = "hl_toy"

    def __init__(self, vocab_size=32, hidden_size=8, num_hidden_layers=2, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        super().__init__(**kwargs)
'''

TOY_MODELING_PY = '''
from torch import nn
from transformers import PreTrainedModel

from .configuration_toy import ToyConfig

_MARKER = {marker!r}
if _MARKER:
    with open(_MARKER, "a") as _f:
        _f.write("modeling\\n")


class ToyForCausalLM(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "toy"

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(nn.Linear(config.hidden_size, config.hidden_size) for _ in range(config.num_hidden_layers))
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()
'''

GUARDED_KERNEL_IMPORT = """
try:
    from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
except ImportError:
    rmsnorm_fn = None
"""
UNGUARDED_KERNEL_IMPORT = """
from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
from causal_conv1d import causal_conv1d_fn
"""

HYBRID_AUTO_MAP = {
    "AutoConfig": "configuration_nemotron_h.NemotronHConfig",
    "AutoModelForCausalLM": "modeling_nemotron_h.NemotronHForCausalLM",
}


def hybrid_config(pattern: str = "M*-", **overrides: Any) -> dict[str, Any]:
    """A config.json both native ``nemotron_h`` and the remote NemotronHConfig accept."""
    config = {
        "model_type": "nemotron_h",
        "architectures": ["NemotronHForCausalLM"],
        "auto_map": dict(HYBRID_AUTO_MAP),
        "vocab_size": 64,
        "hidden_size": 16,
        "num_hidden_layers": len(pattern),
        "hybrid_override_pattern": pattern,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "intermediate_size": 32,
        "mamba_num_heads": 2,
        "mamba_head_dim": 8,
        "ssm_state_size": 4,
        "n_groups": 1,
        "conv_kernel": 4,
        "expand": 1,
        "n_routed_experts": 2,
        "moe_intermediate_size": 16,
        "moe_shared_expert_intermediate_size": 16,
        "n_shared_experts": 1,
        "num_experts_per_tok": 1,
        "chunk_size": 8,
        "tie_word_embeddings": False,
        "dtype": "float32",
    }
    config.update(overrides)
    return config


class Builders:
    """Writers for test repositories (folders, and cache snapshots made from folders)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.marker = tmp_path / "remote_code_ran.txt"

    # -- folders ---------------------------------------------------------------------------------------
    def llama(self, name: str = "llama", **overrides: Any) -> Path:
        """A native tiny Llama checkpoint written by save_pretrained (random weights)."""
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        folder = self.tmp / name
        values = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
        values.update(overrides)
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**values))
        if "dtype" in overrides:
            model = model.to(getattr(torch, overrides["dtype"]))
        model.save_pretrained(folder)
        return folder

    def hybrid(self, name: str = "hybrid", *, pattern: str = "M*-", version: int = 1, guarded: bool = True,
               kernel_import: str | None = None, weights: str | None = "remote", marker: bool = True,
               **config_overrides: Any) -> Path:
        """A Nemotron-H-like repo: native ``nemotron_h`` *and* an auto_map remote implementation.

        guarded=False: top-level CUDA-kernel imports (mamba_ssm, causal_conv1d, or ``kernel_import``) as
        real Hub code has them. weights: "remote" (checkpoint of the remote tree, backbone.*), "native"
        (model.*) or None.
        """
        folder = self.tmp / name
        folder.mkdir(parents=True)
        mark = str(self.marker) if marker else ""
        (folder / "configuration_nemotron_h.py").write_text(HYBRID_CONFIG_PY.format(marker=mark))
        (folder / "modeling_nemotron_h.py").write_text(
            HYBRID_MODELING_PY.format(
                marker=mark, version=version,
                kernel_import=kernel_import or (GUARDED_KERNEL_IMPORT if guarded else UNGUARDED_KERNEL_IMPORT),
                v2_line="self.v2_only = nn.Linear(config.hidden_size, config.hidden_size)" if version >= 2 else "pass",
            )
        )
        config = hybrid_config(pattern, **config_overrides)
        self.write_config(folder, config)
        if weights is not None:
            self._hybrid_weights(folder, config, weights)
        self.clear_marker()
        return folder

    def _hybrid_weights(self, folder: Path, config: dict[str, Any], kind: str) -> None:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(0)
        if kind == "remote":
            cfg = AutoConfig.from_pretrained(folder, trust_remote_code=True)
            model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=True)
        else:
            from transformers import NemotronHConfig, NemotronHForCausalLM

            native = {k: v for k, v in config.items() if k not in ("auto_map", "model_type", "architectures")}
            model = NemotronHForCausalLM(NemotronHConfig(**native))
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

    def toy_remote_only(self, name: str = "toy", *, weights: bool = False) -> Path:
        """A repo whose model_type transformers does not know: only its remote code can load it."""
        folder = self.tmp / name
        folder.mkdir(parents=True)
        (folder / "configuration_toy.py").write_text(TOY_CONFIG_PY.format(marker=str(self.marker)))
        (folder / "modeling_toy.py").write_text(TOY_MODELING_PY.format(marker=str(self.marker)))
        self.write_config(folder, {
            "model_type": "hl_toy",
            "architectures": ["ToyForCausalLM"],
            "auto_map": {"AutoConfig": "configuration_toy.ToyConfig", "AutoModelForCausalLM": "modeling_toy.ToyForCausalLM"},
            "vocab_size": 32, "hidden_size": 8, "num_hidden_layers": 2, "dtype": "float32",
        })
        if weights:
            import torch
            from safetensors.torch import save_file
            from transformers import AutoConfig, AutoModelForCausalLM

            torch.manual_seed(0)
            cfg = AutoConfig.from_pretrained(folder, trust_remote_code=True)
            model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=True)
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
                      metadata={"format": "pt"})
        self.clear_marker()
        return folder

    def write_config(self, folder: Path, config: dict[str, Any]) -> None:
        (folder / "config.json").write_text(json.dumps(config, indent=2))

    def edit_config(self, folder: Path, **changes: Any) -> None:
        config = json.loads((folder / "config.json").read_text())
        for key, value in changes.items():
            if value is _DELETE:
                config.pop(key, None)
            else:
                config[key] = value
        self.write_config(folder, config)

    def tokenizer(self, folder: Path) -> None:
        """A tiny word-level fast tokenizer saved next to the model."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {"[UNK]": 0, "[PAD]": 1, "hello": 2, "world": 3}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)

    # -- the remote code's side effect -----------------------------------------------------------------
    def clear_marker(self) -> None:
        self.marker.unlink(missing_ok=True)

    def remote_code_ran(self) -> bool:
        return self.marker.exists()


_DELETE = object()


class HubCache:
    """A temporary HF cache (``models--org--name/{refs,snapshots}``) that huggingface_hub and transformers read."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def storage(self, repo_id: str) -> Path:
        return self.root / ("models--" + repo_id.replace("/", "--"))

    def add_snapshot(self, repo_id: str, folder: Path, *, refs: tuple[str, ...] = ("main",), sha: str | None = None) -> str:
        """Copy ``folder`` in as a snapshot; its sha is derived from the content unless given. Returns the sha."""
        if sha is None:
            digest = hashlib.sha1()
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
            sha = digest.hexdigest()
        snapshot = self.storage(repo_id) / "snapshots" / sha
        shutil.copytree(folder, snapshot, ignore=shutil.ignore_patterns("__pycache__"))
        for ref in refs:
            self.set_ref(repo_id, ref, sha)
        return sha

    def set_ref(self, repo_id: str, ref: str, sha: str) -> None:
        path = self.storage(repo_id) / "refs" / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sha)


@pytest.fixture
def build(tmp_path: Path) -> Builders:
    return Builders(tmp_path)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubCache:
    """Point huggingface_hub (and so transformers) at an empty temporary cache."""
    from huggingface_hub import constants

    root = tmp_path / "hf_cache"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    return HubCache(root)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _no_trust_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without a trust policy in the environment (each test sets the one it needs)."""
    monkeypatch.delenv("HYBRIDLOAD_TRUST_REMOTE_CODE", raising=False)


@pytest.fixture
def routing() -> Any:
    """The import-time integration with plan routing installed (what ``import hybridload`` sets up)."""
    from hybridload.integrations import install as integration

    integration.install()
    yield integration
    integration.install()  # leave the integration installed, as ``import hybridload`` does


def tree(model: Any) -> dict[str, Any]:
    """Names, classes, shapes and dtypes of a module tree (what tree equivalence means)."""
    modules = {name: type(module).__name__ for name, module in model.named_modules()}
    tensors = {
        name: (tuple(t.shape), str(t.dtype))
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    return {"modules": modules, "tensors": tensors}


@pytest.fixture
def tree_of() -> Callable[[Any], dict[str, Any]]:
    return tree


@pytest.fixture
def delete_marker() -> object:
    return _DELETE

