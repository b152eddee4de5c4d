"""Which wrapper kwargs a plan decides, which are config overrides, and which only reach the real load."""
from __future__ import annotations

import pytest
import torch

from hybridload.errors import CheckpointCoverageError, CheckpointError
from hybridload.integrations.nnsight_plan import split_kwargs


def test_kwargs_are_sorted_by_who_decides_them():
    marker = object()
    split = split_kwargs({
        "trust_remote_code": True, "attn_implementation": "sdpa", "torch_dtype": "auto", "dtype": "nf4",
        "num_hidden_layers": 1, "device_map": "auto", "max_memory": {0: "1GB"}, "use_fast": True, "hook": marker,
    })
    # nnsight's quantization name means its compute dtype on meta; "auto" leaves the dtype to the plan
    assert split.plan == {"trust_remote_code": True, "attn_implementation": "sdpa", "dtype": "bfloat16"}
    assert split.overrides == {"num_hidden_layers": 1}
    assert split.rest == {"device_map": "auto", "max_memory": {0: "1GB"}, "use_fast": True, "hook": marker}
    assert split_kwargs({"trust_remote_code": None}).plan == {}  # None: the policy decides


def test_config_overrides_shape_the_meta_build_and_the_real_load(gpt2):
    from nnsight import TransformersModel

    refused = TransformersModel(str(gpt2), task="text-generation", n_layer=1, device_map="cpu")
    with pytest.raises(CheckpointCoverageError, match="transformer.h.1.attn.c_attn.weight.*no tensor of this name"):
        refused.dispatch()  # the checkpoint's second layer would be silently dropped: refused before reading
    lm = TransformersModel(str(gpt2), task="text-generation", n_layer=1, device_map="cpu", allow_incomplete_checkpoint=True)
    assert dict(lm._module.hybridload_plan.load_kwargs) == {"n_layer": 1}
    assert len(lm._module.transformer.h) == 1
    with lm.trace("hello world"):
        logits = lm.lm_head.output.save()
    assert len(lm._module.transformer.h) == 1 and lm._module.lm_head.weight.device == torch.device("cpu")
    assert lm._module.hybridload_checkpoint.allowed_incomplete
    assert logits.shape == (1, 2, 8)
