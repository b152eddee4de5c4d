"""CPU checks of the GPU-run scripts' plumbing (no GPU needed; nothing skips): the logit comparisons, the
refusal without CUDA, the dry run of the pure-torch parts, the checker fed a damaged record."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import checks
import kimi_gpu_model

REPO = Path(__file__).resolve().parents[2]
GPU_BENCH = REPO / "benchmarks" / "gpu"
DATA = REPO / "tests" / "data" / "gpu"

LOCK = DATA / "kimi_gpu.lock.json"
META = DATA / "kimi_gpu_meta_signature.json"
FLA_KERNELS = {"causal_conv1d_fwd_kernel", "kda_gate_fwd_kernel", "layer_norm_gated_fwd_kernel"}


def test_gpu_variant_changes_only_the_flash_attn_and_gate_lines():
    from kimi_toy_fixture import MODELING_PY

    source = kimi_gpu_model.modeling_source()
    assert "from flash_attn" not in source and "flash_attn_func" not in source
    assert '"flash_attention_2"' not in source  # no longer forced (nor asserted) in the variant
    assert "fused_kda_gate(head_split(g, self.head_dim), self.A_log.view(-1), dt_bias=self.dt_bias)" in source
    removed = [line for line in MODELING_PY.splitlines() if line not in source.splitlines()]
    # the flash-attn import, the assert + pad + call + slice of the MLA forward, the 2 forcing lines, the gate call
    assert len(removed) == 8, removed
    assert all("flash" in line or "fused_kda_gate(g," in line or line.lstrip().startswith(("v = F.pad", "out = out["))
               for line in removed)


def test_a_fixture_change_that_breaks_an_edit_fails_loudly(monkeypatch):
    monkeypatch.setattr(kimi_gpu_model, "MODELING_PY", kimi_gpu_model.MODELING_PY.replace("flash_attn_func", "fa"))
    with pytest.raises(kimi_gpu_model.FixtureDrift, match="exactly one occurrence"):
        kimi_gpu_model.modeling_source()


@pytest.mark.parametrize("shift, passed", [(0.0, True), (0.019, True), (0.021, False)])
def test_compare_logits_relative_bound(shift, passed):
    real = torch.ones(2, 3, 4)
    result = checks.compare_logits(real, real * (1 + shift), rel_tolerance=0.02)  # float32 shift: ~1e-6 off
    assert result["passed"] is passed and result["rel_l2"] == pytest.approx(shift, rel=1e-5)
    assert checks._rederive(result) is passed


def test_compare_logits_elementwise_bound():
    reference = torch.linspace(-3, 3, 60).reshape(2, 3, 10)
    inside = reference + 0.9e-4
    outside = reference.clone()
    outside[1, 2, 3] += 1e-4 + 1e-4 * reference[1, 2, 3].abs() + 1e-6
    assert checks.compare_logits(inside, reference, rtol=1e-4, atol=1e-4)["passed"] is True
    result = checks.compare_logits(outside, reference, rtol=1e-4, atol=1e-4)
    assert result["passed"] is False and result["worst_ratio_to_bound"] > 1
    assert checks.compare_logits(torch.full((2, 2), float("nan")), torch.ones(2, 2), rel_tolerance=1.0)["passed"] is False


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HYBRIDLOAD_DISABLE"}
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO / "src"), HF_HUB_OFFLINE="1")
    return env


def test_run_all_refuses_to_run_without_cuda(tmp_path):
    proc = subprocess.run([sys.executable, str(GPU_BENCH / "run_all.py"), "--out", str(tmp_path / "out")],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "needs a CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_runs_the_pure_torch_paths(tmp_path):
    """Plumbing of the device script on CPU: the two pure-torch parts run and their records are complete."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(GPU_BENCH / "run_all.py"), "--dry-run", "--skip-fp32", "--out", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the served parts need CUDA: not passed, not crashed
    data = json.loads((out / "gpu_runs.json").read_text())
    fla = data["parts"]["fla-reference-bfloat16"]
    assert fla["ok"] and fla["fla_importable"] is False
    assert {v.partition(" ")[0] for k, v in fla["references_bound"].items() if "kda" in k} == {
        "hybridload.reference.fla.chunk_kda", "hybridload.reference.fla.fused_recurrent_kda",
        "hybridload.reference.fla.fused_kda_gate",
    }
    statuses = {(e["target"], e["status"]) for e in fla["kernel_report"]["entries"] if e["symbol"].startswith("model.")}
    assert statuses == {(checks.SHORT_CONV, checks.TWIN), (checks.GATED_NORM, checks.TWIN)}
    example = data["parts"]["example-reference-cpu"]
    assert example["ok"] and example["mamba_ssm_origin"].startswith(str(REPO / "tests" / "fakekernels"))
    assert example["bound"]["rmsnorm_fn"] == "hybridload.reference.mamba_ssm.rmsnorm_fn"
    assert example["is_fast_path_available"] is False and len(example["generated_ids"]) == 16
    logits = torch.load(out / "logits.pt")
    assert set(logits) == {"fla-reference-bfloat16-24", "fla-reference-bfloat16-100", "example-reference-cpu"}
    assert all(torch.isfinite(t).all() and t.std() > 0.3 for t in logits.values())


def test_checks_catch_a_record_that_lost_the_fallback_or_the_match(record):
    import copy

    broken = copy.deepcopy(record)
    served = broken["parts"]["example-served-cuda"]
    served["cuda_kernels"] = [k for k in served["cuda_kernels"] if k != checks.NORM_TRITON_KERNEL]
    served["kernel_report"]["entries"][0]["status"] = checks.STAND_IN
    broken["runs"]["fla_bfloat16"]["forwards"]["100"]["rel_l2"] = 0.5
    found = "\n".join(checks.problems(broken, meta_digest=json.loads(META.read_text())["digest"]))
    assert checks.NORM_TRITON_KERNEL in found and "stand-in or twin" in found
    assert "T=100" in found

