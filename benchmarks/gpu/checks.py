"""What the recorded GPU runs must show, as plain functions over ``gpu_runs.json``.

``run_all.py`` uses :func:`compare_logits` to decide each comparison; :func:`problems` re-derives every
verdict from the recorded numbers and checks the claims docs/gpu.md makes (kernel report contents, launched
kernels, signatures). The CPU tests in ``tests/gpu/`` run :func:`problems` on the committed record, and the
GPU test runs it on a live run, so the same assertions back both.
"""
from __future__ import annotations

from typing import Any

#: relative L2 bound ``||real - reference|| / ||real||`` for the fla run, per dtype (as in docs/gpu.md's
#: kernel-level fla check: bf16 2e-2, fp32 2e-3; fp32 is loose because fla's chunked kernel uses TF32 dots)
FLA_TOLERANCE = {"bfloat16": 2e-2, "float32": 2e-3}
#: the bundled example is float32 end to end: elementwise ``|a - b| <= atol + rtol * |b|`` (torch.isclose)
EXAMPLE_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}

REAL, STAND_IN, TWIN, FALLBACK = "real", "stand-in", "twin (pure PyTorch)", "hybridload triton fallback"
NORM_FALLBACK_FILE = "hybridload/kernels/layernorm_gated.py"
NORM_TRITON_KERNEL = "_norm_fwd_kernel"  # hybridload.kernels._layernorm_gated_triton's @triton.jit function
FLA_FUNCTIONS = ("fla.ops.kda.chunk_kda", "fla.ops.kda.fused_recurrent_kda", "fla.ops.kda.gate.fused_kda_gate")
SHORT_CONV = "fla.modules.causal_conv1d.ops.ShortConvolution"
GATED_NORM = "fla.modules.norm.fused_norm_gate.FusedRMSNormGated"
KDA_LAYERS = 3  # kimi_gpu_model.CONFIG: kda_layers [1, 2, 4]


def compare_logits(real: Any, reference: Any, *, rel_tolerance: float | None = None, rtol: float | None = None,
                   atol: float | None = None) -> dict[str, Any]:
    """Numbers of one comparison and its verdict (relative L2 bound, or torch.isclose bounds)."""
    import torch

    real, reference = real.double(), reference.double()
    if real.shape != reference.shape:
        return {"shape": [list(real.shape), list(reference.shape)], "passed": False}
    diff = (real - reference).abs()
    result: dict[str, Any] = {
        "shape": list(real.shape),
        "rel_l2": float((real - reference).norm() / real.norm().clamp_min(1e-30)),
        "max_abs": float(diff.max()),
        "reference_std": float(reference.std()),
        "argmax_agreement": float((real.argmax(-1) == reference.argmax(-1)).double().mean()),
        "finite": bool(torch.isfinite(real).all() and torch.isfinite(reference).all()),
    }
    if rel_tolerance is not None:
        result["rel_tolerance"] = rel_tolerance
        result["passed"] = result["finite"] and result["rel_l2"] <= rel_tolerance
    else:
        result.update(rtol=rtol, atol=atol)
        bound = atol + rtol * reference.abs()
        result["worst_ratio_to_bound"] = float((diff / bound).max())
        result["passed"] = result["finite"] and bool((diff <= bound).all())
    return result


def _rederive(comparison: dict[str, Any]) -> bool:
    if not comparison.get("finite"):
        return False
    if "rel_tolerance" in comparison:
        return comparison["rel_l2"] <= comparison["rel_tolerance"]
    return comparison["worst_ratio_to_bound"] <= 1.0


def _fla_problems(data: dict[str, Any], dtype: str) -> list[str]:
    found: list[str] = []
    run = data["runs"].get(f"fla_{dtype}")
    served = data["parts"].get(f"fla-served-{dtype}", {})
    reference = data["parts"].get(f"fla-reference-{dtype}", {})
    if run is None:
        return [f"no fla run in {dtype}"]
    if not (served.get("ok") and reference.get("ok")):
        found.append(f"fla {dtype}: a part failed: served ok={served.get('ok')}, reference ok={reference.get('ok')}")
        return found
    if run["tolerance"] != FLA_TOLERANCE[dtype]:
        found.append(f"fla {dtype}: tolerance {run['tolerance']} is not the documented {FLA_TOLERANCE[dtype]}")
    for length in ("24", "100"):
        comparison = run["forwards"].get(length)
        if comparison is None:
            found.append(f"fla {dtype}: no comparison for T={length}")
            continue
        if comparison["passed"] != _rederive(comparison):
            found.append(f"fla {dtype} T={length}: recorded verdict disagrees with its numbers")
        if not comparison["passed"]:
            found.append(f"fla {dtype} T={length}: rel_l2 {comparison['rel_l2']:.3g} over {comparison['rel_tolerance']}")
        if comparison["reference_std"] < 0.3:
            found.append(f"fla {dtype} T={length}: uninformative logits (std {comparison['reference_std']:.3g})")
    if served["dispatch"] != {"device_map": "cuda", "strict": True, "kernel_fallback": "none", "verify_tree": True}:
        found.append(f"fla {dtype}: dispatched with {served['dispatch']}")
    if served["devices"] != ["cuda:0"]:
        found.append(f"fla {dtype}: parameters on {served['devices']}")
    entries = served["kernel_report"]["entries"]
    if {e["status"] for e in entries} != {REAL} or {e["package"] for e in entries} != {"fla"}:
        found.append(f"fla {dtype}: kernel report is not all real fla: {sorted({(e['package'], e['status']) for e in entries})}")
    targets = [e["target"] for e in entries]
    for function in FLA_FUNCTIONS:
        if function not in targets:
            found.append(f"fla {dtype}: {function} not in the kernel report")
    if targets.count(SHORT_CONV) != 3 * KDA_LAYERS or targets.count(GATED_NORM) != KDA_LAYERS:
        found.append(f"fla {dtype}: expected {3 * KDA_LAYERS} ShortConvolution and {KDA_LAYERS} FusedRMSNormGated modules")
    for length, needle in (("24", "fused_recurrent"), ("100", "chunk")):
        kernels = served["forwards"][length].get("cuda_kernels", [])
        if not any(needle in k and "kda" in k for k in kernels):
            found.append(f"fla {dtype} T={length}: no launched kernel named like '*{needle}*kda*'")
    ref_entries = reference["kernel_report"]["entries"]
    if any(e["status"] == REAL for e in ref_entries) or not any(e["status"] == TWIN for e in ref_entries):
        found.append(f"fla {dtype}: the reference is not the pure-torch (twins + references) build")
    return found


def _signature_problems(data: dict[str, Any], meta_digest: str | None) -> list[str]:
    """Re-derived from the served part (the parent's summary may be missing when a run was cut short)."""
    served = data["parts"].get("fla-served-bfloat16", {})
    sig = served.get("signature")
    if sig is None:
        return ["no signature comparison recorded"]
    found = []
    same = sig["served_digest"] == sig["meta_digest"]
    summary = data["runs"].get("kimi_signature")
    if sig["diff"]["identical"] != same or (summary is not None and summary["identical"] != same):
        found.append("recorded 'identical' disagrees with the digests")
    if not same:
        found.append(f"served tree differs from the GPU-less meta tree, first at {sig['diff']['first_path']}")
    if meta_digest is not None and sig["meta_digest"] != meta_digest:
        found.append("the run compared against another meta signature than the committed one")
    if not served.get("plan_from_lock"):
        found.append("the served plan was not resolved against the carried lock")
    return found


def _example_problems(data: dict[str, Any]) -> list[str]:
    run = data["runs"].get("example_triton_fallback")
    served = data["parts"].get("example-served-cuda", {})
    if run is None or not served.get("ok"):
        return [f"example run missing or failed: {served.get('error', {}).get('message')}"]
    found = []
    if served["absent"] != {"mamba_ssm": True, "causal_conv1d": True}:
        found.append(f"kernel packages were not absent: {served['absent']}")
    if served["dispatch"] != {"device_map": "cuda", "strict": True, "kernel_fallback": "triton"} or not served["strict_accepted"]:
        found.append("example not dispatched with strict=True and kernel_fallback='triton'")
    if served["without_fallback"]["raised"] is None:
        found.append("dispatch without the fallback did not fail although mamba_ssm is absent")
    entries = served["kernel_report"]["entries"]
    if any(e["status"] in (STAND_IN, TWIN) for e in entries):
        found.append("the served example can reach a stand-in or twin")
    # a fallback entry names the symbol it stands for (target) and where its implementation lives (file)
    fallback = [(e["symbol"].rpartition(".")[2], e["package"], e["target"], e["file"].endswith(NORM_FALLBACK_FILE))
                for e in entries if e["status"] == FALLBACK]
    if fallback != [("rmsnorm_fn", "mamba_ssm", "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn", True)]:
        found.append(f"expected exactly mamba_ssm's rmsnorm_fn bound to the triton fallback, got {fallback}")
    if NORM_TRITON_KERNEL not in served.get("cuda_kernels", []):
        found.append(f"hybridload's Triton norm kernel ({NORM_TRITON_KERNEL}) was not launched")
    if served["devices"] != ["cuda:0"]:
        found.append(f"example parameters on {served['devices']}")
    for device in ("cpu", "cuda"):
        entry = run["references"].get(device)
        if entry is None or "logits" not in entry:
            found.append(f"no comparison with the pure-torch path on {device}")
            continue
        if entry["logits"]["passed"] != _rederive(entry["logits"]):
            found.append(f"example vs {device}: recorded verdict disagrees with its numbers")
        if not entry["passed"]:
            found.append(f"example vs pure torch on {device}: logits {entry['logits']} generated_equal {entry['generated_equal']}")
        if entry["logits"]["reference_std"] < 0.5:
            found.append(f"example vs {device}: uninformative logits")
    if len(served.get("generated_ids", [])) == 0:
        found.append("no generated tokens")
    return found


def problems(data: dict[str, Any], meta_digest: str | None = None) -> list[str]:
    """Every way the record fails to show what docs/gpu.md says it shows (empty: it shows it)."""
    found = _fla_problems(data, "bfloat16") + _signature_problems(data, meta_digest) + _example_problems(data)
    if "fla_float32" in data["runs"]:
        found += _fla_problems(data, "float32")
    return found
