"""Broken checkpoints and bad arguments give typed errors that name the file and the fix; the model stays on meta."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoConfig

from hybridload.errors import CheckpointError, PlanError
from hybridload.serve.streaming import checkpoint as stream_checkpoint
from hybridload.serve.streaming import stream_load


def _shards(folder: Path) -> list[str]:
    return sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()))


def _shard_of(folder: Path, key_suffix: str) -> tuple[str, str]:
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    key = next(k for k in weight_map if k.endswith(key_suffix))
    return key, weight_map[key]


def _rewrite_shard(folder: Path, shard: str, drop: str | None = None, add: dict | None = None) -> None:
    with safe_open(str(folder / shard), "pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if k != drop}
    tensors.update(add or {})
    save_file(tensors, folder / shard, metadata={"format": "pt"})
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"].pop(drop, None)
    index["weight_map"].update(dict.fromkeys(add or {}, shard))
    index_path.write_text(json.dumps(index))


def _meta_for(kit, folder: Path, **overrides):
    config = AutoConfig.from_pretrained(folder)
    for name, value in overrides.items():
        setattr(config, name, value)
    return kit.build_meta(config)


def _load_fails(kit, model, folder: Path, error=CheckpointError, **kwargs) -> str:
    with pytest.raises(error) as info:
        stream_load(model, folder, **kwargs)
    kit.assert_all_meta(model)
    return str(info.value)


# -- damaged files -------------------------------------------------------------------------------------


def test_corrupt_shard(kit, moe_checkpoints, checkpoint_copy) -> None:
    folder = checkpoint_copy(moe_checkpoints("qwen2_moe"))
    shard = _shards(folder)[-1]
    (folder / shard).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\x00" * 64)
    message = _load_fails(kit, _meta_for(kit, folder), folder)
    assert shard in message and "corrupt" in message and "download it again" in message


def test_truncated_shard(kit, moe_checkpoints, checkpoint_copy) -> None:
    folder = checkpoint_copy(moe_checkpoints("mixtral"))
    shard = _shards(folder)[0]
    data = (folder / shard).read_bytes()
    (folder / shard).write_bytes(data[: len(data) - 100])
    message = _load_fails(kit, _meta_for(kit, folder), folder)
    assert shard in message and "truncated" in message


def test_missing_shard(kit, moe_checkpoints, checkpoint_copy) -> None:
    folder = checkpoint_copy(moe_checkpoints("deepseek_v3"))
    shard = _shards(folder)[1]
    (folder / shard).unlink()
    message = _load_fails(kit, _meta_for(kit, folder), folder)
    assert shard in message and "missing" in message and "snapshot_download" in message


def test_shard_truncated_while_streaming_restores_the_meta_model(kit, moe_checkpoints, checkpoint_copy, monkeypatch) -> None:
    """A failure after some groups are in: every loaded tensor is dropped again, nothing half-loaded."""
    folder = checkpoint_copy(moe_checkpoints("qwen2_moe"))
    last_shard = _shards(folder)[-1]
    model = _meta_for(kit, folder)
    real_read = stream_checkpoint.CheckpointReader.read_into
    reads = {"n": 0}
    lock = threading.Lock()

    def read_then_damage(self, key, out):
        with lock:  # reads run on the worker threads
            reads["n"] += 1
            if reads["n"] == 5:  # groups already placed in the model by now
                assert any(p.device.type == "cpu" for p in model.parameters())
                path = folder / last_shard
                path.write_bytes(path.read_bytes()[:64])
        return real_read(self, key, out)

    monkeypatch.setattr(stream_checkpoint.CheckpointReader, "read_into", read_then_damage)
    message = _load_fails(kit, model, folder)
    assert last_shard in message
    assert reads["n"] > 5


def test_index_names_a_tensor_the_shard_lacks(kit, moe_checkpoints, checkpoint_copy) -> None:
    folder = checkpoint_copy(moe_checkpoints("qwen2_moe"))
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    key, shard = next(iter(index["weight_map"].items()))
    other = next(s for s in _shards(folder) if s != shard)
    index["weight_map"][key] = other
    index_path.write_text(json.dumps(index))
    message = _load_fails(kit, _meta_for(kit, folder), folder)
    assert key in message and other in message and "stale or corrupt" in message


def test_unreadable_index(kit, moe_checkpoints, checkpoint_copy) -> None:
    folder = checkpoint_copy(moe_checkpoints("qwen2_moe"))
    (folder / "model.safetensors.index.json").write_text("{not json")
    message = _load_fails(kit, _meta_for(kit, folder), folder)
    assert "model.safetensors.index.json" in message


def test_same_tensor_in_two_shards(kit, moe_checkpoints, checkpoint_copy) -> None:
    folder = checkpoint_copy(moe_checkpoints("qwen2_moe"))
    first, second = _shards(folder)[:2]
    with safe_open(str(folder / first), "pt") as fh:
        key = next(iter(fh.keys()))
        tensor = fh.get_tensor(key)
    with safe_open(str(folder / second), "pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    save_file({**tensors, key: tensor}, folder / second, metadata={"format": "pt"})
    message = _load_fails(kit, _meta_for(kit, folder), folder)
    assert key in message and first in message and second in message


def test_folder_without_safetensors(kit, moe_checkpoints, tmp_path: Path) -> None:
    model = _meta_for(kit, moe_checkpoints("qwen2_moe"))
    torch.save({}, tmp_path / "pytorch_model.bin")
    message = _load_fails(kit, model, tmp_path)
    assert "pytorch_model.bin" in message and "safetensors" in message
    assert "does not exist" in _load_fails(kit, model, tmp_path / "nowhere")


# -- checkpoint does not fit the model --------------------------------------------------------------------


def test_expert_shape_mismatch(kit, moe_checkpoints) -> None:
    folder = moe_checkpoints("qwen2_moe")  # written with moe_intermediate_size=8
    message = _load_fails(kit, _meta_for(kit, folder, moe_intermediate_size=12), folder)
    assert "model.layers.0.mlp.experts.gate_up_proj" in message
    assert "(4, 16, 16)" in message and "(4, 24, 16)" in message  # checkpoint gives, model expects
    assert "Nothing was loaded" in message


def test_expert_count_mismatch_on_the_hybrid_model(kit, moe_checkpoints) -> None:
    folder = moe_checkpoints("nemotron_h")  # 4 routed experts on disk
    message = _load_fails(kit, _meta_for(kit, folder, n_routed_experts=6), folder)
    assert "model.layers.2.mixer.experts.up_proj" in message and "(4, 8, 16)" in message


def test_missing_expert_in_a_gated_group(kit, moe_checkpoints, checkpoint_copy) -> None:
    folder = checkpoint_copy(moe_checkpoints("mixtral"))
    key, shard = _shard_of(folder, "layers.1.block_sparse_moe.experts.2.w3.weight")
    _rewrite_shard(folder, shard, drop=key)
    message = _load_fails(kit, _meta_for(kit, folder), folder)
    assert "model.layers.1.mlp.experts.gate_up_proj" in message and "cannot be converted" in message
    assert "experts.*.w1.weight x4" in message and "experts.*.w3.weight x3" in message  # which list is short


def test_missing_plain_tensor_is_listed(kit, moe_checkpoints, checkpoint_copy) -> None:
    folder = checkpoint_copy(moe_checkpoints("deepseek_v3"))
    key, shard = _shard_of(folder, "layers.1.post_attention_layernorm.weight")
    _rewrite_shard(folder, shard, drop=key)
    message = _load_fails(kit, _meta_for(kit, folder), folder)
    assert "would stay on meta" in message and key in message


def test_unexpected_checkpoint_key_is_listed(kit, moe_checkpoints, checkpoint_copy) -> None:
    folder = checkpoint_copy(moe_checkpoints("qwen2_moe"))
    shard = _shards(folder)[0]
    _rewrite_shard(folder, shard, add={"model.layers.0.mlp.surprise.weight": torch.zeros(2, 2)})
    message = _load_fails(kit, _meta_for(kit, folder), folder)
    assert "match no model tensor" in message and "model.layers.0.mlp.surprise.weight" in message
    assert "key_mapping" in message


def test_ignored_unexpected_keys_follow_the_model_rules(kit, moe_checkpoints, checkpoint_copy) -> None:
    """Old checkpoints carry rotary inv_freq; from_pretrained ignores it (model rule), so does stream_load."""
    folder = checkpoint_copy(moe_checkpoints("qwen2_moe"))
    _rewrite_shard(folder, _shards(folder)[0], add={"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4)})
    model = stream_load(_meta_for(kit, folder), folder)
    assert all(t.device.type == "cpu" for t in kit.all_tensors(model).values())


# -- bad arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(device_map="disk"), "disk"),
        (dict(device_map={"model.nonexistent": "cpu", "": "cpu"}), "model.nonexistent"),
        (dict(device_map={"model.layers": "cpu"}), "places no module"),
        (dict(device_map="cuda:99"), "cuda:99"),
        (dict(device_map=["cpu"]), "not understood"),
        (dict(dtype=torch.int8), "floating-point"),
        (dict(dtype="not_a_dtype"), "not a torch dtype"),
        (dict(key_mapping={"(unclosed": "x"}), "not a valid regex"),
    ],
)
def test_bad_arguments_raise_plan_errors(kit, moe_checkpoints, kwargs: dict, fragment: str) -> None:
    folder = moe_checkpoints("qwen2_moe")
    message = _load_fails(kit, _meta_for(kit, folder), folder, error=PlanError, **kwargs)
    assert fragment in message


def test_not_a_transformers_model(moe_checkpoints) -> None:
    with pytest.raises(PlanError, match="PreTrainedModel"):
        stream_load(torch.nn.Linear(2, 2), moe_checkpoints("qwen2_moe"))


def test_buffer_nobody_computes_is_an_error(kit, moe_checkpoints, monkeypatch) -> None:
    """A meta-built non-persistent buffer that _init_weights does not recompute would be garbage: refuse."""
    folder = moe_checkpoints("qwen2_moe")
    model = _meta_for(kit, folder)
    cls = next(c for c in type(model).__mro__ if "_init_weights" in vars(c))  # shared by the sub-models
    real_init = cls._init_weights
    monkeypatch.setattr(cls, "_init_weights", lambda self, m: None if "Rotary" in type(m).__name__ else real_init(self, m))
    message = _load_fails(kit, model, folder)
    assert "model.rotary_emb.inv_freq (non-persistent buffer)" in message and "_init_weights" in message
