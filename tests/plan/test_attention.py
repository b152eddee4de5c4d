"""Attention on meta: record what the server uses, build what the class supports, never stop on this machine."""
from __future__ import annotations

import threading

import pytest
import torch

import hybridload
from hybridload.errors import PlanError
from hybridload.build.attention import choose, meta_attention
from hybridload.serve.real import load_real


def _original_check_in_place() -> bool:
    from transformers.modeling_utils import PreTrainedModel

    return not getattr(PreTrainedModel.__dict__["_check_and_adjust_attn_implementation"], "__hybridload_scoped__", False)


def _no_flash_class() -> type:
    """A model class that supports SDPA but not flash attention (transformers refuses FA for it anywhere)."""
    from torch import nn
    from transformers import LlamaConfig, PreTrainedModel

    class NoFlashModel(PreTrainedModel):
        config_class = LlamaConfig
        _supports_sdpa = True

        def __init__(self, config):
            super().__init__(config)
            self.proj = nn.Linear(config.hidden_size, config.hidden_size)
            self.post_init()

    return NoFlashModel


def _small_config(**kwargs: object):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, **kwargs)


def test_flash_attention_2_is_recorded_on_a_cpu_only_meta_build(build):
    plan = hybridload.resolve(build.llama(), attn_implementation="flash_attention_2", dtype="bfloat16")
    assert plan.attn_implementation == plan.attn_implementation_built == "flash_attention_2"
    meta = hybridload.load_meta(plan)
    assert meta.config._attn_implementation == "flash_attention_2"
    assert all(layer.self_attn.config._attn_implementation == "flash_attention_2" for layer in meta.model.layers)
    assert plan.to_header()["attn_implementation"] == {"requested": "flash_attention_2", "built": "flash_attention_2"}
    assert _original_check_in_place(), "the attention override must not outlive the build"


def test_meta_build_does_not_stop_on_unsupported_flash_attention():
    """transformers alone refuses flash attention for a class without support, even on meta; the rule builds
    the class default instead, and only inside the window."""
    model_class = _no_flash_class()
    config = _small_config(attn_implementation="flash_attention_2")
    with torch.device("meta"), pytest.raises(ValueError, match="does not support Flash Attention"):
        model_class(config)
    with meta_attention(), torch.device("meta"):
        assert model_class(_small_config(attn_implementation="flash_attention_2")).config._attn_implementation == "sdpa"
    assert _original_check_in_place()


def test_remote_code_builds_its_flash_modules_on_meta(build):
    plan = hybridload.resolve(build.hybrid(), trust_remote_code=True, attn_implementation="flash_attention_2")
    meta = hybridload.load_meta(plan)
    assert type(meta.backbone.layers[1].mixer).__name__ == "FlashAttention2"
    default = hybridload.load_meta(hybridload.resolve(build.hybrid("h2"), trust_remote_code=True))
    assert type(default.backbone.layers[1].mixer).__name__ == "SdpaAttention"


def test_unsupported_request_builds_the_class_default_on_both_sides(build, tree_of):
    folder = build.toy_remote_only(weights=True)  # ToyForCausalLM declares neither flash nor sdpa support
    plan = hybridload.resolve(folder, trust_remote_code=True, attn_implementation="flash_attention_2")
    assert plan.attn_implementation == "flash_attention_2" and plan.attn_implementation_built == "eager"
    assert "does not declare flash attention" in plan.attn_note
    meta = hybridload.load_meta(plan)
    real = load_real(plan)  # transformers would refuse flash_attention_2 for this class; the plan passes eager
    assert meta.config._attn_implementation == real.config._attn_implementation == "eager"
    assert tree_of(meta) == tree_of(real)
    assert meta.hybridload_plan.to_header()["attn_implementation"] == {"requested": "flash_attention_2", "built": "eager"}


def test_from_config_on_meta_follows_the_rule_with_the_integration(routing):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(_small_config(), attn_implementation="flash_attention_2")
    assert model.config._attn_implementation == "flash_attention_2"
    # a real (CPU) build keeps transformers' own checks: the rule is for meta builds only
    model_class = _no_flash_class()
    with pytest.raises(ValueError, match="does not support Flash Attention"):
        model_class._from_config(_small_config(), attn_implementation="flash_attention_2")
    with torch.device("meta"):
        built = model_class._from_config(_small_config(), attn_implementation="flash_attention_2")
    assert built.config._attn_implementation == "sdpa"
    assert _original_check_in_place()


def test_rule_is_scoped_to_the_thread_that_opened_the_window():
    model_class = _no_flash_class()
    outcome: dict[str, object] = {}

    def other_thread() -> None:
        try:
            with torch.device("meta"):
                model_class(_small_config(attn_implementation="flash_attention_2"))
            outcome["built"] = True
        except ValueError as exc:
            outcome["refused"] = exc

    with meta_attention():
        with torch.device("meta"):
            assert model_class(_small_config(attn_implementation="flash_attention_2")).config._attn_implementation == "sdpa"
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert "refused" in outcome, "another thread must keep transformers' checks"
    assert _original_check_in_place()


class _Flags:
    _supports_flash_attn = False
    _supports_sdpa = False
    _supports_flex_attn = False


def _cls(**flags: object) -> type:
    return type("Fake", (_Flags,), flags)


@pytest.mark.parametrize(
    ("flags", "requested", "built"),
    [
        ({}, None, "eager"),
        ({"_supports_sdpa": True}, None, "sdpa"),
        ({"_supports_sdpa": True}, "eager", "eager"),
        ({"_supports_sdpa": True}, "flash_attention_2", "sdpa"),
        ({"_supports_flash_attn": True}, "flash_attention_2", "flash_attention_2"),
        ({"_supports_flash_attn": True}, "flash_attention_3", "flash_attention_3"),
        ({"_supports_flash_attn_2": True}, "flash_attention_2", "eager"),  # legacy flag: transformers 5 refuses
        ({}, "sdpa", "eager"),
        ({"_supports_flex_attn": True}, "flex_attention", "flex_attention"),
        ({"_supports_flash_attn": True, "_compatible_flash_implementations": ["flash_attention_3"]},
         "flash_attention_2", "flash_attention_3"),
        ({"_supports_flash_attn": True}, "paged|flash_attention_2", "flash_attention_2"),
        ({}, "paged|eager", "paged|eager"),
    ],
)
def test_rule_table(flags, requested, built):
    choice = choose(_cls(**flags), requested)
    assert choice.built == built and choice.requested == requested and choice.note


def test_a_value_transformers_does_not_dispatch_is_left_to_the_model_and_recorded():
    choice = choose(_cls(), "warp_speed")
    assert (choice.requested, choice.built) == ("warp_speed", "warp_speed")
    assert "not an attention implementation transformers dispatches" in choice.note
    assert "from config.json" in choose(_cls(), "warp_speed", source="config.json").note


def test_per_sub_config_requests_are_a_typed_error():
    with pytest.raises(PlanError, match="per-sub-config"):
        choose(_cls(), {"text_config": "sdpa"})  # type: ignore[arg-type]


def test_accelerate_init_empty_weights_counts_as_a_meta_build(routing):
    from accelerate import init_empty_weights

    model_class = _no_flash_class()
    with init_empty_weights():
        model = model_class._from_config(_small_config(), attn_implementation="flash_attention_2")
    assert model.config._attn_implementation == "sdpa"
    assert all(p.device.type == "meta" for p in model.parameters())
    with pytest.raises(ValueError, match="does not support Flash Attention"):
        model_class._from_config(_small_config(), attn_implementation="flash_attention_2")
