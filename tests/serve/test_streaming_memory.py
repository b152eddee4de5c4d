"""Peak host memory of a streaming load stays near one converted group (above the loaded model on CPU).

Measured in a fresh subprocess (VmHWM reset right before the load), so other tests' allocations do not
count. On a CPU the model's own weights end up in host RAM; what must stay small is the transient on top
of them, which a read-all-experts load makes as large as the whole expert set. On a GPU the weights leave
host RAM group by group, so host memory barely moves.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig

from hybridload.serve.streaming import plan_stream

_CHILD = r"""
import json, sys, torch
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
from hybridload.serve.streaming import stream_load

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

def meta_model():
    with torch.device("meta"):
        return cls(config)

folder, device = sys.argv[1], sys.argv[2]
config = AutoConfig.from_pretrained(folder)
cls = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
if device != "cpu":  # warm-up: the CUDA context and lazily loaded kernels are not the loader's memory
    stream_load(meta_model(), folder, device_map=device)
    torch.cuda.empty_cache()
model = meta_model()
baseline = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
stream_load(model, folder, device_map=device)
peak = status("VmHWM")
host_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values() if t.device.type == "cpu")
print(json.dumps({"peak_above_baseline": peak - baseline, "host_model_bytes": host_bytes}))
"""

LAYERS, EXPERTS, HIDDEN, EXPERT_INTER = 4, 16, 192, 512
ALL_EXPERT_BYTES = LAYERS * EXPERTS * 3 * HIDDEN * EXPERT_INTER * 4  # what a read-all-experts load holds at once


@pytest.fixture(scope="module")
def medium_moe(kit, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~80 MB fp32 qwen2_moe: 4 layers x 16 experts; the largest converted group (gate_up_proj) is 12 MiB."""
    config = kit.make_config(
        "qwen2_moe", hidden_size=HIDDEN, moe_intermediate_size=EXPERT_INTER, shared_expert_intermediate_size=128,
        num_experts=EXPERTS, num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
    )
    return kit.write_checkpoint(config, tmp_path_factory.mktemp("medium_moe"), shard_size="30MB")


def _largest_group(kit, folder: Path) -> int:
    largest = plan_stream(kit.build_meta(AutoConfig.from_pretrained(folder)), folder).largest_group_bytes
    assert largest == EXPERTS * 2 * EXPERT_INTER * HIDDEN * 4  # one layer's fused gate_up_proj, fp32
    return largest


def _measure(folder: Path, device: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder), device], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_load_transient_is_about_one_converted_group(kit, medium_moe: Path) -> None:
    largest = _largest_group(kit, medium_moe)
    result = _measure(medium_moe, "cpu")
    transient = result["peak_above_baseline"] - result["host_model_bytes"]
    assert transient <= 1.5 * largest, (transient / largest, result)
    assert transient < ALL_EXPERT_BYTES / 4


@pytest.mark.gpu
def test_gpu_load_keeps_host_memory_below_one_group(kit, medium_moe: Path) -> None:
    largest = _largest_group(kit, medium_moe)
    result = _measure(medium_moe, "cuda")
    assert result["host_model_bytes"] == 0
    assert result["peak_above_baseline"] <= 0.5 * largest, (result["peak_above_baseline"] / largest, result)
