"""How the streaming loader reads: straight into the stacked (and concatenated) expert tensors, at the
header's byte offsets, into any destination dtype and layout."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig
from transformers.core_model_loading import Concatenate, MergeModulelist

from hybridload.errors import CheckpointError
from hybridload.serve.streaming.conversion import plan_conversion
from hybridload.serve.streaming.checkpoint import CheckpointReader


class RecordingSource:
    """In-memory tensors; records every fill so the test sees where each source was written."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.filled: list[tuple[str, torch.Tensor]] = []
        self.deferred_calls: list[str] = []

    def deferred(self, key):
        def load():
            self.deferred_calls.append(key)
            return self.tensors[key]

        return load

    def shape(self, key):
        return tuple(self.tensors[key].shape)

    def empty(self, shape):
        return torch.full(shape, float("nan"))

    def fill(self, pairs):
        for key, out in pairs:
            self.filled.append((key, out))
            out.copy_(self.tensors[key])


def _group(kit, model_type: str, folder: Path, suffix: str):
    model = kit.build_meta(AutoConfig.from_pretrained(folder))
    with CheckpointReader(folder) as reader:
        plan = plan_conversion(model, reader.entries)
        tensors = {key: reader.read(key) for key in reader.entries}
    group = next(g for g in plan.groups if g.first_target.endswith(suffix))
    return model, group, tensors


def test_gate_up_experts_are_read_into_their_slices_of_the_fused_tensor(kit, moe_checkpoints, monkeypatch) -> None:
    model, group, tensors = _group(kit, "mixtral", moe_checkpoints("mixtral"), "experts.gate_up_proj")
    assert group.stacks_in_place
    ops = group.transform.operations
    assert [type(op) for op in ops] == [MergeModulelist, Concatenate]

    def no_cat(*args, **kwargs):
        raise AssertionError("the fused read must not run Concatenate (a second group-sized copy)")

    monkeypatch.setattr(Concatenate, "convert", no_cat)
    source = RecordingSource(tensors)
    produced = group.convert(source, model)

    (name, fused), = produced.items()
    assert name == group.first_target
    by_pattern: dict[str, list[torch.Tensor]] = {}
    for pattern, key in group.sources:
        by_pattern.setdefault(pattern, []).append(tensors[key])
    expected = torch.cat([torch.stack(by_pattern[p]) for p in group.transform.source_patterns], dim=ops[1].dim)
    assert torch.equal(fused, expected)
    assert source.deferred_calls == []  # nothing was read into a buffer of its own
    assert len(source.filled) == len(group.sources)
    assert all(out.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr() for _, out in source.filled)


def test_down_proj_is_stacked_in_place_and_other_groups_read_one_tensor(kit, moe_checkpoints) -> None:
    model, down, tensors = _group(kit, "qwen2_moe", moe_checkpoints("qwen2_moe"), "experts.down_proj")
    source = RecordingSource(tensors)
    (stacked,) = down.convert(source, model).values()
    assert torch.equal(stacked, torch.stack([tensors[k] for k in down.source_keys()]))
    assert source.deferred_calls == []

    _, plain, _ = _group(kit, "qwen2_moe", moe_checkpoints("qwen2_moe"), "input_layernorm.weight")
    assert not plain.stacks_in_place
    source = RecordingSource(tensors)
    (value,) = plain.convert(source, model).values()
    assert source.deferred_calls == plain.source_keys() and source.filled == []
    assert torch.equal(value, tensors[plain.source_keys()[0]])


def test_experts_of_unequal_shapes_fail_like_torch_stack(kit, moe_checkpoints) -> None:
    """The fused path steps aside; the unfused one raises torch.stack's error (reported with the keys)."""
    model, group, tensors = _group(kit, "mixtral", moe_checkpoints("mixtral"), "experts.gate_up_proj")
    odd = group.source_keys()[1]
    tensors = dict(tensors, **{odd: tensors[odd][:-1]})
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        group.convert(RecordingSource(tensors), model)


def _write(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_reader_reads_at_header_offsets_into_any_layout(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.arange(7, dtype=torch.int64),
        "c": torch.randn(4, 6).to(torch.bfloat16),
        "empty": torch.zeros(0, 3),
    }
    with CheckpointReader(_write(tmp_path / "ckpt", tensors)) as reader:
        for key, tensor in tensors.items():
            assert torch.equal(reader.read(key), tensor)
        wide = torch.zeros(5, 3).t()  # a transposed (non-contiguous) destination
        reader.read_into("a", wide)
        assert torch.equal(wide, tensors["a"])
        as_fp32 = torch.zeros(4, 6)  # another dtype: read, then cast like .to(dtype)
        reader.read_into("c", as_fp32)
        assert torch.equal(as_fp32, tensors["c"].float())
        assert torch.equal(reader.read_to("c", torch.device("cpu"), torch.float16), tensors["c"].to(torch.float16))
        with pytest.raises(CheckpointError, match="destination has shape"):
            reader.read_into("a", torch.zeros(5, 3))


def test_reader_reports_a_shard_truncated_after_opening(tmp_path: Path) -> None:
    folder = _write(tmp_path / "ckpt", {"a": torch.randn(64, 64), "b": torch.randn(64, 64)})
    with CheckpointReader(folder) as reader:
        last = max(reader.entries, key=lambda key: reader.entries[key].offset)
        path = folder / "model.safetensors"
        path.write_bytes(path.read_bytes()[:-100])
        with pytest.raises(CheckpointError, match=rf"reading '{last}' from shard model.safetensors .* download it again"):
            reader.read(last)
