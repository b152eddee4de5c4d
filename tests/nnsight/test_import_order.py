"""Import order: hybridload imported before or after transformers and nnsight gives the same routing (the
post-import hook patches what is imported later, install() patches what is already imported)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
first = sys.argv[1]
if first == "hybridload":
    import hybridload
    import transformers, nnsight
else:
    import transformers, nnsight
    import hybridload
import torch
from transformers import AutoConfig, AutoModelForCausalLM
folder = str(hybridload.examples.path("hybrid_tiny"))
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)  # kernels absent: needs the shim
lm = nnsight.TransformersModel(folder, task="text-generation", trust_remote_code=True)
print(json.dumps({"plain": hybridload.signature(model).digest, "nnsight": hybridload.signature(lm._module).digest,
                  "installed": hybridload.is_installed()}))
"""


@pytest.mark.parametrize("first", ["hybridload", "transformers"])
def test_hybridload_before_or_after_transformers_and_nnsight(first: str, tmp_path: Path) -> None:
    from hybridload.examples import path

    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    env.pop("HYBRIDLOAD_DISABLE", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT, first], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    built = json.loads(result.stdout.strip().splitlines()[-1])
    reference = json.loads((path("hybrid_tiny") / "reference_signature.json").read_text())["digest"]
    assert built == {"plain": reference, "nnsight": reference, "installed": True}
