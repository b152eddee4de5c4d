"""Meta builds of very large models: hybridload's fast build against plain ``from_config`` on meta, same run.

Models (full published widths; remote code written locally by ``remote_standins.py``, no Hub access):

* ``deepseek_v3_remote`` — DeepSeek-V3/R1 remote-code pattern, 256 per-expert ``nn.Linear`` MLPs per MoE layer
  (75,457 modules, 671B parameters);
* ``kimi_linear_remote`` — Kimi-Linear-48B-A3B-style hybrid (KDA layers from fla classes, MLA, per-expert MoE);
  fla is stood in for by hybridload's kernel shim (it is not installed here);
* ``nemotron_h_remote`` — hybridload's bundled Nemotron-H-style remote code at Nemotron-3-Nano-30B-A3B widths;
  mamba_ssm is stood in for by the kernel shim;
* native transformers classes: ``deepseek_v3`` (671B, fused experts), ``qwen3_moe`` (Qwen3-235B-A22B),
  ``llama`` (Llama-3.1-405B), ``nemotron_h`` (Nemotron-3-Nano-30B-A3B widths).

Methods, each ``AutoModelForCausalLM.from_config(config, trust_remote_code=True)``:

* ``plain`` — hybridload's integration uninstalled, under ``torch.device("meta")`` (for the two hybrids, whose
  kernels are missing here, inside ``kernel_shim()`` too: what hybridload did before this change);
* ``from_config`` — ``import hybridload`` installed, under the user's own ``torch.device("meta")``: the build
  session every entry point (``load_meta``, nnsight, the CLI) builds in, with its ``fast_init`` layer;
* ``meta_device_scope`` — installed, under ``hybridload.build.fast_build.meta_device_scope()`` (a build
  written by hand; it joins the same session).

Rounds are interleaved (the order rotates each round) and start from a collected heap. Reported per method:
median wall time, median process CPU time (less sensitive to other jobs on a shared machine), and median
wall time of the build plus one full ``gc.collect()`` right after it (so the collections the fast build
defers are charged to it), and the CPU time of ``hybridload.signature(model).digest`` of the tree just built
(median, the median per-round share of the build's CPU time, and the best signing over the best build). Ratios are to ``plain`` of the same run.
The trees of every method are compared (signature digest).

``--routes`` also times the ways of putting a build on meta (hybridload uninstalled), with and without
``fast_build()``: ``torch.device("meta")``, ``torch.set_default_device("meta")``, nnsight's ``MetaDevice``
and accelerate's ``init_empty_weights()``.

Run: ``python benchmarks/meta_build.py [--repeat 5] [--models a,b] [--routes] [--json FILE]``.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
# run as a script, this folder is sys.path[0]; sibling benchmark files must not shadow real packages
# (transformers probes ``import kernels``), so import the two helpers by path instead
if sys.path and os.path.abspath(sys.path[0] or ".") == str(HERE):
    sys.path.pop(0)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _load(name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"hl_bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


standins = _load("remote_standins")
published = _load("published_configs")

REMOTE = {
    "deepseek_v3_remote": (standins.write_deepseek_v3, False),
    "kimi_linear_remote": (standins.write_kimi_linear, True),
    "nemotron_h_remote": (standins.write_nemotron_h, True),
}
NATIVE = {
    "deepseek_v3": published.DEEPSEEK_V3,
    "qwen3_moe": published.QWEN3_235B,
    "llama": published.LLAMA_405B,
    "nemotron_h": published.NEMOTRON_H_30B,
}
METHODS = ("plain", "from_config", "meta_device_scope")


def _config(name: str, root: Path) -> tuple[Any, bool]:
    from transformers import AutoConfig

    if name in REMOTE:
        writer, needs_shim = REMOTE[name]
        folder = writer(root / name)
        return AutoConfig.from_pretrained(folder, trust_remote_code=True), needs_shim
    values = dict(NATIVE[name])
    return AutoConfig.for_model(values.pop("model_type"), **values), False


@contextlib.contextmanager
def _installed(on: bool) -> Iterator[None]:
    import hybridload

    if on:
        hybridload.install()
        yield
        return
    hybridload.uninstall()
    try:
        yield
    finally:
        hybridload.install()


def _builder(method: str, config: Any, needs_shim: bool) -> Callable[[], Any]:
    import torch
    from transformers import AutoModelForCausalLM

    import hybridload
    from hybridload.build.fast_build import meta_device_scope

    def build() -> Any:
        if method == "plain":
            with _installed(False), contextlib.ExitStack() as stack:
                if needs_shim:
                    stack.enter_context(hybridload.kernel_shim())
                stack.enter_context(torch.device("meta"))
                return AutoModelForCausalLM.from_config(config, trust_remote_code=True)
        if method == "from_config":
            with _installed(True), torch.device("meta"):
                return AutoModelForCausalLM.from_config(config, trust_remote_code=True)
        with _installed(True), meta_device_scope():
            return AutoModelForCausalLM.from_config(config, trust_remote_code=True)

    return build


def _route_builder(route: str, fast: bool, config: Any) -> Callable[[], Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from hybridload.build.fast_build import fast_build

    @contextlib.contextmanager
    def default_device() -> Iterator[None]:
        torch.set_default_device("meta")
        try:
            yield
        finally:
            torch.set_default_device(None)

    def enter(stack: contextlib.ExitStack) -> None:
        if route == "torch.device":
            stack.enter_context(torch.device("meta"))
        elif route == "set_default_device":
            stack.enter_context(default_device())
        elif route == "nnsight MetaDevice":
            from nnsight.modeling.mixins.meta import MetaDevice

            stack.enter_context(MetaDevice())
        else:
            from accelerate import init_empty_weights

            stack.enter_context(init_empty_weights())

    def build() -> Any:
        with _installed(False), contextlib.ExitStack() as stack:
            enter(stack)
            if fast:
                stack.enter_context(fast_build())
            return AutoModelForCausalLM.from_config(config, trust_remote_code=True)

    return build


def _measure(builders: dict[str, Callable[[], Any]], repeat: int) -> dict[str, dict[str, Any]]:
    """Interleaved rounds; every round starts from a collected heap (as a fresh process would)."""
    import hybridload

    wall: dict[str, list[float]] = {k: [] for k in builders}
    cpu: dict[str, list[float]] = {k: [] for k in builders}
    with_collect: dict[str, list[float]] = {k: [] for k in builders}
    sign: dict[str, list[float]] = {k: [] for k in builders}
    sign_cpu: dict[str, list[float]] = {k: [] for k in builders}
    digests: dict[str, str] = {}
    modules: dict[str, int] = {}
    names = list(builders)
    for name in names:  # warm-up: imports, remote-module execution, lazy caches
        model = builders[name]()
        digests[name] = hybridload.signature(model).digest
        modules[name] = sum(1 for _ in model.modules())
        del model
    for round_index in range(repeat):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in order:
            gc.collect()
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            model = builders[name]()
            end_wall, end_cpu = time.perf_counter(), time.process_time()
            hybridload.signature(model).digest
            signed_wall, signed_cpu = time.perf_counter(), time.process_time()
            gc.collect()
            collected = time.perf_counter()
            wall[name].append(end_wall - start_wall)
            cpu[name].append(end_cpu - start_cpu)
            sign[name].append(signed_wall - end_wall)
            sign_cpu[name].append(signed_cpu - end_cpu)
            with_collect[name].append((end_wall - start_wall) + (collected - signed_wall))
            del model
    gc.collect()
    return {
        name: {
            "wall_s": statistics.median(wall[name]),
            "cpu_s": statistics.median(cpu[name]),
            "with_collect_s": statistics.median(with_collect[name]),
            "sign_s": statistics.median(sign[name]),
            "sign_cpu_s": statistics.median(sign_cpu[name]),
            "sign_over_build_cpu": statistics.median(s / b for s, b in zip(sign_cpu[name], cpu[name])),
            "sign_over_build_best": min(sign_cpu[name]) / min(cpu[name]),
            "wall_all_s": [round(x, 4) for x in wall[name]],
            "digest": digests[name],
            "modules": modules[name],
        }
        for name in names
    }


def _versions() -> dict[str, str]:
    import accelerate
    import torch
    import transformers

    import hybridload

    versions = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "accelerate": accelerate.__version__, "hybridload": hybridload.__version__,
    }
    try:
        import nnsight

        versions["nnsight"] = nnsight.__version__
    except Exception:  # noqa: BLE001 - optional
        pass
    return versions


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform(), "load_average": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", default=",".join([*REMOTE, *NATIVE]))
    parser.add_argument("--routes", action="store_true", help="also time the four meta routes +/- fast_build")
    parser.add_argument("--route-models", default="deepseek_v3_remote,deepseek_v3")
    parser.add_argument("--route-repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    import hybridload  # noqa: F401 - installs the integration, as users do

    record: dict[str, Any] = {
        "command": "python benchmarks/meta_build.py " + " ".join(sys.argv[1:]),
        "machine": _machine(), "versions": _versions(), "models": {}, "routes": {},
    }
    print(f"{record['machine']['cpus']} CPUs ({record['machine']['cpu']}), load {record['machine']['load_average']}")
    print(", ".join(f"{k} {v}" for k, v in record["versions"].items()))
    header = (f"{'model':<20} {'modules':>7} {'method':<18} {'wall s':>7} {'x plain':>7} {'cpu s':>6} {'x plain':>7} "
              f"{'+gc s':>6} {'x plain':>7} {'sign ms':>7} {'sign/build':>10} {'(best)':>6}  tree")
    with tempfile.TemporaryDirectory(prefix="hl-meta-build-") as tmp:
        root = Path(tmp)
        print(header)
        for name in args.models.split(","):
            config, needs_shim = _config(name, root)
            results = _measure({m: _builder(m, config, needs_shim) for m in METHODS}, args.repeat)
            record["models"][name] = {"kernel_shim_in_plain": needs_shim, **results}
            base = results["plain"]
            for method, r in results.items():
                same = "same" if r["digest"] == base["digest"] else "DIFFERENT"
                print(f"{name:<20} {r['modules']:>7} {method:<18} {r['wall_s']:>7.3f} {r['wall_s'] / base['wall_s']:>7.2f} "
                      f"{r['cpu_s']:>6.3f} {r['cpu_s'] / base['cpu_s']:>7.2f} {r['with_collect_s']:>6.3f} "
                      f"{r['with_collect_s'] / base['with_collect_s']:>7.2f} {r['sign_cpu_s'] * 1e3:>7.1f} "
                      f"{r['sign_over_build_cpu']:>10.1%} {r['sign_over_build_best']:>6.1%}  {same}", flush=True)
        if args.routes:
            print(f"\n{'routes (uninstalled)':<20} {'route':<20} {'fast':<5} {'wall s':>7} {'cpu s':>6} {'+gc s':>6}  tree")
            for name in args.route_models.split(","):
                config, _ = _config(name, root)
                builders = {
                    f"{route}|{fast}": _route_builder(route, fast, config)
                    for route in ("torch.device", "set_default_device", "nnsight MetaDevice", "init_empty_weights")
                    for fast in (False, True)
                }
                results = _measure(builders, args.route_repeat)
                record["routes"][name] = results
                for key, r in results.items():
                    route, fast = key.split("|")
                    twin = results[f"{route}|False"]
                    same = "same" if r["digest"] == twin["digest"] else "DIFFERENT"
                    print(f"{name:<20} {route:<20} {fast:<5} {r['wall_s']:>7.3f} {r['cpu_s']:>6.3f} "
                          f"{r['with_collect_s']:>6.3f}  {same}", flush=True)
    record["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
