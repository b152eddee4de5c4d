"""load_quantized on CPU: packed tensors stream verbatim into the client's tree; the model computes what the
bf16 model holding the same dequantized weights computes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hybridload
from hybridload.errors import CheckpointError, PlanError, QuantizationError
from hybridload.serve.quantized import load_quantized
from hybridload.quant.formats import QuantFormat

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def example() -> Path:
    return hybridload.examples.path("hybrid_tiny_nvfp4")


def _meta(path: Path):
    return hybridload.load_meta(hybridload.resolve(str(path), trust_remote_code=True))


def _plain(path: Path):
    """The unquantized tree of the same model (its plan without the format)."""
    import dataclasses

    plan = hybridload.resolve(str(path), trust_remote_code=True)
    return hybridload.load_meta(dataclasses.replace(plan, quantization=None))


def test_dispatch_serves_the_nvfp4_example_packed_and_equal_to_the_client_tree(example: Path) -> None:
    plan = hybridload.resolve(str(example), trust_remote_code=True)
    client = hybridload.signature(hybridload.load_meta(plan))
    for low_memory in (False, True):
        served = hybridload.dispatch(plan, low_memory=low_memory, verify_tree=True)
        assert hybridload.signature(served) == client
        assert served.backbone.layers[3].mixer.q_proj.weight.dtype == torch.uint8  # packed, as stored
    with pytest.raises(PlanError, match="device_map"):
        hybridload.dispatch(plan, max_memory={"cpu": "1GiB"})


def test_served_example_on_cpu_equals_the_dequantized_bf16_model(tmp_path: Path) -> None:
    """Runs the model (mamba_ssm importable through tests/fakekernels): on CPU the reference backend
    dequantizes to bf16 exactly as the twin's weights were made, so logits are identical, not just close."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join([str(HERE.parent / "fakekernels"), str(HERE.parents[1] / "src")]),
               HYBRIDLOAD_DISABLE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(HERE / "example_probe.py"), "cpu", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "report.json").read_text())
    assert r["client_equals_served"] and r["served_equals_reference"]
    assert r["backends"] == {"reference": 26} and r["grouped_moe"] == []
    assert r["strict"].startswith("refused") and "pure PyTorch (reference)" in r["strict"]
    assert r["logits_identical"] and r["logits_max_ref"] > 1.0
    assert r["served_tokens"] == r["twin_tokens"] and len(r["served_tokens"][0]) > 16
    # the packed linears take a quarter of their bf16 size plus scales (9/32 of it)
    bf16_linear_bytes = sum(
        m.in_features * m.out_features * 2 for m in _plain(hybridload.examples.path("hybrid_tiny_nvfp4")).modules()
        if isinstance(m, torch.nn.Linear) and m.out_features != 512
    )
    assert r["quantized_linear_bytes"] <= 0.3 * bf16_linear_bytes


def test_packed_tensors_keep_their_dtypes_whatever_dtype_says(example: Path) -> None:
    model = load_quantized(_meta(example), example, dtype="float32")
    proj = model.backbone.layers[3].mixer.q_proj
    assert (proj.weight.dtype, proj.weight_scale.dtype, proj.weight_scale_2.dtype) == (torch.uint8, torch.float8_e4m3fn, torch.float32)
    assert model.backbone.embeddings.weight.dtype == torch.float32  # unquantized tensors follow dtype=
    assert all(p.device.type == "cpu" for p in model.parameters())
    from safetensors import safe_open

    with safe_open(str(example / "model.safetensors"), "pt") as f:
        assert torch.equal(proj.weight, f.get_tensor("backbone.layers.3.mixer.q_proj.weight"))
        assert torch.equal(proj.weight_scale.view(torch.uint8), f.get_tensor("backbone.layers.3.mixer.q_proj.weight_scale").view(torch.uint8))


def test_plain_stream_load_still_refuses_quantized_configs(example: Path) -> None:
    from hybridload.serve.streaming import stream_load

    with pytest.raises(PlanError, match="load_quantized"):
        stream_load(_meta(example), example)


def _copy(example: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(example, folder)
    return folder


def test_kv_cache_scales_are_skipped_and_stored_dtype_mismatch_is_refused(example: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _copy(example, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors["backbone.layers.3.mixer.k_scale"] = torch.tensor(1.0)
    save_file(tensors, str(folder / "model.safetensors"))
    hf = json.loads((folder / "hf_quant_config.json").read_text())
    hf["quantization"]["kv_cache_quant_algo"] = "FP8"
    (folder / "hf_quant_config.json").write_text(json.dumps(hf))
    model = load_quantized(_meta(folder), folder)
    assert model.backbone.layers[3].mixer.q_proj.weight.dtype == torch.uint8

    tensors["backbone.layers.3.mixer.q_proj.weight"] = tensors["backbone.layers.3.mixer.q_proj.weight"].view(torch.int8)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"q_proj.weight \(torch.int8 in the checkpoint, torch.uint8 in the tree\)"):
        load_quantized(_meta(folder), folder)


def test_format_errors(example: Path) -> None:
    with pytest.raises(QuantizationError, match="plan says modelopt-fp8"):
        load_quantized(_meta(example), example, fmt=QuantFormat(method="modelopt-fp8"))
    with pytest.raises(QuantizationError, match="moe must be one of"):
        load_quantized(_meta(example), example, moe="dense")
    plain = hybridload.examples.path("hybrid_tiny")
    with pytest.raises(QuantizationError, match="not a pre-quantized checkpoint"):
        load_quantized(_meta(plain), plain)
