"""The LoadPlan record: immutable, JSON round-trip, header facts, and a light import."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

import hybridload
from hybridload.errors import PlanError
from hybridload.plan.model import SCHEMA, LoadPlan


def test_plan_is_immutable(build):
    plan = hybridload.resolve(build.llama(), some_flag=[1, 2])
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.commit = "x" * 40  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.load_kwargs["other"] = 1  # type: ignore[index]
    assert plan.load_kwargs["some_flag"] == [1, 2]


def test_plan_records_every_decision(build):
    plan = hybridload.resolve(build.hybrid(), trust_remote_code=True, dtype="bfloat16")
    data = plan.to_dict()
    assert data["source"] == "local" and len(data["fingerprint"]) == 64 and data["commit"] is None
    assert data["trust_remote_code"] is True and "explicit" in data["trust_reason"]
    assert data["auto_class"] == "AutoModelForCausalLM"
    assert data["model_class"] == "modeling_nemotron_h.NemotronHForCausalLM"
    assert data["dtype"] == "bfloat16" and data["dtype_source"] == "explicit argument"
    assert {f["path"] for f in data["code_files"]} == {"configuration_nemotron_h.py", "modeling_nemotron_h.py"}
    assert set(data["versions"]) == {"hybridload", "torch", "transformers", "huggingface_hub"}


def test_dtype_defaults_follow_config_then_checkpoint(build, delete_marker):
    folder = build.llama(name="fp16", dtype="float16")
    plan = hybridload.resolve(folder)
    assert (plan.dtype, plan.dtype_source) == ("float16", "config.json dtype")
    build.edit_config(folder, dtype=delete_marker)  # no dtype in config: read the checkpoint header
    plan = hybridload.resolve(folder)
    assert (plan.dtype, plan.dtype_source) == ("float16", "checkpoint header of model.safetensors")
    assert hybridload.resolve(folder, dtype="auto").dtype == "float16"
    meta = hybridload.load_meta(plan)
    assert {str(p.dtype) for p in meta.parameters()} == {"torch.float16"}


def test_header_carries_the_signature_facts(build):
    plan = hybridload.resolve(build.hybrid(), trust_remote_code=True, attn_implementation="flash_attention_2")
    header = plan.to_header()
    assert header["fingerprint"] == plan.fingerprint and header["commit"] is None
    assert header["trust_remote_code"] is True and header["trust_reason"] == plan.trust_reason
    assert header["attn_implementation"] == {"requested": "flash_attention_2", "built": "flash_attention_2"}
    assert all(len(v) == 64 for v in header["code_files"].values())
    assert header["versions"]["transformers"] == plan.versions["transformers"]
    signature_header = hybridload.signature(hybridload.load_meta(plan)).header
    assert signature_header["plan"]["attn_implementation"]["built"] == "flash_attention_2"


def test_a_plan_passes_through_resolve_and_cannot_be_changed_there(build):
    plan = hybridload.resolve(build.llama())
    assert hybridload.resolve(plan) is plan
    with pytest.raises(PlanError, match="already resolved"):
        hybridload.resolve(plan, dtype="float16")


def test_from_json_rejects_foreign_documents():
    with pytest.raises(PlanError, match="JSON object"):
        LoadPlan.from_json("[]")
    with pytest.raises(PlanError, match="schema"):
        LoadPlan.from_json('{"schema": 0}')
    with pytest.raises(PlanError, match="unknown keys"):
        LoadPlan.from_json(json.dumps({"schema": SCHEMA, "bogus": 1}))


def test_importing_hybridload_and_plan_modules_stays_light():
    code = (
        "import sys, hybridload, hybridload.plan, hybridload.plan.model, hybridload.load, hybridload.load.resolve, "
        "hybridload.load.meta, hybridload.build, hybridload.build.routing, hybridload.plan.trust, "
        "hybridload.plan.lockfile, hybridload.build.attention, hybridload.plan.validate, hybridload.plan.code, "
        "hybridload.plan.revision, hybridload.serve.dispatch; "
        "hybridload.install(); "
        "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dtype_falls_back_to_torch_default_without_config_or_local_weights(build, delete_marker):
    folder = build.llama(name="nodtype")
    build.edit_config(folder, dtype=delete_marker)
    (folder / "model.safetensors").unlink()
    plan = hybridload.resolve(folder)
    assert plan.dtype == "float32" and plan.dtype_source.startswith("torch default")
