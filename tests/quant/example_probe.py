"""Serve the bundled NVFP4 example and compare it with the bf16 model holding the same dequantized weights.

    python example_probe.py DEVICE OUT_DIR      (run with tests/fakekernels on PYTHONPATH: mamba_ssm importable)

Writes OUT_DIR/report.json: whether the served tree's signature equals the GPU-less client build (meta build +
quantize_meta_tree) and the shipped reference, the backends and grouped MoE blocks, kernel_report entries and
the strict-mode verdict, weight bytes against the bf16 model, and logits / greedy tokens of both models.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(device: str, out: Path) -> None:
    import hybridload
    from hybridload.quant import quantize_meta_tree, read_format, signature_header
    from hybridload.serve.quantized import load_quantized
    from hybridload.quant.numerics import dequantize_nvfp4
    from hybridload.serve.quantized import packed_weight_bytes
    from hybridload.serve.dispatch import _strict_check
    from hybridload.errors import StandInReachableError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = hybridload.examples.path("hybrid_tiny_nvfp4")
    source = hybridload.examples.path("hybrid_tiny")
    plan = hybridload.resolve(str(path), trust_remote_code=True)
    client = hybridload.load_meta(plan)  # the plan records the format: the quantized tree
    assert client.hybridload_quant_record.format == read_format(path)
    client_sig = hybridload.signature(client)

    served = load_quantized(hybridload.load_meta(plan), path, device_map=device)
    served_sig = hybridload.signature(served)
    reference_sig = hybridload.TreeSignature.read(path / "reference_signature.json")
    report = hybridload.kernel_report(served)
    try:
        _strict_check(report)
        strict = "accepted"
    except StandInReachableError as exc:
        strict = f"refused: {exc}"[:400]

    twin = AutoModelForCausalLM.from_pretrained(str(source), trust_remote_code=True, dtype=torch.float32)
    twin = twin.to(torch.bfloat16)
    from safetensors.torch import load_file

    tensors = load_file(str(path / "model.safetensors"))
    with torch.no_grad():
        for name, module in twin.named_modules():
            if f"{name}.weight_scale_2" in tensors:
                dense = dequantize_nvfp4(tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"],
                                         tensors[f"{name}.weight_scale_2"], in_features=module.in_features,
                                         dtype=torch.bfloat16)
                module.weight.copy_(dense)
    twin = twin.to(device).eval()
    served.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    ids = tokenizer("the server binds every expert on the GPU.", return_tensors="pt").input_ids.to(device)
    with torch.no_grad():
        served_logits = served(ids).logits.float().cpu()
        twin_logits = twin(ids).logits.float().cpu()
        # greedy decoding: prefill of the prompt, then one-row decode steps (the served model's GEMV kernels)
        served_gen = served.generate(ids, max_new_tokens=16, do_sample=False, return_dict_in_generate=True, output_logits=True)
        twin_gen = twin.generate(ids, max_new_tokens=16, do_sample=False, return_dict_in_generate=True, output_logits=True)
        served_tokens, twin_tokens = served_gen.sequences.cpu().tolist(), twin_gen.sequences.cpu().tolist()
        served_steps = torch.stack([s[0].float().cpu() for s in served_gen.logits])
        twin_steps = torch.stack([s[0].float().cpu() for s in twin_gen.logits])
        # both models teacher-forced on the twin's greedy sequence: where greedy decoding parts, was it a near tie?
        forced = torch.tensor(twin_tokens, device=device)
        served_forced = served(forced).logits.float().cpu()[0]
        twin_forced = twin(forced).logits.float().cpu()[0]
    diff = (served_logits - twin_logits)
    parted = next((i for i, (a, b) in enumerate(zip(served_tokens[0], twin_tokens[0])) if a != b), None)
    at = None if parted is None else parted - 1  # the position whose logits chose the differing token
    step = None if parted is None else parted - ids.shape[1]  # the decode step that chose it (same prefix for both)
    top2 = None if step is None else twin_steps[step].topk(2).values
    same = len(served_steps) if step is None else step  # steps decoded from identical prefixes
    step_diff = served_steps[:same] - twin_steps[:same]
    bf16_bytes = sum(p.numel() * 2 for p in twin.parameters())
    record = {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "client_equals_served": client_sig == served_sig,
        "served_equals_reference": served_sig == reference_sig,
        "served_digest": served_sig.digest,
        "quant_header": signature_header(served),
        "backends": served.hybridload_quant_backends,
        "grouped_moe": served.hybridload_grouped_moe,
        "kernel_report": report.to_dict()["entries"],
        "strict": strict,
        "weight_bytes": packed_weight_bytes(served),
        "bf16_weight_bytes": bf16_bytes,
        "quantized_linear_bytes": sum(
            t.numel() * t.element_size() for n, t in served.named_parameters() if n.rpartition(".")[2] in
            ("weight", "weight_scale", "weight_scale_2", "input_scale") and t.dtype in (torch.uint8, torch.float8_e4m3fn)
            or n.endswith(("weight_scale_2", "input_scale"))
        ),
        "logits_rel_l2": float(diff.norm() / twin_logits.norm()),
        "logits_max_abs": float(diff.abs().max()),
        "logits_max_ref": float(twin_logits.abs().max()),
        "logits_identical": bool(torch.equal(served_logits, twin_logits)),
        "served_tokens": served_tokens,
        "twin_tokens": twin_tokens,
        "teacher_forced_argmax_agreement": float((served_forced.argmax(-1) == twin_forced.argmax(-1)).float().mean()),
        "greedy_parts_at": parted,
        "twin_top2_margin_there": None if top2 is None else float(top2[0] - top2[1]),
        "logits_max_abs_there": None if step is None else float((served_steps[step] - twin_steps[step]).abs().max()),
        "forced_logits_max_abs_there": None if at is None else float((served_forced[at] - twin_forced[at]).abs().max()),
        "decode_steps_compared": same,
        "decode_logits_rel_l2": float(step_diff.norm() / twin_steps[:same].norm()) if same else None,
        "weights_on": sorted({str(p.device) for p in served.parameters()}),
        "packed_dtypes": sorted({str(p.dtype) for n, p in served.named_parameters() if n.endswith(".weight") and p.dtype != torch.bfloat16}),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
