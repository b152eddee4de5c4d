"""CPU checks of the committed H100 record and of the GPU-run scripts (no GPU needed; nothing skips).

The record (tests/data/gpu/gpu_runs_h100.json) is what ``benchmarks/gpu/run_all.py`` wrote on the device,
unedited. These tests check that it says what docs/gpu.md claims it says, that the GPU-less inputs it was
compared with are reproducible here, and that the scripts' plumbing works on a CPU.
"""
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


def _served(record: dict) -> dict:
    return record["parts"]["fla-served-bfloat16"]


def test_record_comes_from_the_h100_with_real_fla(record):
    env = record["environment"]
    assert env["device"] == "NVIDIA H100 80GB HBM3"
    assert env["torch"].startswith("2.11") and env["triton"] == "3.6.0" and env["transformers"] == "5.17.0"
    assert env["fla-core"] == env["flash-linear-attention"] == "0.6.0"
    assert record["dry_run"] is False and _served(record)["fla_importable"] is True


def test_strict_cuda_dispatch_bound_only_real_fla_kernels(record):
    served = _served(record)
    assert served["ok"] is True  # dispatch(strict=True, verify_tree=True) returned: nothing refused
    assert served["dispatch"] == {"device_map": "cuda", "strict": True, "kernel_fallback": "none", "verify_tree": True}
    assert served["devices"] == ["cuda:0"]
    entries = served["kernel_report"]["entries"]
    assert {e["status"] for e in entries} == {checks.REAL}
    assert {(e["package"], e["version"]) for e in entries} == {("fla", "0.6.0")}
    targets = [e["target"] for e in entries]
    assert set(checks.FLA_FUNCTIONS) <= set(targets)
    assert targets.count(checks.SHORT_CONV) == 3 * checks.KDA_LAYERS
    assert targets.count(checks.GATED_NORM) == checks.KDA_LAYERS
    # the human-readable report says the same as the entries
    assert served["kernel_report"]["text"].count(" real ") == len(entries)


def test_both_kda_paths_launched_fla_triton_kernels(record):
    forwards = _served(record)["forwards"]
    recurrent, chunked = set(forwards["24"]["cuda_kernels"]), set(forwards["100"]["cuda_kernels"])
    assert FLA_KERNELS <= recurrent and FLA_KERNELS <= chunked
    assert "fused_recurrent_kda_fwd_kernel" in recurrent
    assert not any(k.startswith("chunk_kda") for k in recurrent)
    assert {"chunk_kda_fwd_kernel_intra_token_parallel", "chunk_kda_fwd_kernel_inter_solve_fused"} <= chunked
    assert "fused_recurrent_kda_fwd_kernel" not in chunked
    for length, entry in forwards.items():
        assert entry["input_shape"] == [2, int(length)] and entry["logits_dtype"] == "bfloat16"
        assert entry["second_call_seconds"] < entry["first_call_seconds"]  # the first call compiled


def test_served_tree_equals_the_committed_gpu_less_meta_tree(record):
    sig = _served(record)["signature"]
    meta = json.loads(META.read_text())
    assert sig["meta_digest"] == meta["digest"]
    assert sig["served_digest"] == sig["meta_digest"]
    assert sig["diff"]["identical"] is True and sig["diff"]["differences"] == []
    # only facts about the machines differ, never the tree
    assert {key.split(".")[0] for key in sig["diff"]["header_differences"]} <= {"built_on", "compat_entries", "plan", "versions"}
    assert _served(record)["plan_from_lock"] is True
    assert _served(record)["plan"]["fingerprint"] == json.loads(LOCK.read_text())["plan"]["fingerprint"]


def test_committed_meta_signature_is_the_gpu_less_build(tmp_path):
    import prepare_meta

    assert importlib.util.find_spec("fla") is None  # the client side: twins, not fla
    plan, signature = prepare_meta.build(tmp_path / "kimi_gpu")
    committed = json.loads(META.read_text())
    assert signature.digest == committed["digest"]
    assert committed["header"]["built_on"] == {"cuda": False, "fla_installed": False}
    document = json.loads(LOCK.read_text())
    lock = document["plan"]
    assert document["signature"]["digest"] == committed["digest"]  # the lock's expected tree is the meta build's
    assert plan.fingerprint == lock["fingerprint"]  # the folder's content (config + code) is what the lock pins
    assert {c.path: c.sha256 for c in plan.code_files} == {c["path"]: c["sha256"] for c in lock["code_files"]}
    assert (lock["dtype"], lock["attn_implementation_built"], lock["trust_remote_code"]) == ("bfloat16", "eager", True)
    assert lock["repo"] == str(kimi_gpu_model.FOLDER)


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


def test_every_part_ran_and_every_claim_holds(record):
    """Issues 6.6, 7.5 and 8.5 in one run: all seven parts ok, and the shared checks find nothing."""
    assert sorted(record["parts"]) == [
        "example-reference-cpu", "example-reference-cuda", "example-served-cuda",
        "fla-reference-bfloat16", "fla-reference-float32", "fla-served-bfloat16", "fla-served-float32",
    ]
    assert all(part["ok"] for part in record["parts"].values())
    assert checks.problems(record, meta_digest=json.loads(META.read_text())["digest"]) == []
    assert all(record["runs"][name]["passed"] for name in ("fla_bfloat16", "fla_float32", "example_triton_fallback"))


@pytest.mark.parametrize("dtype, bound", [("bfloat16", 2e-2), ("float32", 2e-3)])
def test_served_fla_forwards_match_the_pure_torch_path(record, dtype, bound):
    run = record["runs"][f"fla_{dtype}"]
    assert run["tolerance"] == bound
    for length in ("24", "100"):  # the recurrent and the chunked KDA path
        comparison = run["forwards"][length]
        assert comparison["rel_l2"] <= bound and checks._rederive(comparison)
        assert comparison["reference_std"] > 0.5  # informative logits, not a constant
    reference = record["parts"][f"fla-reference-{dtype}"]
    assert reference["fla_importable"] is False  # the reference process had no fla at all
    assert {v.partition(" ")[0] for k, v in reference["references_bound"].items() if "kda" in k} == {
        "hybridload.reference.fla.chunk_kda", "hybridload.reference.fla.fused_recurrent_kda",
        "hybridload.reference.fla.fused_kda_gate",
    }


def test_example_served_through_the_triton_fallback_matches_pure_torch(record):
    served = record["parts"]["example-served-cuda"]
    assert served["absent"] == {"mamba_ssm": True, "causal_conv1d": True}
    assert served["without_fallback"]["raised"] == "RemoteCodeError"
    assert "mamba-ssm is required" in served["without_fallback"]["message"]
    assert served["dispatch"] == {"device_map": "cuda", "strict": True, "kernel_fallback": "triton"}
    assert served["devices"] == ["cuda:0"]
    (entry,) = served["kernel_report"]["entries"]
    assert entry["status"] == checks.FALLBACK and entry["target"] == "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn"
    assert served["bound"]["rmsnorm_fn"] == "hybridload.kernels.layernorm_gated.rmsnorm_fn"
    assert served["is_fast_path_available"] is False  # availability stays truthful: the mixers run torch_forward
    run = record["runs"]["example_triton_fallback"]
    assert run["tolerance"] == {"rtol": 1e-4, "atol": 1e-4}
    for device in ("cpu", "cuda"):
        reference = run["references"][device]
        assert reference["generated_equal"] is True and reference["logits"]["passed"] is True
        assert reference["logits"]["worst_ratio_to_bound"] < 1 and checks._rederive(reference["logits"])
        assert record["parts"][f"example-reference-{device}"]["generated_ids"] == served["generated_ids"]
    assert len(served["generated_ids"]) == 16


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
