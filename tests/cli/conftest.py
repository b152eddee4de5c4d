from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_llama(folder: Path, hidden: int = 32, layers: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 128,
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture
def llama_folder(tmp_path: Path):
    return lambda name="llama", **kw: write_llama(tmp_path / name, **kw)
