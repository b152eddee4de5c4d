"""What a checkpoint-coverage check costs next to the meta build it checks, for the largest published MoE layouts.

Writes the tensor index of a checkpoint without any weight -- header-only safetensors shards (8-byte length +
JSON header, no data) and ``model.safetensors.index.json``, laid out as the published checkpoint is -- then, on
the meta tree of the same config (plain transformers ``from_config`` under ``torch.device("meta")``; with the
fine-grained FP8 quantizer prepared on it as ``from_pretrained`` does for a pre-quantized checkpoint), times:

* ``checkpoint_coverage(meta, folder)``: read every shard header and the index, map them with the load's rules,
  run each converted group on meta tensors, build the report (target: <= 1 s on the 2-core CI machine);
* its two phases: reading the index, and mapping + judging it;
* the warm meta build itself (``from_config`` + quantizer preparation), for the ratio.

Layouts (the published ``config.json`` values; tensor names as in the published index):

* ``deepseek_v3``: deepseek-ai/DeepSeek-V3 (671B): 61 layers (3 dense), 256 routed experts, FP8 weights with a
  ``weight_scale_inv`` per linear weight, plus the multi-token-prediction layer 61 the model class ignores on load;
* ``kimi_k2``: the same architecture at 1.03T parameters (moonshotai/Kimi-K2's dimensions: 384 experts, 1 dense
  layer, 64 heads, 163,840 vocabulary), the 100k+-tensor case;
* ``deepseek_v3_unquantized_tree``: the DeepSeek-V3 index against a tree built without the quantizer -- what
  a plain meta build sees: every scale is unconsumed and every FP8 weight a dtype mismatch (the report is long).

Run: ``python benchmarks/coverage.py [--repeat 7] [--json benchmarks/results/coverage-cpu.json]``.
Medians (and the best) of warm rounds, wall and process CPU time; build and check interleaved on the same tree.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

# run as a script, this folder is sys.path[0]; sibling benchmark files must not shadow real packages
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

os.environ.setdefault("HYBRIDLOAD_DISABLE", "1")  # measure against plain transformers builds
os.environ.setdefault("HF_HUB_OFFLINE", "1")

FP8 = {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3", "weight_block_size": [128, 128]}
DEEPSEEK_V3 = dict(
    model_type="deepseek_v3", vocab_size=129280, hidden_size=7168, intermediate_size=18432,
    moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128,
    n_shared_experts=1, n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536,
    qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8, topk_group=4, num_experts_per_tok=8,
    first_k_dense_replace=3, norm_topk_prob=True, max_position_embeddings=163840, rms_norm_eps=1e-6,
    tie_word_embeddings=False, dtype="bfloat16", num_nextn_predict_layers=1,
)
KIMI_K2 = dict(DEEPSEEK_V3, vocab_size=163840, num_attention_heads=64, num_key_value_heads=64,
               n_routed_experts=384, first_k_dense_replace=1, n_group=1, topk_group=1, routed_scaling_factor=2.827)
SHARDS = {"deepseek_v3": 163, "kimi_k2": 62}
_BYTES = {"BF16": 2, "F32": 4, "F8_E4M3": 1}


def published_layout(spec: dict) -> Iterator[tuple[str, str, tuple[int, ...]]]:
    """(key, safetensors dtype, shape) of every tensor of the published FP8 checkpoint of this architecture."""
    hidden, layers = spec["hidden_size"], spec["num_hidden_layers"]
    heads, experts = spec["num_attention_heads"], spec["n_routed_experts"]
    q_rank, kv_rank, rope = spec["q_lora_rank"], spec["kv_lora_rank"], spec["qk_rope_head_dim"]
    qk_head = spec["qk_nope_head_dim"] + rope

    def linear(name: str, out_features: int, in_features: int) -> Iterator[tuple[str, str, tuple[int, ...]]]:
        yield f"{name}.weight", "F8_E4M3", (out_features, in_features)
        yield f"{name}.weight_scale_inv", "F32", (-(-out_features // 128), -(-in_features // 128))

    def mlp(prefix: str, inner: int) -> Iterator[tuple[str, str, tuple[int, ...]]]:
        yield from linear(f"{prefix}.gate_proj", inner, hidden)
        yield from linear(f"{prefix}.up_proj", inner, hidden)
        yield from linear(f"{prefix}.down_proj", hidden, inner)

    yield "model.embed_tokens.weight", "BF16", (spec["vocab_size"], hidden)
    for layer in range(layers + spec["num_nextn_predict_layers"]):
        p = f"model.layers.{layer}"
        yield f"{p}.input_layernorm.weight", "BF16", (hidden,)
        yield f"{p}.post_attention_layernorm.weight", "BF16", (hidden,)
        yield from linear(f"{p}.self_attn.q_a_proj", q_rank, hidden)
        yield f"{p}.self_attn.q_a_layernorm.weight", "BF16", (q_rank,)
        yield from linear(f"{p}.self_attn.q_b_proj", heads * qk_head, q_rank)
        yield from linear(f"{p}.self_attn.kv_a_proj_with_mqa", kv_rank + rope, hidden)
        yield f"{p}.self_attn.kv_a_layernorm.weight", "BF16", (kv_rank,)
        yield from linear(f"{p}.self_attn.kv_b_proj", heads * (spec["qk_nope_head_dim"] + spec["v_head_dim"]), kv_rank)
        yield from linear(f"{p}.self_attn.o_proj", hidden, heads * spec["v_head_dim"])
        if layer < spec["first_k_dense_replace"]:
            yield from mlp(f"{p}.mlp", spec["intermediate_size"])
            continue
        yield f"{p}.mlp.gate.weight", "BF16", (experts, hidden)
        yield f"{p}.mlp.gate.e_score_correction_bias", "F32", (experts,)
        for expert in range(experts):
            yield from mlp(f"{p}.mlp.experts.{expert}", spec["moe_intermediate_size"])
        yield from mlp(f"{p}.mlp.shared_experts", spec["moe_intermediate_size"] * spec["n_shared_experts"])
        if layer >= layers:  # the multi-token-prediction layer's own parts
            yield f"{p}.embed_tokens.weight", "BF16", (spec["vocab_size"], hidden)
            yield f"{p}.enorm.weight", "BF16", (hidden,)
            yield f"{p}.hnorm.weight", "BF16", (hidden,)
            yield f"{p}.eh_proj.weight", "BF16", (hidden, 2 * hidden)
            yield f"{p}.shared_head.norm.weight", "BF16", (hidden,)
            yield f"{p}.shared_head.head.weight", "BF16", (spec["vocab_size"], hidden)
    yield "model.norm.weight", "BF16", (hidden,)
    yield "lm_head.weight", "BF16", (spec["vocab_size"], hidden)


def write_header_only_checkpoint(folder: Path, layout: list[tuple[str, str, tuple[int, ...]]], shards: int) -> int:
    """Safetensors shards holding only their headers (offsets as if the data followed), and the index."""
    per_shard = -(-len(layout) // shards)
    weight_map, total = {}, 0
    for number in range(shards):
        name = f"model-{number + 1:05d}-of-{shards:05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for key, dtype, shape in layout[number * per_shard:(number + 1) * per_shard]:
            size = _BYTES[dtype]
            for dim in shape:
                size *= dim
            header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
            weight_map[key] = name
        total += offset
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        (folder / name).write_bytes(struct.pack("<Q", len(raw)) + raw)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def build_tree(spec: dict, quantized: bool) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.quantizers import AutoHfQuantizer

    values = dict(spec)
    values.pop("num_nextn_predict_layers", None)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    if quantized:
        config.quantization_config = dict(FP8)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    if quantized:  # what from_pretrained does with a pre-quantized checkpoint before loading weights
        quantizer = AutoHfQuantizer.from_config(config.quantization_config, pre_quantized=True)
        with _fp8_experts_class_restored():
            quantizer.preprocess_model(model, dtype=torch.bfloat16)
        model.hf_quantizer = quantizer
    return model


@contextlib.contextmanager
def _fp8_experts_class_restored() -> Iterator[None]:
    """transformers 5.25's FP8 preparation wraps ``FP8Experts.__init__``/``forward`` in place once per replaced
    experts module, so a process that prepares many trees nests a thousand wrappers and hits the recursion
    limit; the benchmark builds dozens, and puts the class back after each."""
    try:
        from transformers.integrations.finegrained_fp8 import FP8Experts
    except ImportError:
        yield
        return
    saved = {name: FP8Experts.__dict__[name] for name in ("__init__", "forward") if name in FP8Experts.__dict__}
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(FP8Experts, name, value)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run(name: str, spec: dict, quantized: bool, repeat: int, workdir: Path) -> dict:
    from hybridload.serve.coverage import checkpoint_coverage, local_index
    from hybridload.serve.coverage.mapping import assess

    layout = list(published_layout(spec))
    folder = workdir / name.split("_unquantized")[0]
    if not folder.exists():
        folder.mkdir()
        write_header_only_checkpoint(folder, layout, SHARDS[name.split("_unquantized")[0]])
    model = build_tree(spec, quantized)
    build_wall, build_cpu, check_wall, check_cpu, read_cpu, map_cpu = [], [], [], [], [], []
    report = None
    for _ in range(repeat):
        wall, cpu, model = timed(lambda: build_tree(spec, quantized))
        build_wall.append(wall)
        build_cpu.append(cpu)
        wall, cpu, report = timed(lambda: checkpoint_coverage(model, folder))
        check_wall.append(wall)
        check_cpu.append(cpu)
        _, cpu, index = timed(lambda: local_index(folder))
        read_cpu.append(cpu)
        _, cpu, _ = timed(lambda: assess(model, index))
        map_cpu.append(cpu)
    assert report is not None
    read_with_collector = _read_with_collector_on(folder, repeat)
    med = statistics.median
    result = {
        "layout": name,
        "quantizer_on_tree": quantized,
        "checkpoint_tensors": report.checkpoint_tensors,
        "shards": len({f for f in json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()}),
        "model_tensors": report.model_tensors,
        "ok": report.ok,
        "unconsumed": len(report.unconsumed),
        "unfilled": len(report.unfilled),
        "mismatches": len(report.mismatches),
        "allowed": len(report.allowed),
        "rules": len(report.rules),
        "check_s": med(check_wall),
        "check_cpu_s": med(check_cpu),
        "check_best_s": min(check_wall),
        "check_cpu_best_s": min(check_cpu),
        "read_index_cpu_s": med(read_cpu),
        "read_index_cpu_s_collector_on": read_with_collector,
        "map_cpu_s": med(map_cpu),
        "build_s": med(build_wall),
        "build_cpu_s": med(build_cpu),
        "check_over_build": med(check_wall) / med(build_wall),
        "check_over_build_cpu": med(check_cpu) / med(build_cpu),
        "rounds": repeat,
    }
    print(
        f"{name:<30} {result['checkpoint_tensors']:>7,} tensors/{result['shards']:>3} shards -> {result['model_tensors']:>5,} "
        f"model tensors  ok={report.ok!s:<5}  check {result['check_s'] * 1e3:7.1f} ms wall (best "
        f"{result['check_best_s'] * 1e3:6.1f}) "
        f"({result['check_cpu_s'] * 1e3:6.1f} ms CPU: read {result['read_index_cpu_s'] * 1e3:5.1f} + map "
        f"{result['map_cpu_s'] * 1e3:6.1f})  build {result['build_s'] * 1e3:7.1f} ms  check/build "
        f"{result['check_over_build']:.2f} (CPU {result['check_over_build_cpu']:.2f}); read with the collector on "
        f"{result['read_index_cpu_s_collector_on'] * 1e3:.1f} ms CPU",
        flush=True,
    )
    return result


def _read_with_collector_on(folder: Path, repeat: int) -> float:
    """The index read with the cyclic collector left running (what the pause in hybridload.serve.coverage saves)."""
    from hybridload.serve.coverage import index as index_module

    paused = index_module.collector_paused
    index_module.collector_paused = contextlib.nullcontext
    try:
        return statistics.median(timed(lambda: index_module.local_index(folder))[1] for _ in range(max(3, repeat // 3)))
    finally:
        index_module.collector_paused = paused


def environment() -> dict:
    import huggingface_hub
    import torch
    import transformers

    import hybridload

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    cpu_model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu_model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "processor": cpu_model or platform.processor() or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "hybridload": hybridload.__version__,
        "load_average_at_start": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--only", nargs="*", help="layout names to run")
    args = parser.parse_args()
    env = environment()
    print(f"torch {env['torch']}, transformers {env['transformers']}, {env['cpus']} CPUs, load {env['load_average_at_start']}")
    cases = [
        ("deepseek_v3", DEEPSEEK_V3, True),
        ("kimi_k2", KIMI_K2, True),
        ("deepseek_v3_unquantized_tree", DEEPSEEK_V3, False),
    ]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec, quantized in cases:
            if args.only and name not in args.only:
                continue
            results.append(run(name, spec, quantized, args.repeat, Path(tmp)))
    env["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.json:
        document = {"benchmark": "benchmarks/coverage.py", "command": " ".join(["python", *sys.argv]),
                    "environment": env, "results": results}
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
