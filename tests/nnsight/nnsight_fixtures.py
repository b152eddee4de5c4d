"""Tiny models for the nnsight tests: a gpt2-shaped native model and a remote-code hybrid that needs the shim.

``write_tiny_hybrid`` writes a remote-code repo whose modeling file imports ``mamba_ssm`` at module level the
way Nemotron-H does (``try: ... except ImportError: raise ImportError(...)``), builds per-implementation
attention classes (``SdpaAttention`` / ``FlashAttention2``), never *calls* the kernel (its forward is plain
torch, so a local run works once the module can be imported), and has a ``version`` that changes the tree
(v2 adds ``model.v2_only``). Weights are random (seeded), written by building the model on CPU under the shim.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent

CONFIG_PY = '''
from transformers import PretrainedConfig


class HlNnsightTinyConfig(PretrainedConfig):
    model_type = "hl_nnsight_tiny"

    def __init__(self, vocab_size=16, hidden_size=8, pattern="M*", **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.pattern = pattern
        self.num_hidden_layers = len(pattern)
        super().__init__(**kwargs)
'''

MODELING_PY = '''
import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_hl_nnsight_tiny import HlNnsightTinyConfig

try:
    from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
except ImportError:
    raise ImportError("mamba-ssm is required by this model but cannot be imported")

VERSION = {version}


class Mixer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.in_proj = nn.Linear(config.hidden_size, 2 * config.hidden_size, bias=False)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x):
        a, b = self.in_proj(x).chunk(2, dim=-1)
        return self.out_proj(a * torch.sigmoid(b))


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.o_proj(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))


class SdpaAttention(Attention):
    pass


class FlashAttention2(Attention):
    pass


ATTENTION = {{"eager": Attention, "sdpa": SdpaAttention, "flash_attention_2": FlashAttention2}}


class Block(nn.Module):
    def __init__(self, config, kind):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size)
        self.mixer = Mixer(config) if kind == "M" else ATTENTION[config._attn_implementation](config)

    def forward(self, x):
        return x + self.mixer(self.norm(x))


class HlNnsightTinyModel(PreTrainedModel):
    config_class = HlNnsightTinyConfig
    base_model_prefix = "model"
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, kind) for kind in config.pattern)
        {v2_line}
        self.post_init()

    def forward(self, input_ids):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return x


class HlNnsightTinyForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = HlNnsightTinyConfig
    base_model_prefix = "model"
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config):
        super().__init__(config)
        self.model = HlNnsightTinyModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        return CausalLMOutputWithPast(logits=self.lm_head(self.model(input_ids)))
'''

WORDS = ["[UNK]", "[PAD]", "hello", "world", "the", "model", "runs", "here"]


def write_tokenizer(folder: Path, words: list[str] | None = None) -> None:
    """A word-level fast tokenizer (pad = eos = [PAD]) saved into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(words or WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[PAD]").save_pretrained(folder)


def write_tiny_hybrid(folder: Path, *, version: int = 1, pattern: str = "M*M", seed: int = 0,
                      words: list[str] | None = None) -> Path:
    """The remote-code hybrid described in the module docstring, with weights and a tokenizer."""
    folder.mkdir(parents=True)
    (folder / "configuration_hl_nnsight_tiny.py").write_text(CONFIG_PY)
    v2_line = "self.v2_only = nn.Linear(config.hidden_size, config.hidden_size)" if version >= 2 else "pass"
    (folder / "modeling_hl_nnsight_tiny.py").write_text(MODELING_PY.format(version=version, v2_line=v2_line))
    config = {
        "model_type": "hl_nnsight_tiny",
        "architectures": ["HlNnsightTinyForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_hl_nnsight_tiny.HlNnsightTinyConfig",
            "AutoModelForCausalLM": "modeling_hl_nnsight_tiny.HlNnsightTinyForCausalLM",
        },
        "vocab_size": 16,
        "hidden_size": 8,
        "pattern": pattern,
        "num_hidden_layers": len(pattern),
        "dtype": "float32",
        "pad_token_id": 1,
        "eos_token_id": 1,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    write_weights(folder, seed=seed)
    write_tokenizer(folder, words)
    return folder


def write_weights(folder: Path, *, seed: int = 0, auto: str = "AutoModelForCausalLM") -> None:
    """Random weights for a remote-code folder: the model built on CPU inside the kernel shim, then saved."""
    import torch
    import transformers
    from safetensors.torch import save_file

    from hybridload.shim.kernel_shim import kernel_shim

    torch.manual_seed(seed)
    with kernel_shim():
        config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)
        model = getattr(transformers, auto).from_config(config, trust_remote_code=True)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def write_gpt2(folder: Path, *, n_layer: int = 2, seed: int = 0) -> Path:
    """A native gpt2-shaped model (random weights) with a word-level tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=2, n_embd=16, vocab_size=len(WORDS), n_positions=32,
                        bos_token_id=1, eos_token_id=1, pad_token_id=1)
    GPT2LMHeadModel(config).save_pretrained(folder)
    write_tokenizer(folder)
    return folder


class HubCache:
    """A temporary HF cache (``models--org--name/{refs,snapshots}``) read by huggingface_hub and transformers."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add_snapshot(self, repo_id: str, folder: Path, *, refs: tuple[str, ...] = ("main",)) -> str:
        digest = hashlib.sha1()
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
        sha = digest.hexdigest()
        storage = self.root / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(folder, storage / "snapshots" / sha, ignore=shutil.ignore_patterns("__pycache__"))
        for ref in refs:
            (storage / "refs").mkdir(parents=True, exist_ok=True)
            (storage / "refs" / ref).write_text(sha)
        return sha


def tensors(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value.detach().clone() for name, value in values.items()}


@contextlib.contextmanager
def plain_nnsight() -> Iterator[None]:
    """nnsight's own classes (hybridload uninstalled) inside the block; reinstalled after."""
    import hybridload
    from nnsight.modeling.transformers import TransformersModel

    hybridload.uninstall()
    try:
        assert not getattr(TransformersModel._load_meta, "__hybridload_patch__", False)
        yield
    finally:
        hybridload.install()


def subprocess_env(tmp: Path, *, kernels: bool) -> dict[str, str]:
    """Environment of a client/server process: offline, own module cache, fake kernel packages on the server."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "HYBRIDLOAD_DISABLE", "HYBRIDLOAD_TRUST_REMOTE_CODE"}}
    paths = [str(HERE)] + ([str(TESTS / "fakekernels")] if kernels else [])
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        HF_HUB_OFFLINE="1",
        HF_MODULES_CACHE=str(tmp / ("hf_modules_server" if kernels else "hf_modules_client")),
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    # loopback only: never route 127.0.0.1 through a proxy the CI environment may configure
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = ",".join(filter(None, [env.get(name, ""), "127.0.0.1", "localhost"]))
    return env
