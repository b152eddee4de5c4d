"""`hybridload check --checkpoint`: the checkpoint's tensor index against the meta tree, headers only."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hybridload.cli import main


@pytest.fixture
def llama(tmp_path: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)).save_pretrained(folder)
    return folder


def test_the_bundled_example_checkpoint_fills_its_tree(capsys):
    code = main(["check", "--checkpoint", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["identical"] is True
    assert data["checkpoint"]["ok"] is True and data["checkpoint"]["problems"] == 0
    assert data["checkpoint"]["checkpoint_tensors"] > 0


def test_a_checkpoint_that_does_not_fill_the_tree_exits_1(capsys, tmp_path, llama):
    other = tmp_path / "other"
    other.mkdir()
    tensors = load_file(llama / "model.safetensors")
    tensors.pop("model.layers.1.mlp.down_proj.weight")
    tensors["model.layers.1.mlp.extra.weight"] = torch.zeros(2)
    save_file(tensors, other / "model.safetensors", metadata={"format": "pt"})

    assert main(["check", str(llama), "--checkpoint"]) == 0  # the model's own checkpoint
    assert "checkpoint fills the tree" in capsys.readouterr().out
    code = main(["check", str(llama), "--checkpoint", str(other)])
    out = capsys.readouterr().out
    assert code == 1
    assert "model.layers.1.mlp.down_proj.weight" in out and "model.layers.1.mlp.extra.weight" in out
    code = main(["check", str(llama), "--checkpoint", str(other), "--json"])
    report = json.loads(capsys.readouterr().out)["checkpoint"]
    assert code == 1 and report["ok"] is False
    assert [t["key"] for t in report["unfilled"]] == ["model.layers.1.mlp.down_proj.weight"]
    assert [t["key"] for t in report["unconsumed"]] == ["model.layers.1.mlp.extra.weight"]


def test_a_checkpoint_that_is_not_there_is_a_usage_error(capsys, llama, tmp_path):
    code = main(["check", str(llama), "--checkpoint", str(tmp_path / "absent" / "folder"), "--json"])
    assert code == 2
    assert "does not exist" in json.loads(capsys.readouterr().out)["error"]["message"]
