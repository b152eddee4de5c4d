"""nnsight scan() of a Kimi-Linear-style model runs on a GPU-less client (twins for fla's
modules, references for its kernels on fake tensors), and remote code that forces its own attention
implementation is accepted because the server runs the same code."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

import hybridload

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "twins"))
from kimi_toy_fixture import write_kimi_toy  # noqa: E402


@pytest.fixture(scope="module")
def kimi_folder(tmp_path_factory):
    return write_kimi_toy(tmp_path_factory.mktemp("kimi_scan") / "kimi_toy_model")


def test_scan_of_kimi_style_model_reports_the_models_shapes(kimi_folder):
    from nnsight import TransformersModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lm = TransformersModel(str(kimi_folder), trust_remote_code=True, tokenizer=str(hybridload.examples.path("hybrid_tiny")))
    config = lm._module.config
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with lm.scan(ids):
        layer = lm.model.layers[0].output.save()
        logits = lm.lm_head.output.save()
    layer = layer[0] if isinstance(layer, tuple) else layer
    assert tuple(layer.shape) == (1, 5, config.hidden_size)
    assert tuple(logits.shape) == (1, 5, config.vocab_size)
    # the same forward on the meta model itself (references run on meta tensors) gives the same shapes
    meta_logits = lm._module(ids.to("meta")).logits
    assert tuple(meta_logits.shape) == tuple(logits.shape)


def test_remote_code_forcing_its_attention_is_recorded_not_refused(kimi_folder):
    plan = hybridload.resolve(str(kimi_folder), trust_remote_code=True)
    with pytest.warns(RuntimeWarning, match="overrides transformers' attention selection"):
        meta = hybridload.load_meta(plan)
    assert meta.config._attn_implementation == "flash_attention_2"
    assert meta.hybridload_attn_override == "flash_attention_2"
    assert plan.attn_implementation_built != "flash_attention_2"  # what the plan's rule expected
