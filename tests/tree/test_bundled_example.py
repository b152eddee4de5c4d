"""The bundled hybrid_tiny example: a laptop meta build signs like the server's real load, layer by layer."""
from __future__ import annotations

import pytest
import torch

import hybridload
from hybridload.tree.layer_kinds import layer_kinds
from hybridload.tree.signature import TreeSignature, signature

NEMOTRON_SYMBOLS = {"M": ("mamba",), "-": ("mlp",), "*": ("attention",), "E": ("moe",)}


@pytest.fixture(scope="module")
def example():
    from transformers import AutoConfig, AutoModelForCausalLM

    from hybridload.build import BuildSpec, build_session
    from hybridload.examples import path

    folder = path("hybrid_tiny")
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=True)
    with build_session(BuildSpec("meta")) as record, torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    assert record.shim.stand_ins, "the example imports CUDA-only kernels: the meta build must have used stand-ins"
    return folder, config, model


def test_layer_kinds_follow_the_hybrid_override_pattern(example) -> None:
    _, config, model = example
    kinds = layer_kinds(model)
    assert kinds == [NEMOTRON_SYMBOLS[symbol] for symbol in config.hybrid_override_pattern]
    assert kinds.source == "hybrid_override_pattern" and kinds.mismatches == []


def test_meta_build_equals_the_server_reference_signature(example) -> None:
    folder, _, model = example
    reference = TreeSignature.read(folder / "reference_signature.json")
    client = signature(model)
    diff = hybridload.compare(reference, client, labels=("server", "client"))
    assert diff.identical, diff.report()
    assert not any(cls.startswith(("standin:", "transformers_modules")) for cls in client.modules.values())
    assert layer_kinds(reference) == layer_kinds(client)
