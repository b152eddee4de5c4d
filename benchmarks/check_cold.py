"""``hybridload check`` in a fresh process against a plain transformers process that builds the same meta tree.

For each model, in interleaved rounds (a new interpreter every time, wall time from spawn to exit):

* ``check`` — ``hybridload check FOLDER [--trust-remote-code] --json``: resolve the plan (hash the files),
  load the config, meta build (kernel shim, compat, fast build), sign, layer kinds, JSON summary;
* ``plain`` — ``python -c`` importing torch and transformers, ``AutoConfig.from_pretrained(FOLDER)`` and
  ``AutoModelForCausalLM.from_config(config)`` under ``torch.device("meta")``; hybridload is not imported.
  For the bundled example, whose kernels are missing here, plain transformers cannot build it: its row
  uses ``hybridload.kernel_shim()`` around that build (``import hybridload`` with ``HYBRIDLOAD_DISABLE=1``).

Models: hybridload's bundled example (``hybridload check`` with no argument), a Qwen3-235B-A22B config (native
class), and the DeepSeek-V3/R1-style remote code of ``remote_standins.py`` at full width.

Run: ``python benchmarks/check_cold.py [--repeat 5] [--json FILE]``. Prints medians of wall time and of the
child's CPU time (user + system, less sensitive to other jobs on a shared machine) and the ratios check/plain.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if sys.path and os.path.abspath(sys.path[0] or ".") == str(HERE):
    sys.path.pop(0)

PLAIN = """
import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM
folder, trust, shim = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
if shim:
    import hybridload
    window = hybridload.kernel_shim()
else:
    import contextlib
    window = contextlib.nullcontext()
with window, torch.device("meta"):
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust)
print(sum(1 for _ in model.modules()))
"""


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"hl_bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _models(root: Path) -> dict[str, tuple[str | None, bool, bool]]:
    """name -> (folder or None for the bundled example, trust_remote_code, plain needs the shim)."""
    from transformers import AutoConfig

    import hybridload.examples

    published = _load("published_configs")
    standins = _load("remote_standins")
    values = dict(published.QWEN3_235B)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    config.architectures = ["Qwen3MoeForCausalLM"]
    config.save_pretrained(root / "qwen3_moe")
    standins.write_deepseek_v3(root / "deepseek_v3_remote")
    return {
        "bundled example (hybrid_tiny)": (None, True, True),
        "qwen3_moe (235B, native)": (str(root / "qwen3_moe"), False, False),
        "deepseek_v3_remote (671B)": (str(root / "deepseek_v3_remote"), True, False),
        "_bundled_path": (str(hybridload.examples.path("hybrid_tiny")), True, True),
    }


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child: user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("HYBRIDLOAD_DISABLE", None)
    cli = str(Path(sys.executable).with_name("hybridload"))
    record: dict[str, Any] = {"command": "python benchmarks/check_cold.py " + " ".join(sys.argv[1:]),
                              "cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg(),
                              "results": {}}
    with tempfile.TemporaryDirectory(prefix="hl-check-cold-") as tmp:
        models = _models(Path(tmp))
        bundled = models.pop("_bundled_path")[0]
        for name, (folder, trust, shim) in models.items():
            check = [cli, "check", "--json"] if folder is None else [cli, "check", folder, "--json"]
            if folder is not None and trust:
                check.insert(3, "--trust-remote-code")
            plain = [sys.executable, "-c", PLAIN, folder or bundled, "1" if trust else "0", "1" if shim else "0"]
            plain_env = {**env, "HYBRIDLOAD_DISABLE": "1"} if shim else env
            _run(check, env), _run(plain, plain_env)  # warm the page cache and the remote-code module cache
            wall: dict[str, list[float]] = {"check": [], "plain": []}
            cpu: dict[str, list[float]] = {"check": [], "plain": []}
            for index in range(args.repeat):
                pair = [("check", check, env), ("plain", plain, plain_env)]
                for label, command, run_env in (pair if index % 2 == 0 else pair[::-1]):
                    wall_s, cpu_s = _run(command, run_env)
                    wall[label].append(wall_s)
                    cpu[label].append(cpu_s)
            med = {f"{kind}_{label}": statistics.median(values[label])
                   for kind, values in (("wall", wall), ("cpu", cpu)) for label in ("check", "plain")}
            record["results"][name] = {**med, "wall_ratio": med["wall_check"] / med["wall_plain"],
                                       "cpu_ratio": med["cpu_check"] / med["cpu_plain"],
                                       "plain_uses_kernel_shim": shim, "wall_all": wall, "cpu_all": cpu}
            print(f"{name:<32} wall: check {med['wall_check']:6.2f} s plain {med['wall_plain']:6.2f} s "
                  f"ratio {med['wall_check'] / med['wall_plain']:5.2f}   cpu: check {med['cpu_check']:6.2f} s "
                  f"plain {med['cpu_plain']:6.2f} s ratio {med['cpu_check'] / med['cpu_plain']:5.2f}"
                  f"{'  (plain: + kernel shim)' if shim else ''}", flush=True)
    record["load_average_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
