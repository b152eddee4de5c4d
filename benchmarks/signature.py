"""How much a tree signature costs next to the meta build it describes, for very large published architectures.

Builds meta trees of a DeepSeek-V3-like (671B) and a Qwen3-235B-A22B-like config from their real
dimensions with plain transformers (``AutoModelForCausalLM.from_config`` under ``torch.device("meta")``,
hybridload's integration disabled), then times, on the same tree in the same run:

* ``hybridload.signature(model)`` including its digest (target: under 10% of the warm meta build), as wall
  time and as process CPU time (which other jobs on a shared machine inflate less),
* a naive canonical signature (three ``named_*`` passes, sorted JSON, sha256) for reference,
* ``to_json``/``from_json`` and ``compare`` of two signatures that differ in one parameter.

Run: ``python benchmarks/signature.py [--repeat 21]``. Timings are medians of warm runs; build, sign and
naive are measured in interleaved rounds on the same trees.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

# run as a script, this folder is sys.path[0]; sibling benchmark files must not shadow real packages
# (transformers probes ``import kernels``, and benchmarks/triton_kernels.py exists)
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

os.environ.setdefault("HYBRIDLOAD_DISABLE", "1")  # measure against plain transformers builds
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# config.json values of the published checkpoints (deepseek-ai/DeepSeek-V3, Qwen/Qwen3-235B-A22B)
DEEPSEEK_V3 = dict(
    model_type="deepseek_v3", vocab_size=129280, hidden_size=7168, intermediate_size=18432,
    moe_intermediate_size=2048, num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=128,
    n_shared_experts=1, n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536,
    qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8, topk_group=4, num_experts_per_tok=8,
    first_k_dense_replace=3, norm_topk_prob=True, max_position_embeddings=163840, rms_norm_eps=1e-6,
    tie_word_embeddings=False, dtype="bfloat16",
)
QWEN3_235B = dict(
    model_type="qwen3_moe", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
    moe_intermediate_size=1536, num_hidden_layers=94, num_attention_heads=64, num_key_value_heads=4,
    head_dim=128, num_experts=128, num_experts_per_tok=8, decoder_sparse_step=1, mlp_only_layers=[],
    max_position_embeddings=40960, rope_theta=1e6, rms_norm_eps=1e-6, norm_topk_prob=True,
    tie_word_embeddings=False, dtype="bfloat16",
)


def median_seconds(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_signature(model: Any) -> str:
    """The naive baseline: canonical sorted JSON of the named_* passes, sha256."""
    tree = {
        "modules": {name: f"{type(m).__module__}.{type(m).__qualname__}" for name, m in model.named_modules()},
        "parameters": {name: [list(p.shape), str(p.dtype)] for name, p in model.named_parameters()},
        "buffers": {name: [list(b.shape), str(b.dtype)] for name, b in model.named_buffers()},
    }
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()


def run(spec: dict, repeat: int, collect: bool = True) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    import hybridload

    values = dict(spec)
    config = AutoConfig.for_model(values.pop("model_type"), **values)

    def build() -> Any:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)

    build()  # cold: imports, lazy init
    # interleaved rounds, so that load from other processes hits build and signing alike; by default each round
    # starts from a collected heap, as a fresh process would (the last round's model is cyclic garbage
    # otherwise, and the new tree's objects are scattered between its remains: --keep-garbage measures that)
    wall: dict[str, list[float]] = {"build": [], "sign": [], "naive": []}
    cpu: dict[str, list[float]] = {"build": [], "sign": [], "naive": []}
    model = None

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall[name].append(time.perf_counter() - start_wall)
        cpu[name].append(time.process_time() - start_cpu)
        return result

    for _ in range(repeat):
        del model
        if collect:
            gc.collect()
        model = timed("build", build)
        timed("sign", lambda: hybridload.signature(model).digest)
        timed("naive", lambda: naive_signature(model))
    build_s, sign_s, naive_s = (statistics.median(wall[name]) for name in ("build", "sign", "naive"))
    build_cpu, sign_cpu = statistics.median(cpu["build"]), statistics.median(cpu["sign"])
    sig = hybridload.signature(model)
    text = sig.to_json()
    to_json_s = median_seconds(sig.to_json, repeat)
    from_json_s = median_seconds(lambda: hybridload.TreeSignature.from_json(text), repeat)
    layer = model.model.layers[len(model.model.layers) // 2]
    layer.input_layernorm.weight = torch.nn.Parameter(torch.empty(config.hidden_size + 1, device="meta"))
    changed = hybridload.signature(model)
    compare_s = median_seconds(lambda: hybridload.compare(sig, changed), repeat)
    return {
        "name": spec["model_type"],
        "modules": len(sig.modules),
        "parameters": len(sig.parameters),
        "elements": sig.numel(),
        "json_kib": len(text.encode()) / 1024,
        "build_s": build_s,
        "sign_s": sign_s,
        "naive_s": naive_s,
        "cpu_ratio": sign_cpu / build_cpu,
        "to_json_s": to_json_s,
        "from_json_s": from_json_s,
        "compare_s": compare_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=21, help="timed repetitions per measurement (median)")
    parser.add_argument("--keep-garbage", action="store_true",
                        help="do not collect the heap between rounds (a long-lived process that built models before)")
    args = parser.parse_args()
    import torch
    import transformers

    heap = "heap kept between rounds" if args.keep_garbage else "heap collected before each round"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {os.cpu_count()} CPUs, {heap}")
    header = (f"{'architecture':<13} {'modules':>7} {'params':>6} {'elements':>9} {'build':>9} {'sign':>8} "
              f"{'sign/build':>10} {'(cpu time)':>10} {'naive':>8} {'naive/build':>11} {'to_json':>8} "
              f"{'from_json':>9} {'compare':>8}")
    print(header)
    for spec in (DEEPSEEK_V3, QWEN3_235B):
        r = run(spec, args.repeat, collect=not args.keep_garbage)
        print(
            f"{r['name']:<13} {r['modules']:>7} {r['parameters']:>6} {r['elements'] / 1e9:>8.1f}B "
            f"{r['build_s'] * 1e3:>7.1f}ms {r['sign_s'] * 1e3:>6.2f}ms {r['sign_s'] / r['build_s']:>10.1%} "
            f"{r['cpu_ratio']:>10.1%} "
            f"{r['naive_s'] * 1e3:>6.2f}ms {r['naive_s'] / r['build_s']:>11.1%} {r['to_json_s'] * 1e3:>6.2f}ms "
            f"{r['from_json_s'] * 1e3:>7.2f}ms {r['compare_s'] * 1e3:>6.2f}ms"
        )


if __name__ == "__main__":
    main()
