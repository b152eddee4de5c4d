"""Helpers for the compat tests: tiny remote-code folders written the way 4.x-era Hub models were.

Each pattern reproduces one failure seen when 4.x remote code meets transformers 5.x (see PATTERNS), around
a tiny causal LM whose structure depends on the config. Folder names are unique per call, because
transformers derives the dynamic-module name from the folder name.
"""
from __future__ import annotations

import json
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Pattern:
    summary: str
    #: exception type and message fragment plain transformers 5.x raises
    plain_error: type[BaseException]
    plain_fragment: str
    #: compat entry ids that must fire for this pattern
    fires: tuple[str, ...]


PATTERNS: dict[str, Pattern] = {
    "fx_probe": Pattern(
        "DeepSeek-V3/Jamba/MiniMax-M1/Hymba: from transformers.utils.import_utils import is_torch_fx_available",
        ImportError,
        "is_torch_fx_available",
        ("transformers.utils.import_utils.is_torch_fx_available",),
    ),
    "output_recorder": Pattern(
        "Kimi-Linear: from transformers.utils.generic import OutputRecorder",
        ImportError,
        "OutputRecorder",
        ("transformers.utils.generic.OutputRecorder",),
    ),
    "stream_generator": Pattern(
        "Qwen-7B: transformers_stream_generator does from transformers import DisjunctiveConstraint",
        ImportError,
        "DisjunctiveConstraint",
        (
            "transformers.DisjunctiveConstraint",
            "transformers.BeamSearchScorer",
            "transformers.PhrasalConstraint",
            "transformers.ConstrainedBeamSearchScorer",
            "transformers.generation.utils.SampleOutput",
        ),
    ),
    "pad_token_id": Pattern(
        "DNABERT-2: 'BertConfig' object has no attribute 'pad_token_id'",
        AttributeError,
        "pad_token_id",
        ("config.pad_token_id",),
    ),
    "forced_bos": Pattern(
        "Florence-2: 'Florence2LanguageConfig' object has no attribute 'forced_bos_token_id'",
        AttributeError,
        "forced_bos_token_id",
        ("config.forced_bos_token_id",),
    ),
    "item_on_meta": Pattern(
        "InternViT drop-path schedule and xIELU: Tensor.item() on meta tensors in __init__",
        RuntimeError,
        "meta",
        ("meta.cpu_scalars",),
    ),
    "tied_list": Pattern(
        "4.x tying: _tied_weights_keys list and no tie_word_embeddings in config.json",
        AttributeError,
        "keys",
        ("config.tie_word_embeddings", "model.tied_weights_keys"),
    ),
}

_CONFIG = '''
from transformers import PretrainedConfig


class $CONFIG_CLASS(PretrainedConfig):
    model_type = "$MODEL_TYPE"

    def __init__(self, vocab_size=64, hidden_size=16, num_hidden_layers=2, drop_path_rate=0.0,
                 $CONFIG_PARAMS**kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.drop_path_rate = drop_path_rate
        super().__init__($SUPER_ARGS**kwargs)
$CONFIG_TAIL
'''

_MODELING = '''
import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_$STEM import $CONFIG_CLASS
$HEADER


class Block(nn.Module):
    def __init__(self, config, drop_prob=0.0):
        super().__init__()
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.drop_prob = drop_prob
$BLOCK_INIT

    def forward(self, x):
        return x + self.proj(x)


class $PREFIXPreTrainedModel(PreTrainedModel):
    config_class = $CONFIG_CLASS
    base_model_prefix = "model"
$PRETRAINED_BODY


class $PREFIXModel($PREFIXPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size$PADDING)
$MODEL_INIT
        self.layers = nn.ModuleList([Block(config, dpr[i]) for i in range(config.num_hidden_layers)])
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(self, input_ids):
        h = self.embed_tokens(input_ids)
        for layer in self.layers:
            h = layer(h)
        return h


class $PREFIXForCausalLM($PREFIXPreTrainedModel, GenerationMixin):
    _tied_weights_keys = $TIED

    def __init__(self, config):
        super().__init__(config)
        self.model = $PREFIXModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, **kwargs):
        return CausalLMOutput(logits=self.lm_head(self.model(input_ids)))
'''

_STREAM_PACKAGE = {
    "__init__.py": "from .main import init_stream_support\n",
    # the import block of transformers_stream_generator/main.py (0.0.5)
    "main.py": textwrap.dedent(
        """
        from transformers import (
            GenerationConfig,
            GenerationMixin,
            LogitsProcessorList,
            StoppingCriteriaList,
            DisjunctiveConstraint,
            BeamSearchScorer,
            PhrasalConstraint,
            ConstrainedBeamSearchScorer,
            PreTrainedModel,
        )
        from transformers.generation.utils import GenerateOutput, SampleOutput, logger


        def init_stream_support():
            GenerationMixin.hl_fixture_stream = True
        """
    ),
}

# pattern -> template substitutions (anything not given takes the plain default below)
_PLAIN = {
    "CONFIG_PARAMS": "pad_token_id=0, tie_word_embeddings=False, ",
    "SUPER_ARGS": "pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, ",
    "CONFIG_TAIL": "",
    "HEADER": "",
    "BLOCK_INIT": "",
    "PRETRAINED_BODY": "    pass",
    "PADDING": ", padding_idx=config.pad_token_id",
    "MODEL_INIT": "        dpr = [0.0] * config.num_hidden_layers",
    "TIED": '["lm_head.weight"]',
}
_PATTERN_SOURCE: dict[str, dict[str, str]] = {
    "inert": {"TIED": '{"lm_head.weight": "model.embed_tokens.weight"}'},
    "fx_probe": {
        "HEADER": textwrap.dedent(
            """
            from transformers.utils.import_utils import is_torch_fx_available

            if is_torch_fx_available():
                import torch.fx  # DeepSeek-V3 wraps its mask helper for torch.fx here
            """
        )
    },
    "output_recorder": {
        "HEADER": "from transformers.utils.generic import OutputRecorder\n",
        "PRETRAINED_BODY": '    _can_record_outputs = {"hidden_states": OutputRecorder(Block, index=0)}',
    },
    "stream_generator": {"HEADER": "from transformers_stream_generator import init_stream_support\n"},
    "pad_token_id": {"CONFIG_PARAMS": "tie_word_embeddings=False, ", "SUPER_ARGS": "tie_word_embeddings=tie_word_embeddings, "},
    "forced_bos": {
        "CONFIG_PARAMS": "pad_token_id=1, bos_token_id=0, eos_token_id=2, forced_eos_token_id=2, tie_word_embeddings=False, ",
        "SUPER_ARGS": "pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, "
        "forced_eos_token_id=forced_eos_token_id, tie_word_embeddings=tie_word_embeddings, ",
        # BART/Florence-2: "ensure backward compatibility for BART CNN models"
        "CONFIG_TAIL": textwrap.indent(
            textwrap.dedent(
                """
                if self.forced_bos_token_id is None and kwargs.get("force_bos_token_to_be_generated", False):
                    self.forced_bos_token_id = self.bos_token_id
                """
            ),
            " " * 8,
        ),
    },
    "item_on_meta": {
        # InternViT / VideoMAEv2 stochastic depth, and an xIELU-style activation (Apertus)
        "MODEL_INIT": "        dpr = [x.item() for x in torch.linspace(0, config.drop_path_rate, config.num_hidden_layers)]",
        "BLOCK_INIT": textwrap.indent(
            textwrap.dedent(
                """
                self.alpha = nn.Parameter(torch.log(torch.expm1(torch.tensor(0.8))).unsqueeze(0))
                self.register_buffer("beta", torch.tensor(0.5))
                self._beta_scalar = float(self.beta.detach().cpu().float().item())
                """
            ),
            " " * 8,
        ),
    },
    "tied_list": {"CONFIG_PARAMS": "pad_token_id=0, ", "SUPER_ARGS": "pad_token_id=pad_token_id, "},
}


def write_compat_model(root: Path, pattern: str, **config: Any) -> Path:
    """Write the remote-code folder of ``pattern`` (or ``"inert"``) under ``root``; returns the folder."""
    subs = {**_PLAIN, **_PATTERN_SOURCE[pattern]}
    stem = pattern.replace("_", "")
    prefix = "Hl" + "".join(part.title() for part in pattern.split("_"))
    config_class = "BertConfig" if pattern == "pad_token_id" else f"{prefix}Config"
    model_type = f"hl_compat_{stem}"
    subs.update(STEM=stem, PREFIX=prefix, CONFIG_CLASS=config_class, MODEL_TYPE=model_type)
    folder = Path(root) / f"{pattern}_{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)

    def render(template: str) -> str:
        out = template
        for key in sorted(subs, key=len, reverse=True):
            out = out.replace(f"${key}", subs[key])
        return out

    (folder / f"configuration_{stem}.py").write_text(render(_CONFIG))
    (folder / f"modeling_{stem}.py").write_text(render(_MODELING))
    values = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 2, **config}
    if pattern == "item_on_meta":
        values.setdefault("drop_path_rate", 0.3)
    (folder / "config.json").write_text(
        json.dumps(
            {
                **values,
                "model_type": model_type,
                "architectures": [f"{prefix}ForCausalLM"],
                "auto_map": {
                    "AutoConfig": f"configuration_{stem}.{config_class}",
                    "AutoModel": f"modeling_{stem}.{prefix}Model",
                    "AutoModelForCausalLM": f"modeling_{stem}.{prefix}ForCausalLM",
                },
            },
            indent=2,
        )
    )
    if pattern == "stream_generator":
        site = Path(root) / "site" / "transformers_stream_generator"
        site.mkdir(parents=True, exist_ok=True)
        for name, text in _STREAM_PACKAGE.items():
            (site / name).write_text(text)
    return folder


def tree(model: Any) -> list[tuple]:
    """Module types, parameter/buffer names, shapes, dtypes, ties, and float attributes set in ``__init__``."""
    rows: list[tuple] = []
    for name, module in model.named_modules():
        floats = tuple(sorted((k, round(v, 6)) for k, v in vars(module).items() if isinstance(v, float)))
        rows.append(("module", name, type(module).__name__, floats))
    for name, p in model.named_parameters(remove_duplicate=False):
        rows.append(("param", name, tuple(p.shape), str(p.dtype)))
    for name, b in model.named_buffers(remove_duplicate=False):
        rows.append(("buffer", name, tuple(b.shape), str(b.dtype)))
    rows.append(("tied", sorted(n for n, _ in model.named_parameters(remove_duplicate=False)) != sorted(n for n, _ in model.named_parameters())))
    return rows


def tiny_tokenizer(vocab_size: int = 64) -> Any:
    """A word-level fast tokenizer over ``w0 .. w{n-2}`` (nnsight's LanguageModel wants one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size - 1)} | {"[UNK]": vocab_size - 1}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[UNK]")
