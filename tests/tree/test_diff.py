"""hybridload.compare: each kind of change is found, at the right first path, and reported readably."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import hybridload
from hybridload.tree.diff import TreeDiff, compare
from hybridload.tree.signature import signature


def _grow_up_proj(model: nn.Module) -> str:
    """One element more along one dimension of one parameter."""
    mlp = model.model.layers[1].mlp
    old = mlp.up_proj
    mlp.up_proj = nn.Linear(old.in_features, old.out_features + 1, bias=False, device="meta")
    return "model.layers.1.mlp.up_proj.weight"


def _to_bfloat16(model: nn.Module) -> str:
    model.model.layers[0].self_attn.k_proj.to(torch.bfloat16)
    return "model.layers.0.self_attn.k_proj.weight"


def _rename_mlp(model: nn.Module) -> str:
    layer = model.model.layers[0]
    layer.ffn = layer.mlp
    del layer.mlp
    return "model.layers.0.mlp"


def _swap_norm_class(model: nn.Module) -> str:
    layer = model.model.layers[1]
    other = type("OtherRMSNorm", (type(layer.input_layernorm),), {})
    layer.input_layernorm.__class__ = other
    return "model.layers.1.input_layernorm"


def _drop_buffer(model: nn.Module) -> str:
    name = next(name for name, _ in model.named_buffers())
    owner, _, key = name.rpartition(".")
    delattr(model.get_submodule(owner), key)
    return name


@pytest.mark.parametrize(
    "mutate, change, category",
    [
        (_grow_up_proj, "shape", "shape_changes"),
        (_to_bfloat16, "dtype", "dtype_changes"),
        (_rename_mlp, "missing", "missing_modules"),
        (_swap_norm_class, "class", "class_changes"),
        (_drop_buffer, "missing", "missing_buffers"),
    ],
)
def test_each_change_is_found_at_the_right_first_path(llama, mutate, change: str, category: str) -> None:
    reference, changed = llama(), llama()
    before = signature(reference)
    expected_first = mutate(changed)
    diff = compare(before, signature(changed))
    assert not diff.identical
    assert diff.first_path == expected_first
    assert diff.first_difference.change == change
    found = getattr(diff, category)
    assert expected_first in found
    assert expected_first in diff.report()


def test_shape_and_dtype_changes_carry_both_sides(llama) -> None:
    reference, changed = llama(), llama()
    path = _grow_up_proj(changed)
    diff = compare(reference, changed)
    a_shape = list(reference.get_parameter(path).shape)
    assert diff.shape_changes == {path: (a_shape, [a_shape[0] + 1, a_shape[1]])}
    assert diff.changed_parameters == [path] and diff.dtype_changes == {}

    changed = llama()
    path = _to_bfloat16(changed)
    assert compare(reference, changed).dtype_changes == {path: ("float32", "bfloat16")}


def test_rename_lists_both_sides_and_is_recognised(llama) -> None:
    reference, changed = llama(), llama()
    _rename_mlp(changed)
    diff = compare(reference, changed)
    assert diff.missing_modules[0] == "model.layers.0.mlp"
    assert "model.layers.0.ffn" in diff.extra_modules
    assert "model.layers.0.mlp.up_proj.weight" in diff.missing_parameters
    assert "model.layers.0.ffn.up_proj.weight" in diff.extra_parameters
    assert diff.renames == [("model.layers.0.mlp", "model.layers.0.ffn")]
    report = diff.report()
    assert "looks renamed: model.layers.0.mlp -> model.layers.0.ffn" in report
    # the contents of a missing/extra module are folded into its line
    assert "- mlp" in report and "+ ffn" in report and "inside" in report
    assert "model.layers.0.mlp.up_proj" not in report.split("differences")[-1]


def test_first_path_follows_tree_order_not_discovery_order(llama) -> None:
    reference, changed = llama(), llama()
    _grow_up_proj(changed)  # layer 1
    _to_bfloat16(changed)  # layer 0: earlier in the tree
    diff = compare(reference, changed)
    assert [d.path for d in diff.differences] == [
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.1.mlp.up_proj.weight",
    ]


def test_missing_buffer_persistence_and_ties(llama) -> None:
    from tree_fixtures import meta_build, tiny_gpt2_config

    tied = signature(meta_build(tiny_gpt2_config()))
    untied = signature(meta_build(tiny_gpt2_config(tie_word_embeddings=False)))
    diff = compare(tied, untied)
    assert diff.first_path == "lm_head.weight"
    assert diff.tie_changes == {"lm_head.weight": ({"alias_of": "transformer.wte.weight"},
                                                   {"parameter": {"shape": [64, 16], "dtype": "float32"}})}

    class WithBuffer(nn.Module):
        def __init__(self, persistent: bool) -> None:
            super().__init__()
            self.register_buffer("scale", torch.ones(2), persistent=persistent)

    diff = compare(WithBuffer(True), WithBuffer(False))
    assert diff.persistence_changes == {"scale": (True, False)}
    assert diff.changed_buffers == ["scale"]


def test_header_differences_are_warnings_not_tree_differences(llama) -> None:
    model = llama()
    client = signature(model, {"repo": "org/m", "commit": "a" * 40})
    server = signature(model, {"repo": "org/m", "commit": "b" * 40}, header={"versions": {"torch": "9.9"}})
    diff = compare(client, server, labels=("client", "server"))
    assert diff.identical and diff.differences == () and diff.first_path is None
    assert diff.header_differences == {"plan.commit": ("a" * 40, "b" * 40),
                                       "versions.torch": (torch.__version__, "9.9")}
    assert any("plan.commit" in warning for warning in diff.warnings)
    report = diff.report()
    assert report.startswith("trees identical") and "plan.commit" in report and "(server)" in report
    diff.raise_if_different()  # identical trees never raise


def test_registration_order_is_a_warning() -> None:
    def tree(order: list[str]) -> nn.Module:
        root = nn.Module()
        for name in order:
            root.add_module(name, nn.Linear(2, 2))
        return root

    diff = compare(tree(["a", "b"]), tree(["b", "a"]))
    assert diff.identical
    assert any("registration order" in warning for warning in diff.warnings)


def test_report_is_short_grouped_and_bounded(llama) -> None:
    reference = llama(num_hidden_layers=4)
    changed = llama(num_hidden_layers=4)
    for layer in changed.model.layers:
        layer.self_attn.q_proj.to(torch.float16)
        layer.mlp.down_proj.to(torch.float16)
    diff = compare(reference, changed)
    assert len(diff.differences) == 8
    report = diff.report(max_items=3)
    lines = report.splitlines()
    assert lines[0].startswith("trees differ: 8 differences (8 dtype)")
    assert "first difference: model.layers.0.self_attn.q_proj.weight" in report
    assert "  model.layers.0.self_attn.q_proj:" in lines  # grouped under the common prefix
    assert sum(1 for line in lines if line.startswith("    ~ ")) == 3
    assert "5 more" in report
    assert len(diff.report(max_items=50).splitlines()) > len(lines)


def test_to_dict_is_json_and_complete(llama, tmp_path: Path) -> None:
    reference, changed = llama(), llama()
    _rename_mlp(changed)
    _to_bfloat16(changed)
    diff = compare(reference, changed)
    data = json.loads(json.dumps(diff.to_dict()))
    assert data["identical"] is False
    assert data["first_path"] == diff.first_path
    assert len(data["differences"]) == len(diff.differences)
    assert data["counts"]["dtype"] == 1 and data["counts"]["missing"] == data["counts"]["extra"]
    assert data["renames"] == [["model.layers.0.mlp", "model.layers.0.ffn"]]


def test_compare_accepts_files_and_models_and_raises_typed(llama, tmp_path: Path) -> None:
    reference = llama()
    path = tmp_path / "server.json"
    signature(reference).write(path)
    assert compare(path, reference).identical
    assert compare(str(path), signature(reference)).identical

    changed = llama()
    _grow_up_proj(changed)
    diff = compare(path, changed)
    assert isinstance(diff, TreeDiff)
    with pytest.raises(hybridload.TreeMismatchError) as info:
        diff.raise_if_different()
    assert info.value.diff is diff and "model.layers.1.mlp.up_proj.weight" in str(info.value)
