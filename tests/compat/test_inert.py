"""The layer is inert for native transformers models and for remote code that needs nothing from it."""
from __future__ import annotations

import sys

import pytest
import torch
from compat_fixtures import tree
from transformers import AutoConfig, AutoModelForCausalLM, BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel, PretrainedConfig

import hybridload
import hybridload.compat as compat

NATIVE = {
    "llama": lambda: LlamaForCausalLM._from_config(
        LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    ),
    "bert": lambda: BertModel._from_config(
        BertConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    ),
}


@pytest.mark.parametrize("name", sorted(NATIVE))
@pytest.mark.parametrize("cpu_scalars", [False, True])
def test_native_models_fire_nothing_and_build_the_same_tree(name: str, cpu_scalars: bool) -> None:
    with torch.device("meta"):
        hybridload.uninstall()
        try:
            plain = NATIVE[name]()
        finally:
            hybridload.install()
        with compat.observe() as seen, compat.compat_window(cpu_scalars=cpu_scalars) as record:
            built = NATIVE[name]()
    assert record.fired == [] and seen.fired == [] and record.value_reads == []
    assert tree(built) == tree(plain)


def test_inert_remote_code_fires_nothing_and_builds_like_plain_transformers(remote) -> None:
    folder = remote("inert")

    def build():
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=True)

    hybridload.uninstall()
    try:
        plain = build()
    finally:
        hybridload.install()
    with compat.observe() as seen:
        built = build()
    assert seen.fired == []
    assert tree(built) == tree(plain)


def test_windows_leave_no_patch_behind() -> None:
    import transformers.utils.generic as generic

    init_subclass = PretrainedConfig.__dict__["__init_subclass__"]
    post_init = PreTrainedModel.__dict__["post_init"]
    meta_path = list(sys.meta_path)
    with compat.compat_window(cpu_scalars=True):
        assert PreTrainedModel.__dict__["post_init"] is not post_init
        assert "__getattr__" in vars(generic)
    assert PretrainedConfig.__dict__["__init_subclass__"] is init_subclass
    assert PreTrainedModel.__dict__["post_init"] is post_init
    assert "__getattr__" not in vars(generic)
    assert sys.meta_path == meta_path
    assert torch._C._len_torch_function_stack() == 0  # the cpu_scalars mode is gone too


def test_importing_the_package_imports_neither_torch_nor_transformers() -> None:
    import subprocess

    code = "import sys, hybridload.compat; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
