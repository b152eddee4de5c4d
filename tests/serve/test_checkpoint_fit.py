"""A served model never holds weights the checkpoint did not provide, on every load path.

Missing and unexpected tensors are refused by ``load_real`` (CheckpointError, from transformers' loading info)
and by ``dispatch`` and ``dispatch(low_memory=True)`` before a weight is read (CheckpointCoverageError, from
the shard headers), each listing them; the class's own ignore rules, tied weights
and non-persistent buffers are honoured; ``allow_incomplete_checkpoint=True`` opts out and is recorded; a
truncated or corrupt shard is named; ``hybridload doctor`` follows its exit codes.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import hybridload
from hybridload.cli import main as cli
from hybridload.errors import CheckpointCoverageError, CheckpointError, PlanError

#: what each path raises for a checkpoint that does not fill the tree
REFUSAL = {"load_real": CheckpointError, "dispatch": CheckpointCoverageError, "dispatch_low_memory": CheckpointCoverageError}

PATHS = {
    "load_real": lambda plan, **kw: hybridload.load_real(plan, **kw),
    "dispatch": lambda plan, **kw: hybridload.dispatch(plan, **kw),
    "dispatch_low_memory": lambda plan, **kw: hybridload.dispatch(plan, low_memory=True, **kw),
}


@pytest.fixture
def llama(tmp_path: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "llama"
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _rewrite(folder: Path, change) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_missing_tensor_is_refused_on_every_path(llama, path):
    _rewrite(llama, lambda t: t.pop("model.layers.1.mlp.down_proj.weight"))
    plan = hybridload.resolve(llama)
    with pytest.raises(REFUSAL[path], match="model.layers.1.mlp.down_proj.weight") as info:
        PATHS[path](plan)
    assert "does not" in str(info.value) or "would stay on meta" in str(info.value)
    if path != "load_real":
        assert "Nothing was read" in str(info.value)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_an_unexpected_tensor_is_refused_on_every_path(llama, path):
    _rewrite(llama, lambda t: t.__setitem__("model.layers.1.extra.weight", torch.zeros(3)))
    plan = hybridload.resolve(llama)
    with pytest.raises(REFUSAL[path], match="model.layers.1.extra.weight"):
        PATHS[path](plan)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_the_class_ignore_rules_are_honoured(llama, path, monkeypatch):
    from transformers import LlamaForCausalLM

    _rewrite(llama, lambda t: t.__setitem__("model.layers.0.self_attn.rotary_emb.inv_freq", torch.zeros(4)))
    monkeypatch.setattr(LlamaForCausalLM, "_keys_to_ignore_on_load_unexpected", [r"rotary_emb\.inv_freq"], raising=False)
    model = PATHS[path](hybridload.resolve(llama))
    assert model.hybridload_checkpoint.complete


def test_tied_weights_and_non_persistent_buffers_are_not_missing(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "tied"
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    assert "lm_head.weight" not in load_file(folder / "model.safetensors")  # tied: stored once
    for path in PATHS.values():
        model = path(hybridload.resolve(folder))
        assert model.hybridload_checkpoint.complete
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_the_opt_out_is_explicit_and_recorded(llama):
    _rewrite(llama, lambda t: t.pop("model.norm.weight"))
    plan = hybridload.resolve(llama)
    model = hybridload.dispatch(plan, allow_incomplete_checkpoint=True)
    coverage = model.hybridload_checkpoint
    assert coverage.allowed_incomplete and coverage.missing == ["model.norm.weight"]
    with pytest.raises(PlanError, match="low_memory=False"):
        hybridload.dispatch(plan, low_memory=True, allow_incomplete_checkpoint=True)


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_shard_is_named_on_every_path(llama, path, damage):
    shard = llama / "model.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00\x01not safetensors" * 8)
    with pytest.raises(CheckpointError) as info:
        PATHS[path](hybridload.resolve(llama))
    message = str(info.value)
    assert "model.safetensors" in message


def test_doctor_exits_2_on_a_corrupt_checkpoint_without_a_traceback(llama, capsys):
    shard = llama / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    assert cli(["doctor", "--model", str(llama)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "Traceback" not in err
    assert cli(["doctor", "--model", str(llama), "--json"]) == 2
    assert '"type": "CheckpointError"' in capsys.readouterr().out
