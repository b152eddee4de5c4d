"""The committed H100 record (tests/data/gpu/gpu_runs_h100.json) says what docs/gpu.md claims it says, and the
GPU-less inputs it was compared with are reproducible here."""
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


def test_every_part_ran_and_every_claim_holds(record):
    """One run: all seven parts ok, and the shared checks find nothing."""
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
