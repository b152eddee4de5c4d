"""The planner's key renamer gives exactly transformers' ``rename_source_key`` results (and "was used" marks),
and its literal gates never close on a key a transform's regex matches -- for every conversion mapping
transformers ships."""
from __future__ import annotations

import copy
import re

import pytest
from transformers.conversion_mapping import _build_checkpoint_conversion_mapping, get_model_conversion_mapping
from transformers.core_model_loading import WeightConverter, WeightRenaming, dot_natural_key, rename_source_key

from hybridload.serve.streaming.conversion import _KeyRenamer, _LiteralGate, natural_order


def _checkpoint_keys(kit, moe_checkpoints, model_type: str) -> list[str]:
    keys = list(kit.checkpoint_keys(moe_checkpoints(model_type)))
    # keys the base-model-prefix rule treats differently: prefixed twice, unprefixed, a prefix followed by
    # another character, the bare prefix, quantization scales and an unknown tensor
    extra = []
    for key in keys[:40]:
        extra += [f"model.{key}", key.removeprefix("model."), key.replace("model.", "modelX", 1), key + "_scale_inv"]
    return keys + extra + ["model", "model.", "lm_head.weight", "something.else.entirely"]


def _both(renamings, converters, prefix, state, keys) -> tuple[list, list]:
    slow_r, slow_c = copy.deepcopy(renamings), copy.deepcopy(converters)
    fast_r, fast_c = copy.deepcopy(renamings), copy.deepcopy(converters)
    slow = [rename_source_key(k, slow_r, slow_c, prefix, state) for k in keys]
    renamer = _KeyRenamer(fast_r, fast_c, prefix, state)
    fast = [renamer(k) for k in keys]
    assert [t.was_used() for t in slow_r + slow_c] == [t.was_used() for t in fast_r + fast_c]
    return slow, fast


@pytest.mark.parametrize("model_type", ["deepseek_v3", "mixtral", "nemotron_h", "qwen2_moe"])
def test_renamer_equals_transformers_rename_source_key(kit, moe_checkpoints, model_type: str) -> None:
    model = kit.build_meta(kit.make_config(model_type))
    transforms = get_model_conversion_mapping(model, {r"^transformer\.h\.": "model.layers."})
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    keys = _checkpoint_keys(kit, moe_checkpoints, model_type)
    keys += [k.replace("model.layers.", "transformer.h.") for k in keys[:20]]
    slow, fast = _both(renamings, converters, model.base_model_prefix, model.state_dict(), keys)
    assert fast == slow
    assert any(pattern is not None for _, pattern in fast)  # the converters really took keys
    assert any(new != old for (new, _), old in zip(fast, keys))  # and renames happened


def test_scoped_transforms_and_fp8_quantizer_renamings(kit, moe_checkpoints) -> None:
    """A converter scoped to a sub-model (composite models) and the FP8 quantizer's backreference renamings."""
    from transformers.quantizers import AutoHfQuantizer

    config = kit.make_config("qwen2_moe")
    config.quantization_config = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [8, 8]}
    model = kit.build_meta(config)
    quantizer = AutoHfQuantizer.from_config(config.quantization_config, pre_quantized=True)
    transforms = get_model_conversion_mapping(model, hf_quantizer=quantizer)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    assert any(r"\1" in "".join(r.target_patterns) for r in renamings)
    for converter in converters[:2]:
        converter.scope_prefix, converter.base_model_prefix = "layers", "model"
    keys = _checkpoint_keys(kit, moe_checkpoints, "qwen2_moe") + ["model.layers.0.mlp.scale", "x.qscale_weight"]
    slow, fast = _both(renamings, converters, model.base_model_prefix, model.state_dict(), keys)
    assert fast == slow


def test_prefixes_the_shortcut_does_not_cover_use_transformers_function(kit, moe_checkpoints) -> None:
    model = kit.build_meta(kit.make_config("qwen2_moe"))
    transforms = get_model_conversion_mapping(model)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    keys = _checkpoint_keys(kit, moe_checkpoints, "qwen2_moe")
    for prefix in ("", "mod.el", "model"):
        renamer = _KeyRenamer(renamings, converters, prefix, model.state_dict())
        assert renamer.fast == (prefix == "model")
        assert [renamer(k) for k in keys] == [
            rename_source_key(k, renamings, converters, prefix, model.state_dict()) for k in keys
        ]


def _keys_from_pattern(pattern: str) -> list[str]:
    """Concrete names a transformers source pattern is written to match (wildcards and groups filled in)."""
    text = pattern.replace("*", "7").replace("^", "").replace("$", "")
    text = re.sub(r"\(\?:?[^()]*\)", "", text) if "(?" in text else text
    text = re.sub(r"\(([^()|]*)(\|[^()]*)?\)", r"\1", text)
    text = text.replace(r"(\d+)", "3").replace(r"\d+", "3").replace(r"\d", "3").replace("\\", "").replace(".+", "a.b")
    return [f"model.layers.3.{text}", text, f"{text}.weight", f"model.{text}.bias"]


def test_literal_gates_never_close_on_a_match_across_all_transformers_mappings() -> None:
    checked = matched = 0
    for transforms in _build_checkpoint_conversion_mapping().values():
        for transform in transforms:
            gate = _LiteralGate([transform])
            for source in transform._original_source_patterns:
                for key in _keys_from_pattern(source):
                    checked += 1
                    if transform.compiled_sources.search(key):
                        matched += 1
                        assert gate.may_match(key), (transform, key)
    assert checked > 1000 and matched > 500  # the corpus really exercises the gates


def test_natural_order_is_transformers_order() -> None:
    keys = [f"model.layers.{l}.mlp.experts.{e}.w{w}.weight" for l in (10, 2, 1) for e in (11, 3, 0) for w in (3, 1)]
    keys += ["model.embed_tokens.weight", "lm_head.weight", "model.layers.1", "model.layers.1a2", "model..x", ""]
    assert natural_order(keys) == sorted(keys, key=dot_natural_key)
    assert natural_order(reversed(keys)) == sorted(keys, key=dot_natural_key)
