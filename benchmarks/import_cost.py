"""What ``import hybridload`` costs, against importing torch and transformers, each in a fresh interpreter.

Run: python benchmarks/import_cost.py [--repeats 5]. Prints medians and ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

SNIPPET = (
    "import sys, time; t = time.perf_counter(); import {mod}; dt = time.perf_counter() - t; "
    "print(dt, int('torch' in sys.modules), int('transformers' in sys.modules))"
)


def measure(module: str, repeats: int) -> tuple[float, bool, bool]:
    times, torch_loaded, tf_loaded = [], False, False
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", SNIPPET.format(mod=module)], capture_output=True, text=True, check=True)
        dt, t_flag, tf_flag = out.stdout.split()
        times.append(float(dt))
        torch_loaded, tf_loaded = bool(int(t_flag)), bool(int(tf_flag))
    return statistics.median(times), torch_loaded, tf_loaded


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = {m: measure(m, args.repeats) for m in ("hybridload", "torch", "transformers")}
    base = rows["hybridload"][0]
    print(f"{'import':<14}{'median s':>10}{'x hybridload':>14}  loads torch / transformers")
    for module, (dt, t, tf) in rows.items():
        print(f"{module:<14}{dt:>10.3f}{dt / base:>14.1f}  {t} / {tf}")


if __name__ == "__main__":
    main()
