"""Load the bundled example in a fresh process and report what happened (run by tests/example/conftest.py).

    python probe.py server OUT_DIR     # tests/fakekernels on PYTHONPATH: "real" mamba_ssm/causal_conv1d;
                                       # HYBRIDLOAD_DISABLE=1: a plain transformers load (signature only)
    python probe.py laptop OUT_DIR     # no kernel package importable (as in CI), hybridload's shim

server:
  1. torch path: a real load with the packages importable but no CUDA, so transformers reports the fast
     path unavailable and Mamba2 mixers take torch_forward (rmsnorm_fn still comes from mamba_ssm);
  2. kernel path: the modeling module re-executed (importlib.reload) with transformers' CUDA-dependent
     checks answering True, as on a GPU host, and the mixers routed to cuda_kernels_forward;
  3. regenerates the example's files into OUT_DIR/regenerated with make_example.py's own functions.
laptop:
  0. the untrusted build (transformers' native nemotron_h classes), for contrast;
  1. meta build inside hybridload's meta-build window (stand-ins for the absent packages);
  2. an nnsight scan() of the example (fake tensors through the stand-ins' pure-torch references);
  3. then a real load, which must fail the way Nemotron-H fails without mamba_ssm.

Writes OUT_DIR/report.json and, where they apply, logits_*.pt and signature.json. Fresh interpreters
cost ~10 s of imports each, hence several steps per process.
"""
from __future__ import annotations

import collections
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import torch

KERNELS = ("rmsnorm_fn", "mamba_chunk_scan_combined", "selective_state_update", "causal_conv1d_fn", "causal_conv1d_update")
PACKAGE_PATHS = {
    "rmsnorm_fn": "mamba_ssm.ops.triton.layernorm_gated",
    "mamba_chunk_scan_combined": "mamba_ssm.ops.triton.ssd_combined",
    "selective_state_update": "mamba_ssm.ops.triton.selective_state_update",
    "causal_conv1d_fn": "causal_conv1d",
    "causal_conv1d_update": "causal_conv1d",
}
DECODE_STEPS = 24  # cached decode steps checked against the uncached forward
TEXTS = ["the model loads the weights on the GPU. the server checks the tree", "Hello, world!"]


def _bound(modeling) -> dict:
    """For each kernel name: the kernel-package module it was imported from, or None when not bound."""
    found = {}
    for name in KERNELS:
        fn = getattr(modeling, name)
        package = sys.modules.get(PACKAGE_PATHS[name])
        found[name] = None if fn is None else (PACKAGE_PATHS[name] if getattr(package, name, None) is fn else repr(fn))
    return found


def _count_calls(modeling, counts) -> None:
    """Wrap the bound kernel functions (looked up as module globals at call time) to count calls."""
    for name in KERNELS:
        fn = getattr(modeling, name)
        if fn is not None:
            setattr(modeling, name, lambda *a, __fn=fn, __name=name, **k: (counts.update([__name]), __fn(*a, **k))[1])


def _run(model, tokenizer, modeling, tag: str, out: Path) -> dict:
    counts = collections.Counter()
    _count_calls(modeling, counts)
    report = {"fast_path": bool(modeling.is_fast_path_available)}
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
        torch.save(logits, out / f"logits_{tag}.pt")
        report["logits_finite"] = bool(torch.isfinite(logits).all())
        report["forward_calls"] = dict(counts)
        counts.clear()
        # prefill, then DECODE_STEPS cached decode steps, against one forward over the whole sequence
        ids = tokenizer(" ".join([TEXTS[0]] * 3), return_tensors="pt").input_ids
        assert ids.shape[1] > DECODE_STEPS + 2, ids.shape
        full = model(ids).logits
        cache = model(ids[:, :-DECODE_STEPS], use_cache=True).past_key_values
        diffs = []
        for position in range(ids.shape[1] - DECODE_STEPS, ids.shape[1]):
            step = model(ids[:, position : position + 1], past_key_values=cache, use_cache=True).logits[:, -1]
            diffs.append(float((step - full[:, position]).abs().max()))
        report["decode_steps"] = len(diffs)
        report["decode_max_diff"] = max(diffs)
        report["decode_calls"] = dict(counts)
        generated = model.generate(**batch, max_new_tokens=4, do_sample=False)
    report["generated"] = generated[:, batch.input_ids.shape[1] :].tolist()
    return report


def server(example: Path, out: Path) -> dict:
    import transformers.utils.import_utils as import_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hybridload

    detected = {name: list(import_utils._is_package_available(name, return_version=True))
                for name in ("mamba_ssm", "causal_conv1d")}
    tokenizer = AutoTokenizer.from_pretrained(example)
    model = AutoModelForCausalLM.from_pretrained(example, trust_remote_code=True, dtype=torch.float32).eval()
    modeling = sys.modules[type(model).__module__]
    report = {"detected": detected, "torch_path": {"bound": _bound(modeling), **_run(model, tokenizer, modeling, "torch", out)}}
    (out / "signature.json").write_text(hybridload.signature(model).to_json())

    # what transformers answers on a CUDA host with mamba_ssm >= 2.0.4 and causal_conv1d installed
    import_utils.is_mamba_2_ssm_available = lambda: True
    import_utils.is_causal_conv1d_available = lambda: True
    importlib.reload(modeling)  # the model's methods read these module globals at call time
    for layer in model.backbone.layers:
        if layer.block_type == "mamba":
            layer.mixer.forward = layer.mixer.cuda_kernels_forward  # the branch a CUDA device takes
    report["kernel_path"] = {"bound": _bound(modeling), **_run(model, tokenizer, modeling, "kernels", out)}

    spec = importlib.util.spec_from_file_location("make_example", example / "make_example.py")
    make_example = importlib.util.module_from_spec(spec)
    sys.dont_write_bytecode = True  # no __pycache__ inside the package-data folder
    spec.loader.exec_module(make_example)
    regenerated = out / "regenerated" / "hybrid_tiny"
    make_example.write_static_files(regenerated)
    make_example.build_weights(regenerated)
    return report


def laptop(example: Path, out: Path) -> dict:
    import hybridload
    from transformers import AutoConfig, AutoModelForCausalLM

    report = {}
    # without trust_remote_code transformers picks its native nemotron_h class, as for NVIDIA's repos
    native = AutoConfig.from_pretrained(example)
    with torch.device("meta"):
        native_model = AutoModelForCausalLM.from_config(native)
    report["untrusted"] = {"config": type(native).__module__, "model": type(native_model).__module__,
                           "digest": hybridload.signature(native_model).digest}
    config = AutoConfig.from_pretrained(example, trust_remote_code=True)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    report["devices"] = sorted({p.device.type for p in model.parameters()})
    report["kernel_modules_left"] = sorted(m for m in sys.modules if m.split(".")[0] in {"mamba_ssm", "causal_conv1d"})
    (out / "signature.json").write_text(hybridload.signature(model).to_json())

    # an nnsight user on the laptop: scan() runs the forward on fake tensors, through the stand-ins' references
    from nnsight import TransformersModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(example)
    lm = TransformersModel(str(example), task="text-generation", tokenizer=tokenizer, trust_remote_code=True)
    with lm.scan(TEXTS[0]):
        mixer = lm.backbone.layers[0].mixer.output.shape.save()
        moe = lm.backbone.layers[5].mixer.output.shape.save()
        logits = lm.lm_head.output.shape.save()
    report["scan"] = {"tokens": len(tokenizer(TEXTS[0]).input_ids), "mamba_mixer": list(mixer), "moe": list(moe),
                      "logits": list(logits)}

    try:
        AutoModelForCausalLM.from_pretrained(example, trust_remote_code=True)
    except ImportError as exc:
        report["load_error"] = {"type": type(exc).__name__, "message": str(exc)}
    return report


def main() -> None:
    mode, out = sys.argv[1], Path(sys.argv[2])
    import hybridload.examples

    example = hybridload.examples.path("hybrid_tiny")
    report = {"server": server, "laptop": laptop}[mode](example, out)
    (out / "report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
