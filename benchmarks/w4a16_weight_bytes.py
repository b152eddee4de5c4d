"""Weight bytes of an NVFP4 checkpoint's served tree against the bf16 model's, counted exactly without a GPU.

    python benchmarks/w4a16_weight_bytes.py [--out FILE.json]

The served tree is the client's meta tree (``load_meta`` of the checkpoint's plan; the GPU tests and
``dispatch(..., verify_tree=True)`` check that the two signatures are identical), so the bytes of its
parameters and buffers are the bytes a served model holds on the GPU. Counted per part: the quantized linears
(packed codes, block scales, per-tensor scales) against the same linears in bf16, and everything the checkpoint
keeps unquantized (embeddings, ``lm_head``, norms, Mamba's A / D / conv, routers), which is the same in both.

Models: hybridload's bundled Nemotron-H-style remote code at Nemotron-3-Nano-30B-A3B's published widths and
depth (52 layers, vocabulary 131072), and at the 8-layer, 32000-token scale of ``benchmarks/w4a16_model.py``
(whose whole-model GPU record this explains). Both quantize every linear but ``lm_head``, as
``write_nvfp4_checkpoint(exclude=("lm_head",))`` writes them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from remote_standins import write_nemotron_h  # noqa: E402
from w4a16_model import SCALED  # noqa: E402

MODELS = {
    "nemotron-3-nano-30b-a3b widths, 52 layers": {},
    "w4a16_model.py scale, 8 layers": {key: SCALED[key] for key in ("vocab_size", "num_hidden_layers", "hybrid_override_pattern")},
}
EXCLUDE = ("lm_head",)


def _write_nvfp4_config(folder: Path) -> None:
    """The config a Model Optimizer NVFP4 export carries (``quantization_config`` and ``hf_quant_config.json``)."""
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16,
                                     "ignore": list(EXCLUDE)}
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    hf_quant = {"producer": {"name": "modelopt"},
                "quantization": {"quant_algo": "NVFP4", "group_size": 16, "exclude_modules": list(EXCLUDE)}}
    (folder / "hf_quant_config.json").write_text(json.dumps(hf_quant, indent=1))


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def count(folder: Path) -> dict:
    import hybridload
    from hybridload.quant.modules import QUANTIZED_LINEAR_CLASSES

    plan = hybridload.resolve(str(folder), trust_remote_code=True)
    served = hybridload.load_meta(plan)
    plain = hybridload.load_meta(dataclasses.replace(plan, quantization=None))
    plain_modules = dict(plain.named_modules())
    quantized = [(path, m) for path, m in served.named_modules() if isinstance(m, QUANTIZED_LINEAR_CLASSES)]
    quantized_bytes = _bytes(t for _, m in quantized for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)))
    quantized_bf16 = _bytes(t for path, _ in quantized for t in plain_modules[path].parameters(recurse=False))
    total_served = _bytes((*served.parameters(), *served.buffers()))
    total_bf16 = _bytes((*plain.parameters(), *plain.buffers()))
    kept = total_served - quantized_bytes
    embeddings = _bytes(served.get_input_embeddings().parameters()) + _bytes(served.get_output_embeddings().parameters())
    return {
        "parameters_bf16_model": sum(p.numel() for p in plain.parameters()),
        "quantized_linears": len(quantized),
        "bf16_model_bytes": total_bf16,
        "served_bytes": total_served,
        "served_over_bf16": total_served / total_bf16,
        "quantized_linear_bytes": quantized_bytes,
        "quantized_linear_bf16_bytes": quantized_bf16,
        "quantized_linears_over_bf16": quantized_bytes / quantized_bf16,
        "unquantized_bytes": kept,
        "unquantized_share_of_served": kept / total_served,
        "embeddings_and_lm_head_bytes": embeddings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "w4a16-weight-bytes-cpu.json")
    args = parser.parse_args()
    import transformers

    record = {"environment": {"python": platform.python_version(), "torch": torch.__version__,
                              "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d")},
              "exclude": list(EXCLUDE), "models": {}}
    for name, overrides in MODELS.items():
        with tempfile.TemporaryDirectory(prefix="w4a16-bytes-") as tmp:
            folder = write_nemotron_h(Path(tmp) / "model", **overrides)
            _write_nvfp4_config(folder)
            row = count(folder)
        record["models"][name] = {"overrides": overrides, **row}
        print(f"{name}: served {row['served_bytes'] / 1e9:.2f} GB / bf16 {row['bf16_model_bytes'] / 1e9:.2f} GB = "
              f"{row['served_over_bf16']:.3f}x; quantized linears {row['quantized_linears_over_bf16']:.4f}x their bf16 bytes; "
              f"unquantized tensors {row['unquantized_share_of_served']:.1%} of the served bytes", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
