"""Ordinary models keep nnsight's behaviour: same tree, outputs and model key with and without hybridload."""
from __future__ import annotations

import json

import pytest
import torch
from nnsight_fixtures import plain_nnsight

import hybridload

PROMPT = "hello world the model runs here"


def _run(lm) -> torch.Tensor:
    with lm.trace(PROMPT):
        logits = lm.lm_head.output.save()
    return logits


def test_gpt2_same_tree_outputs_and_key(gpt2, monkeypatch, no_network):
    from nnsight import TransformersModel
    from nnsight.modeling import huggingface

    with plain_nnsight():
        # plain nnsight canonicalizes the id through the Hub; seed its cache with what the Hub would answer
        monkeypatch.setitem(huggingface._ID_CACHE, str(gpt2), str(gpt2))
        plain = TransformersModel(str(gpt2), task="text-generation", tokenizer=str(gpt2))
        plain_signature = hybridload.signature(plain)
        plain_key = plain.to_model_key()
        plain_logits = _run(plain)
    monkeypatch.delitem(huggingface._ID_CACHE, str(gpt2))

    lm = TransformersModel(str(gpt2), task="text-generation", tokenizer=str(gpt2))
    assert lm._module.hybridload_plan.model_class_source == "native"
    assert hybridload.compare(plain_signature, hybridload.signature(lm)).identical
    assert lm.to_model_key() == plain_key  # and without the Hub (no_network)
    assert json.loads(plain_key.partition(":")[2]) == {"repo_id": str(gpt2), "revision": None, "task": "text-generation"}
    logits = _run(lm)
    assert lm.dispatched and torch.equal(logits, plain_logits)
    assert lm.to_model_key() == plain_key  # dispatching does not change the identity


def test_without_tokenizer_argument_the_plan_supplies_the_tokenizer(gpt2):
    """Field note: nnsight 0.8.1 + transformers 5.23 cannot guess a tokenizer for a local folder; the plan can."""
    from nnsight import TransformersModel
    from transformers.pipelines import check_task

    impl = check_task("text-generation")[1]["impl"]
    with plain_nnsight():
        if isinstance(impl, str):  # the cause: transformers 5 names the pipeline class as a dotted string
            with pytest.raises(Exception, match="Impossible to guess which tokenizer"):
                TransformersModel(str(gpt2), task="text-generation")
        else:  # a transformers that hands nnsight the class again: plain nnsight finds the tokenizer itself
            assert TransformersModel(str(gpt2), task="text-generation").tokenizer is not None

    lm = TransformersModel(str(gpt2), task="text-generation")
    assert lm.tokenizer is not None and lm.tokenizer.padding_side == "left"  # nnsight configured it as usual
    assert lm.tokenizer("hello world").input_ids == [2, 3]
    assert _run(lm).shape == (1, 6, 8)

    from transformers import AutoTokenizer

    mine = AutoTokenizer.from_pretrained(str(gpt2))
    assert TransformersModel(str(gpt2), task="text-generation", tokenizer=mine).tokenizer is mine  # the user's wins


def test_preprocessors_are_read_from_the_dotted_pipeline_class():
    from types import SimpleNamespace

    from nnsight import TransformersModel

    wanted = {"text-generation": {"tokenizer"}, "image-classification": {"image_processor"}}
    for task, expected in wanted.items():
        assert TransformersModel._loaded_preprocessors(SimpleNamespace(task=task)) == expected


def test_a_config_object_keeps_nnsights_own_meta_build(gpt2):
    from nnsight import TransformersModel
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(gpt2), n_layer=1)
    lm = TransformersModel(str(gpt2), task="text-generation", tokenizer=str(gpt2), config=config)
    assert not hasattr(lm._module, "hybridload_plan") and len(lm._module.transformer.h) == 1
    assert "hybridload" not in lm._remoteable_get_env()  # no plan, no handshake


def test_language_model_alias_goes_through_the_plan(gpt2):
    import warnings

    from nnsight import LanguageModel, TransformersModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = LanguageModel(str(gpt2))
    plan = lm._module.hybridload_plan
    assert plan.repo == str(gpt2) and lm.task == "text-generation"
    assert lm.to_model_key().startswith("nnsight.modeling.transformers.TransformersModel:")
    assert lm.to_model_key() == TransformersModel(str(gpt2), task="text-generation").to_model_key()
