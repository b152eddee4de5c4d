"""examples/nnsight_remote.py, the laptop-side script users copy, runs on a machine without kernels or a GPU."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "nnsight_remote.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("nnsight_remote_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_builds_scans_and_prepares_the_request(script, capsys, offline, no_network):
    result = script.main([])
    assert "remote" not in result and "dry run: nothing was sent" in capsys.readouterr().out
    assert "trust_remote_code=True" in result["plan"] and "attention=sdpa" in result["plan"]
    assert result["meta build"].startswith("stood in for: mamba_ssm")
    assert result["layers"].startswith("backbone.layers: ['mamba', 'mlp', 'mamba', 'attention'")
    assert json.loads(result["model key"].partition(":")[2])["trust_remote_code"] is True
    assert result["scan"]["logits"][-1] == 512 and result["scan"]["mamba mixer"][-1] == 64
    assert not any(name.split(".")[0] == "mamba_ssm" for name in sys.modules)


def test_the_servers_attention_implementation_travels(script, capsys):
    result = script.main(["--attn-implementation", "flash_attention_2"])
    assert "attention=flash_attention_2" in result["plan"]
    assert result["attention sent to the server"] == "flash_attention_2"
    assert "scan skipped" in capsys.readouterr().out and "scan" not in result
    lm = script.build(None, None, "flash_attention_2")
    with pytest.raises(RuntimeError, match="autocast"):  # why: transformers' flash integration on fake tensors
        script.scan(lm)
