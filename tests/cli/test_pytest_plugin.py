"""The pytest plugin through pytester: build, compare, fail with a readable diff, --hybridload-update."""
from __future__ import annotations

import json

pytest_plugins = ["pytester"]


def _write(folder, hidden):
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "hidden_size": hidden,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 128,
            }
        )
    )


def test_plugin_update_then_pass_then_fail(pytester):
    model = pytester.path / "model"
    _write(model, 32)
    pytester.makepyfile(
        test_tree=f"""
        def test_tree(hybridload_meta, hybridload_tree):
            model = hybridload_meta({str(model)!r})
            hybridload_tree.assert_matches(model, "expected/tree.json")
        """
    )
    first = pytester.runpytest_subprocess("-q")
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*--hybridload-update*"])
    assert pytester.runpytest_subprocess("--hybridload-update", "-q").ret == 0
    assert (pytester.path / "expected" / "tree.json").exists()
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=1)
    _write(model, 48)
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*module tree differs*", "*model.embed_tokens.weight*"])


def test_plugin_checks_that_a_checkpoint_fills_the_tree(pytester):
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    model = pytester.path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)).save_pretrained(model)
    pytester.makepyfile(
        test_fit=f"""
        def test_fit(hybridload_meta, hybridload_tree):
            report = hybridload_tree.assert_checkpoint_fits(hybridload_meta({str(model)!r}))
            assert report.checkpoint_tensors == report.model_tensors == 21
        """
    )
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=1)
    tensors = load_file(model / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(3, 3)  # a shape the tree does not have
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*checkpoint does not fill the tree*", "*model.layers.1.mlp.up_proj.weight*"])
