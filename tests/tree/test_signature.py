"""hybridload.signature: canonical, deterministic, ties folded, remote/twin names normalised, header apart."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import hybridload
from hybridload.errors import HybridloadError
from hybridload.tree.naming import normalise_module_name
from hybridload.tree.signature import SignatureInputError, TreeSignature, signature

import tree_fixtures

HERE = Path(__file__).resolve().parent

_SIGN_IN_SUBPROCESS = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    import torch
    import hybridload
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM
    import tree_fixtures

    folder = tree_fixtures.write_tiny_hybrid({root!r}, {name!r})
    remote = tree_fixtures.build_tiny_hybrid(folder)
    config = tree_fixtures.tiny_gpt2_config()
    if {use_init_empty!r}:
        with init_empty_weights():
            gpt2 = AutoModelForCausalLM.from_config(config)
    else:
        gpt2 = tree_fixtures.meta_build(config)
    sys.stdout.write(hybridload.signature(remote).to_json())
    sys.stdout.write("\\n=====\\n")
    sys.stdout.write(hybridload.signature(gpt2).to_json())
    """
)


def test_signature_bytes_identical_across_processes_hash_seeds_and_machines(tmp_path: Path) -> None:
    """Two processes, two hash seeds, two remote-code folder layouts, meta vs init_empty_weights: same bytes."""
    runs = []
    for seed, name, use_init_empty in (("0", "client-repo", False), ("4242", "server.models", True)):
        script = tmp_path / f"sign_{seed}.py"
        script.write_text(_SIGN_IN_SUBPROCESS.format(here=str(HERE), root=str(tmp_path / seed), name=name,
                                                     use_init_empty=use_init_empty))
        env = {**os.environ, "PYTHONHASHSEED": seed, "HF_HUB_OFFLINE": "1"}
        runs.append(subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, text=True))
    outputs = []
    for process in runs:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1]
    remote_json, gpt2_json = outputs[0].split("\n=====\n")
    remote = TreeSignature.from_json(remote_json)
    assert remote.modules[""] == "remote:modeling_tiny_hybrid.TinyHybridForCausalLM"
    assert not any("transformers_modules" in cls for cls in remote.modules.values())
    # and the in-process signature of the same code agrees with both
    folder = tree_fixtures.write_tiny_hybrid(tmp_path / "here", "third_place")
    assert hybridload.signature(tree_fixtures.build_tiny_hybrid(folder)).to_json() == remote_json
    assert TreeSignature.from_json(gpt2_json).ties == {"transformer.wte.weight": ("lm_head.weight",)}


def test_tree_contents(llama) -> None:
    model = llama()
    sig = signature(model)
    assert list(sig.modules) == [name for name, _ in model.named_modules()]
    assert sig.modules["model.layers.0.self_attn"] == "transformers.models.llama.modeling_llama.LlamaAttention"
    assert list(sig.parameters) == [name for name, _ in model.named_parameters()]
    for name, param in model.named_parameters():
        assert sig.parameters[name].shape == tuple(param.shape)
        assert sig.parameters[name].dtype == str(param.dtype).removeprefix("torch.")
    assert set(sig.buffers) == {name for name, _ in model.named_buffers()}
    for name, buffer in model.named_buffers():
        module_name, _, key = name.rpartition(".")
        persistent = key not in model.get_submodule(module_name)._non_persistent_buffers_set
        assert sig.buffers[name] == (tuple(buffer.shape), str(buffer.dtype).removeprefix("torch."), persistent)
    assert sig.numel() == sum(p.numel() for p in model.parameters())
    assert len(sig.digest) == 64 and int(sig.digest, 16) >= 0


def test_digest_covers_the_tree_only(llama) -> None:
    model = llama()
    plain = signature(model)
    with_header = signature(model, header={"note": "ci run 17"})
    assert with_header.header["note"] == "ci run 17"
    assert with_header.digest == plain.digest and with_header == plain
    other = llama(intermediate_size=96)
    assert signature(other).digest != plain.digest


def test_header_carries_plan_versions_and_layer_pattern(llama, tiny_hybrid) -> None:
    class Plan:
        def to_header(self) -> dict:
            return {"repo": "org/tiny", "commit": "a" * 40, "trust_remote_code": False, "dtype": torch.bfloat16}

    model = llama()
    sig = signature(model, Plan())
    assert sig.header["plan"] == {"repo": "org/tiny", "commit": "a" * 40, "trust_remote_code": False,
                                  "dtype": "bfloat16"}
    assert sig.header["versions"]["torch"] == torch.__version__
    assert sig.header["versions"]["hybridload"] == hybridload.__version__
    assert sig.header["model"]["model_type"] == "llama"
    assert sig.header["model"]["num_hidden_layers"] == 2

    model.hybridload_plan = Plan()  # a plan attached to the model is picked up
    assert signature(model).header["plan"]["repo"] == "org/tiny"

    assert signature(tiny_hybrid).header["model"]["layer_pattern"] == {"hybrid_override_pattern": "M-*E"}

    with pytest.raises(SignatureInputError, match="to_header"):
        signature(llama(), plan=object())


def test_json_round_trip_is_exact(tiny_hybrid, tmp_path: Path) -> None:
    sig = signature(tiny_hybrid, header={"run": [1, 2]})
    text = sig.to_json()
    back = TreeSignature.from_json(text)
    assert back == sig and back.to_json() == text
    assert back.header == sig.header and back.ties == sig.ties
    assert back.buffers == sig.buffers and list(back.modules) == list(sig.modules)
    assert TreeSignature.from_json(text.encode()) == sig
    path = tmp_path / "tree.json"
    sig.write(path)
    assert TreeSignature.read(path).to_json() == text
    data = json.loads(text)
    assert data["schema"] == "hybridload.tree-signature/1" and data["digest"] == sig.digest


def _in_tree(text: str, old: str, new: str) -> str:
    """Replace the first ``old`` inside the tree part only (the header is not hashed)."""
    head, tree = text.split('"tree": {', 1)
    assert old in tree
    return head + '"tree": {' + tree.replace(old, new, 1)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda text: text[: len(text) // 2], "does not parse"),
        (lambda text: text.replace('"hybridload.tree-signature/1"', '"hybridload.tree-signature/2"'), "schema"),
        (lambda text: text.replace('"hybridload.tree-signature/1"', '"something-else"'), "schema"),
        (lambda text: _in_tree(text, "[64, 32]", "[64, 33]"), "does not match its digest"),
        (lambda text: _in_tree(text, '"float32"', '"float16"'), "does not match its digest"),
        (lambda text: _in_tree(text, "LlamaAttention", "LlamaAttentionX"), "does not match its digest"),
        (lambda text: text.replace('"digest": "', '"digest": "0', 1), "does not match its digest"),
        (lambda text: _in_tree(text, "[64, 32]", '["64", 32]'), "shape"),
        (lambda text: "[1, 2, 3]", "JSON object"),
        (lambda text: b"\xff\xfe\x00", "UTF-8"),
    ],
)
def test_corrupted_files_are_refused(llama, mutate, message: str) -> None:
    text = signature(llama()).to_json()
    with pytest.raises(hybridload.SignatureFormatError, match=message) as info:
        TreeSignature.from_json(mutate(text))
    assert "regenerate" in str(info.value) or "hybridload version" in str(info.value)


def test_read_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(hybridload.SignatureFormatError, match="broken.json"):
        TreeSignature.read(path)


def test_tied_weights_identical_under_meta_device_and_init_empty_weights() -> None:
    """init_empty_weights re-creates parameters, so identity alone misses the lm_head tie."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    config = tree_fixtures.tiny_gpt2_config()
    on_meta = tree_fixtures.meta_build(config)
    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(config)
    assert on_meta.lm_head.weight is on_meta.transformer.wte.weight
    assert empty.lm_head.weight is not empty.transformer.wte.weight  # the situation the signature must absorb
    meta_sig, empty_sig = signature(on_meta), signature(empty)
    assert meta_sig.to_json() == empty_sig.to_json()
    assert meta_sig.ties == {"transformer.wte.weight": ("lm_head.weight",)}
    assert "lm_head.weight" not in meta_sig.parameters
    assert meta_sig.aliases["lm_head.weight"] == "transformer.wte.weight"
    assert meta_sig.numel() == sum(p.numel() for p in on_meta.parameters())

    untied = signature(tree_fixtures.meta_build(tree_fixtures.tiny_gpt2_config(tie_word_embeddings=False)))
    assert untied.ties == {} and "lm_head.weight" in untied.parameters
    assert untied.digest != meta_sig.digest


def test_declared_ties_keep_the_first_path_in_tree_order() -> None:
    """A declared tie whose target comes first in the tree signs like the same tie made by identity."""

    def tree(tie_by_identity: bool) -> nn.Module:
        root = nn.Module()
        root.head = nn.Linear(4, 8, bias=False)  # registered first: the target of the declared tie
        root.emb = nn.Embedding(8, 4)
        if tie_by_identity:
            root.head.weight = root.emb.weight
        root.all_tied_weights_keys = {"head.weight": "emb.weight"}  # transformers' {target: source}
        return root

    by_identity, declared_only = signature(tree(True)), signature(tree(False))
    assert by_identity.ties == {"head.weight": ("emb.weight",)}
    assert declared_only.to_json() == by_identity.to_json()


def test_shared_modules_and_buffers_are_recorded_once() -> None:
    shared = nn.Linear(4, 4)

    class Tree(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Sequential(shared, nn.ReLU())
            self.second = shared
            self.register_buffer("table", torch.zeros(3))
            self.alias_holder = nn.Module()
            self.alias_holder.register_buffer("table", self.table)

    sig = signature(Tree())
    assert sig.ties == {"first.0": ("second",), "table": ("alias_holder.table",)}
    assert "second" not in sig.modules and "second.weight" not in sig.parameters
    assert list(sig.parameters) == ["first.0.weight", "first.0.bias"]


def test_twins_and_stand_ins_are_named_explicitly() -> None:
    class ShortConvolutionTwin(nn.Conv1d):
        __hybridload_twin_of__ = "fla.modules.convolution.ShortConvolution"

    class SubclassOfTwin(ShortConvolutionTwin):
        pass

    # the "real" class as the server has it: defined in fla.modules.convolution
    RealShortConvolution = type("ShortConvolution", (nn.Conv1d,), {"__module__": "fla.modules.convolution"})

    def tree(conv_class: type) -> nn.Module:
        root = nn.Module()
        root.conv = conv_class(8, 8, 4, groups=8)
        return root

    client, server = signature(tree(ShortConvolutionTwin)), signature(tree(RealShortConvolution))
    assert client.modules["conv"] == "fla.modules.convolution.ShortConvolution"
    assert client == server and client.to_json() == server.to_json()
    assert signature(tree(SubclassOfTwin)).modules["conv"].endswith("SubclassOfTwin")

    from hybridload.shim.standins import make_symbol

    StandIn = make_symbol("mamba_ssm.ops.triton.layernorm_gated.RMSNorm", "mamba_ssm", "not installed")
    from hybridload.tree.naming import class_name

    assert class_name(StandIn) == "standin:mamba_ssm.ops.triton.layernorm_gated.RMSNorm"


@pytest.mark.parametrize(
    "module, expected",
    [
        ("transformers_modules.my_model.0123456789abcdef.modeling_x", "remote:modeling_x"),
        ("transformers_modules.0123456789abcdef.modeling_x", "remote:modeling_x"),
        ("transformers_modules.nvidia.Nemotron_hyphen_H.0123456789abcdef0123456789abcdef01234567.modeling_nemotron_h",
         "remote:modeling_nemotron_h"),
        ("transformers_modules.org.repo.0123456789abcdef0123456789abcdef01234567.sub.modeling_y",
         "remote:sub.modeling_y"),
        ("transformers_modules.weird_layout.modeling_z", "remote:modeling_z"),
        ("transformers.models.llama.modeling_llama", "transformers.models.llama.modeling_llama"),
        ("transformers_modules_lookalike.x", "transformers_modules_lookalike.x"),
    ],
)
def test_remote_module_names_are_normalised(module: str, expected: str) -> None:
    assert normalise_module_name(module) == expected


def test_devices_are_not_part_of_the_tree() -> None:
    from transformers import AutoModelForCausalLM

    config = tree_fixtures.tiny_gpt2_config()
    assert signature(AutoModelForCausalLM.from_config(config)) == signature(tree_fixtures.meta_build(config))


def test_wrappers_are_unwrapped_and_bad_input_is_typed(llama) -> None:
    from nnsight import NNsight

    model = llama()
    plain = signature(model)
    assert signature(NNsight(model)).to_json() == plain.to_json()
    compiled = torch.compile(model)  # an OptimizedModule; nothing is compiled until it is called
    assert type(compiled).__name__ == "OptimizedModule"
    assert signature(compiled).to_json() == plain.to_json()
    with pytest.raises(SignatureInputError) as info:
        signature(42)
    assert isinstance(info.value, HybridloadError) and "torch.nn.Module" in str(info.value)


def test_importing_the_tree_package_does_not_import_torch() -> None:
    code = "import sys, hybridload.tree; hybridload.tree.__dir__(); print('torch' in sys.modules)"
    env = {**os.environ, "HYBRIDLOAD_DISABLE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"
