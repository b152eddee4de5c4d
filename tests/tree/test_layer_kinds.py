"""hybridload.layer_kinds: per-layer mixer kinds of hybrid trees, checked against the config's declared pattern."""
from __future__ import annotations

from pathlib import Path

import pytest

import hybridload
from hybridload.tree.layer_kinds import LayerKinds, layer_kinds
from hybridload.tree.signature import TreeSignature, signature

from tree_fixtures import meta_build

SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=128)
NEMOTRON_SYMBOLS = {"M": ("mamba",), "-": ("mlp",), "*": ("attention",), "E": ("moe",)}


def _config(model_type: str, **values: object):
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **{**SMALL, **values})


def _nemotron_h():
    config = _config("nemotron_h", hybrid_override_pattern="M-M*-E", n_routed_experts=4, num_experts_per_tok=2,
                     moe_intermediate_size=32, moe_shared_expert_intermediate_size=32, mamba_num_heads=4,
                     mamba_head_dim=16, n_groups=1, ssm_state_size=8, head_dim=16)
    return config, [NEMOTRON_SYMBOLS[symbol] for symbol in "M-M*-E"]


def _jamba():
    config = _config("jamba", num_hidden_layers=4, num_experts=4, expert_layer_period=2, expert_layer_offset=1,
                     attn_layer_period=4, attn_layer_offset=2, mamba_d_state=8, use_mamba_kernels=False)
    expected = [
        ("attention" if i % config.attn_layer_period == config.attn_layer_offset else "mamba",
         "moe" if i % config.expert_layer_period == config.expert_layer_offset else "mlp")
        for i in range(config.num_hidden_layers)
    ]
    return config, expected


def _falcon_h1():
    config = _config("falcon_h1", num_hidden_layers=3, mamba_d_ssm=64, mamba_n_heads=4, mamba_d_head=16,
                     mamba_d_state=8, head_dim=16)
    return config, [("attention", "mamba", "mlp")] * config.num_hidden_layers  # parallel attention + SSM


def _qwen3_next():
    config = _config("qwen3_next", num_hidden_layers=4, num_experts=4, moe_intermediate_size=32,
                     shared_expert_intermediate_size=32, linear_num_value_heads=4, linear_num_key_heads=2,
                     linear_key_head_dim=16, linear_value_head_dim=16, head_dim=16, mlp_only_layers=[1])
    expected = [
        ("linear_attention" if kind == "linear_attention" else "attention",
         "mlp" if index in config.mlp_only_layers else "moe")
        for index, kind in enumerate(config.layer_types)
    ]
    return config, expected


def _bamba():
    config = _config("bamba", num_hidden_layers=3, attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=16,
                     mamba_d_state=8, mamba_n_groups=1)
    # transformers 5 spells these Mamba layers "linear_attention"; the tree says which kind they really are
    expected = [("attention" if i in config.attn_layer_indices else "mamba", "mlp") for i in range(3)]
    return config, expected


def _granitemoehybrid():
    config = _config("granitemoehybrid", num_hidden_layers=3, layer_types=["mamba", "attention", "mamba"],
                     num_local_experts=4, mamba_n_heads=8, mamba_d_head=16, mamba_d_state=8, mamba_n_groups=1,
                     shared_intermediate_size=64)
    # every layer: its sequence mixer, a sparse MoE and a shared MLP beside it
    expected = [("mamba" if kind == "linear_attention" else "attention", "moe", "mlp") for kind in config.layer_types]
    return config, expected


def _kimi_linear():
    config = _config("kimi_linear", num_hidden_layers=4, pad_token_id=0, num_experts=4, moe_intermediate_size=32,
                     kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
                     linear_attn_config={"num_heads": 4, "head_dim": 16, "short_conv_kernel_size": 4,
                                         "full_attn_layers": [2, 4], "kda_layers": [1, 3]})
    # its full-attention class is KimiLinearAttention: the family name must not make it "linear"
    expected = [
        ("linear_attention" if kind == "linear_attention" else "attention", "moe" if mlp == "sparse" else "mlp")
        for kind, mlp in zip(config.layer_types, config.mlp_layer_types)
    ]
    return config, expected


@pytest.mark.parametrize(
    "make",
    [_nemotron_h, _jamba, _falcon_h1, _qwen3_next, _bamba, _granitemoehybrid, _kimi_linear],
    ids=["nemotron_h", "jamba", "falcon_h1", "qwen3_next", "bamba", "granitemoehybrid", "kimi_linear"],
)
def test_native_hybrids(make) -> None:
    config, expected = make()
    model = meta_build(config)
    kinds = layer_kinds(model)
    assert isinstance(kinds, LayerKinds) and isinstance(kinds, list)
    assert kinds == expected
    assert kinds.container == "model.layers"
    assert kinds.source is not None and kinds.mismatches == []
    # every kind points at the modules that showed it
    for index, evidence in enumerate(kinds.evidence):
        assert set(evidence) == set(kinds[index])
        assert all(path.startswith(f"model.layers.{index}") for paths in evidence.values() for path in paths)


def test_remote_code_hybrid_from_model_and_from_file(tiny_hybrid, tmp_path: Path) -> None:
    pattern = tiny_hybrid.config.hybrid_override_pattern
    kinds = layer_kinds(tiny_hybrid)
    assert kinds == [NEMOTRON_SYMBOLS[symbol] for symbol in pattern]
    assert kinds.container == "backbone.layers" and kinds.source == "hybrid_override_pattern"
    # the MoE's shared expert is part of the MoE, not a second MLP
    assert kinds.evidence[3] == {"moe": ["backbone.layers.3.mixer"]}
    path = tmp_path / "tree.json"
    signature(tiny_hybrid).write(path)
    assert layer_kinds(path) == kinds
    assert layer_kinds(TreeSignature.read(path)).declared_names == [(symbol,) for symbol in pattern]


def _with_pattern(sig: TreeSignature, pattern: dict) -> TreeSignature:
    return sig.with_header({**sig.header, "model": {**sig.header["model"], "layer_pattern": pattern}})


def test_mismatch_with_declared_pattern_is_reported(tiny_hybrid) -> None:
    sig = _with_pattern(signature(tiny_hybrid), {"hybrid_override_pattern": "M-**"})
    with pytest.raises(hybridload.TreeMismatchError) as info:
        layer_kinds(sig)
    message = str(info.value)
    assert "layer 3" in message and "'*'" in message and "moe (backbone.layers.3.mixer)" in message
    assert "layer 0" not in message
    assert isinstance(info.value.diff, LayerKinds)

    relaxed = layer_kinds(sig, strict=False)
    assert len(relaxed.mismatches) == 1 and relaxed.mismatches[0].startswith("layer 3")
    assert relaxed == [("mamba",), ("mlp",), ("attention",), ("moe",)]


def test_length_mismatch_and_unknown_declarations(tiny_hybrid) -> None:
    too_long = layer_kinds(_with_pattern(signature(tiny_hybrid), {"hybrid_override_pattern": "M-*E-"}), strict=False)
    assert any("declares 5 layers, the tree has 4" in mismatch for mismatch in too_long.mismatches)

    unknown = layer_kinds(_with_pattern(signature(tiny_hybrid), {"layer_types": ["mystery", "mlp", "full_attention",
                                                                                   "moe"]}))
    assert unknown.mismatches == [] and any("'mystery'" in note for note in unknown.notes)


def test_layer_types_checks_only_what_it_declares() -> None:
    config, _ = _qwen3_next()
    sig = signature(meta_build(config))
    # layer_types names the sequence mixer only: the MoE/MLP channel mixers are not checked against it
    assert layer_kinds(sig).mismatches == []
    wrong = _with_pattern(sig, {"layer_types": ["full_attention"] * 4})
    relaxed = layer_kinds(wrong, strict=False)
    assert [mismatch.split(":")[0] for mismatch in relaxed.mismatches] == ["layer 0", "layer 1", "layer 2"]
    assert "linear_attention (model.layers.0.linear_attn)" in relaxed.mismatches[0]


def test_models_without_a_declared_pattern(llama) -> None:
    kinds = layer_kinds(llama(num_hidden_layers=3))
    assert kinds == [("attention", "mlp")] * 3
    assert kinds.source is None and kinds.declared is None and kinds.mismatches == []
    assert "no declared pattern" in kinds.report()


def _toy_tree() -> "object":
    from torch import nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj, self.k_proj = nn.Linear(4, 4), nn.Linear(4, 4)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = Attention()

    class Norms(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(4)

    root = nn.Module()
    root.vision = nn.Module()
    root.vision.blocks = nn.ModuleList([Block() for _ in range(3)])
    root.text = nn.Module()
    root.text.layers = nn.ModuleList([Block(), Norms()])
    return root


def test_the_declared_layer_count_picks_the_decoder_list() -> None:
    tree = _toy_tree()
    declared = signature(tree, header={"model": {"num_hidden_layers": 2}})
    kinds = layer_kinds(declared)
    assert kinds.container == "text.layers"
    assert kinds == [("attention",), ()]  # a layer holding nothing recognisable gets ()
    # without a declared count, the list with the most sequence mixers wins
    assert layer_kinds(signature(tree)).container == "vision.blocks"


@pytest.mark.parametrize(
    "name, family, expected",
    [
        ("KimiLinearAttention", "KimiLinear", "attention"),
        ("KimiLinearDeltaAttention", "KimiLinear", "linear_attention"),
        ("Qwen3MoeMLP", "Qwen3Moe", "mlp"),
        ("Qwen3MoeSparseMoeBlock", "Qwen3Moe", "moe"),
        ("GraniteMoeHybridAttention", "GraniteMoeHybrid", "attention"),
        ("GraniteMoeHybridRMSNorm", "GraniteMoeHybrid", None),
        ("MambaRMSNormGated", "", None),
        ("NemotronHMOE", "NemotronH", "moe"),
        ("JambaMambaMixer", "Jamba", "mamba"),
        ("Qwen3NextGatedDeltaNet", "Qwen3Next", "linear_attention"),
        ("MiniMaxLightningAttention", "MiniMax", "linear_attention"),
        ("Lfm2ShortConv", "Lfm2", "conv"),
        ("FalconH1Mixer", "FalconH1", None),  # judged by its structure (A_log) instead
    ],
)
def test_class_name_keywords_after_the_family_prefix(name: str, family: str, expected) -> None:
    from hybridload.tree.kinds import family_prefix, kind_from_class_name

    siblings = {name, f"{family}Model", f"{family}ForCausalLM"} if family else {name}
    assert family_prefix(siblings) == family
    assert kind_from_class_name(f"transformers.models.x.modeling_x.{name}", family) == expected
