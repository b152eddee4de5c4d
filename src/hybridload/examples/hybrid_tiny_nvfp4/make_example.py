"""Generate ``hybrid_tiny_nvfp4``: the bundled ``hybrid_tiny`` example as an NVFP4 checkpoint (Model Optimizer layout).

    python make_example.py [--fakekernels PATH] [--out DIR] [--skip-signature]

The float32 weights of ``hybrid_tiny`` are cast to bfloat16 (the dtype NVIDIA's NVFP4 checkpoints keep their
unquantized tensors in) and every linear but ``lm_head`` is quantized with
:func:`hybridload.quant.write_nvfp4_checkpoint`, calibrated on a few fixed sentences run through the model.
Remote code, tokenizer and generation config are copied from ``hybrid_tiny``. Loading the model needs
``mamba_ssm`` (as for ``hybrid_tiny``), so the steps that run it happen in a child process with the fake
kernel packages of ``tests/fakekernels`` on PYTHONPATH.
``reference_signature.json`` is the tree a server holds after ``hybridload.quant.load_quantized``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "hybrid_tiny"
COPIED = (
    "configuration_nemotron_h.py",
    "modeling_nemotron_h.py",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
)
EXCLUDE = ("lm_head",)
CALIBRATION = (
    "the model loads the weights on the GPU.",
    "Ada asked Grace about the checkpoint before lunch.",
    "Mamba2 mixers, attention, MLP and mixture-of-experts layers alternate: M-M*ME-M.",
)


def build_checkpoint(out: Path) -> None:
    """Child step: load hybrid_tiny (mamba_ssm importable), cast to bf16, quantize, write."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hybridload.quant.writer import write_nvfp4_checkpoint

    model = AutoModelForCausalLM.from_pretrained(str(SOURCE), trust_remote_code=True, dtype=torch.float32)
    model = model.to(torch.bfloat16).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(SOURCE))
    calibration = [tokenizer(text, return_tensors="pt").input_ids for text in CALIBRATION]
    config = json.loads((SOURCE / "config.json").read_text())
    config["dtype"] = "bfloat16"
    write_nvfp4_checkpoint(model, out, exclude=EXCLUDE, calibration_inputs=calibration, config=config)
    os.chmod(out / "model.safetensors", 0o644)


def build_signature(out: Path) -> None:
    """Child step: the served tree (meta build + quantized tree + streamed shards), signed."""
    import hybridload
    from hybridload.quant import load_quantized

    plan = hybridload.resolve(str(out), trust_remote_code=True)
    model = load_quantized(hybridload.load_meta(plan), out)
    from hybridload.quant import signature_header

    text = hybridload.signature(model, header=signature_header(model)).to_json()
    (out / "reference_signature.json").write_text(text if text.endswith("\n") else text + "\n")


def _run_child(step: str, fakekernels: Path, out: Path) -> None:
    env = dict(os.environ)
    src = HERE.parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(fakekernels), str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["HYBRIDLOAD_DISABLE"] = "1"
    with tempfile.TemporaryDirectory() as modules_cache:
        env["HF_MODULES_CACHE"] = modules_cache
        command = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--out", str(out)]
        subprocess.run(command, env=env, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fakekernels", type=Path, default=HERE.parents[3] / "tests" / "fakekernels")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--skip-signature", action="store_true")
    parser.add_argument("--step", choices=["checkpoint", "signature"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.step == "checkpoint":
        return build_checkpoint(out)
    if args.step == "signature":
        return build_signature(out)
    if not (args.fakekernels / "mamba_ssm" / "__init__.py").is_file():
        parser.error(f"no fake kernel packages at {args.fakekernels} (pass --fakekernels)")
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copyfile(SOURCE / name, out / name)
    _run_child("checkpoint", args.fakekernels.resolve(), out)
    if not args.skip_signature:
        _run_child("signature", args.fakekernels.resolve(), out)


if __name__ == "__main__":
    main()
