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
