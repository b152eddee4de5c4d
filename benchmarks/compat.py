"""Benchmark: what the remote-code compatibility layer costs a meta build, against plain transformers.

Builds the same models on the meta device (``AutoModelForCausalLM.from_config`` under ``torch.device("meta")``)
in one process, alternating methods, and prints the median time of each with its ratio to the plain
transformers build measured in the same run. Not run in CI.

    python benchmarks/compat.py                  # defaults: 12 layers, hidden 512, 7 repeats
    python benchmarks/compat.py --layers 32 --hidden 1024 --repeats 5

Models:
  native   a Llama (transformers' own code)
  remote   a 4.x-style remote causal LM that needs nothing from the layer (tests/compat "inert" pattern)
  scalars  the "item_on_meta" remote pattern (drop-path .item() + xIELU buffers): only builds with cpu_scalars

Methods:
  plain        hybridload's integration uninstalled (scalars: raises, reported as "fails")
  compat       the same build inside ``compat_window()`` (the layer alone)
  cpu_scalars  inside ``compat_window(cpu_scalars=True)`` (the TorchFunctionMode shadows small tensors)
  integrated   ``import hybridload`` with the compat layer registered: from_config runs in the kernel shim
               plus the compat layer (what a user gets)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/triton_kernels.py would shadow the `kernels` package transformers probes for
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT / "tests" / "compat"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import torch
    from compat_fixtures import write_compat_model
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    import hybridload
    import hybridload.compat as compat

    compat.register()
    root = Path(tempfile.mkdtemp(prefix="hl-compat-bench-"))
    sizes = dict(hidden_size=args.hidden, num_hidden_layers=args.layers, vocab_size=4096)
    configs = {
        "native": LlamaConfig(
            **sizes, intermediate_size=4 * args.hidden, num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False
        ),
        "remote": AutoConfig.from_pretrained(write_compat_model(root, "inert", **sizes), trust_remote_code=True),
        "scalars": AutoConfig.from_pretrained(
            write_compat_model(root, "item_on_meta", **sizes, drop_path_rate=0.1), trust_remote_code=True
        ),
    }

    def build(config) -> None:
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(config, trust_remote_code=True)

    def timed(method: str, config) -> float | None:
        if method != "integrated":
            hybridload.uninstall()
        try:
            start = time.perf_counter()
            if method == "plain" or method == "integrated":
                build(config)
            else:
                with compat.compat_window(config, cpu_scalars=(method == "cpu_scalars")):
                    build(config)
            return time.perf_counter() - start
        except compat.ValueDependentInitError:
            return None
        except RuntimeError as exc:
            if "meta" in str(exc):
                return None
            raise
        finally:
            if method != "integrated":
                hybridload.install()
                compat.register()

    # the fixed cost of one window (enter + exit, nothing served), against one plain native meta build
    hybridload.uninstall()
    try:
        build(configs["native"])
        start = time.perf_counter()
        build(configs["native"])
        native_plain = time.perf_counter() - start
        for _ in range(10):
            with compat.compat_window():
                pass
        start = time.perf_counter()
        for _ in range(200):
            with compat.compat_window():
                pass
        per_window = (time.perf_counter() - start) / 200
    finally:
        hybridload.install()
        compat.register()
    print(
        f"empty compat window (enter+exit): {per_window * 1e3:.2f} ms = {per_window / native_plain:.3f} x one plain "
        f"native meta build ({native_plain * 1e3:.1f} ms)"
    )

    methods = ("plain", "compat", "cpu_scalars", "integrated")
    print(f"meta build, {args.layers} layers, hidden {args.hidden}, median of {args.repeats} (warm-up excluded)")
    print(f"{'model':8} {'method':12} {'median s':>10} {'x plain':>9}")
    for name, config in configs.items():
        for method in methods:  # warm-up: imports, dynamic-module caches
            timed(method, config)
        samples: dict[str, list[float | None]] = {m: [] for m in methods}
        for _ in range(args.repeats):
            for method in methods:
                samples[method].append(timed(method, config))
        plain = samples["plain"]
        base = statistics.median(plain) if all(t is not None for t in plain) else None
        for method in methods:
            values = samples[method]
            if any(t is None for t in values):
                print(f"{name:8} {method:12} {'fails':>10} {'-':>9}")
                continue
            median = statistics.median(values)  # type: ignore[type-var]
            ratio = f"{median / base:9.2f}" if base else f"{'-':>9}"
            print(f"{name:8} {method:12} {median:10.4f} {ratio}")


if __name__ == "__main__":
    main()
