"""What ``import hybridload`` spends its time on: ``python -X importtime`` in fresh interpreters, medians.

Prints, for ``import hybridload`` as installed (the integration on) and with ``HYBRIDLOAD_DISABLE=1`` (the
package alone):

* the total (wall time of the import statement, measured in the child),
* the modules it imports (hybridload's own and the standard library's), with their median cumulative and
  self times, and for each heavy standard-library module the hybridload module whose import pulled it in.

Run: ``python benchmarks/import_breakdown.py [--repeat 7] [--top 25] [--json FILE]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

SNIPPET = "import time; t = time.perf_counter(); import hybridload; print(time.perf_counter() - t)"


def _one(env: dict[str, str]) -> tuple[float, list[tuple[int, str, int, int]]]:
    """(import seconds, [(depth, module, self_us, cumulative_us)] in -X importtime order)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", SNIPPET], capture_output=True, text=True,
                            env=env, check=True)
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:"):].split("|")
        if len(fields) != 3:
            continue
        self_us, cumulative_us, raw_name = int(fields[0]), int(fields[1]), fields[2]
        depth = (len(raw_name) - len(raw_name.lstrip(" "))) // 2
        rows.append((depth, raw_name.strip(), self_us, cumulative_us))
    return float(result.stdout.strip().splitlines()[-1]), rows


def _parents(rows: list[tuple[int, str, int, int]]) -> dict[str, str]:
    """module -> the nearest hybridload module above it in the import tree (importtime prints children first)."""
    parent: dict[str, str] = {}
    pending: list[tuple[int, str]] = []  # (depth, module) waiting for their parent line
    for depth, name, _self, _cum in rows:
        still = []
        for child_depth, child in pending:
            if child_depth == depth + 1:
                parent[child] = name
            else:
                still.append((child_depth, child))
        pending = still + [(depth, name)]
    owner: dict[str, str] = {}
    for name in parent:
        step, seen = name, set()
        while step in parent and step not in seen:
            seen.add(step)
            step = parent[step]
            if step.startswith("hybridload"):
                owner[name] = step
                break
    return owner


def measure(env: dict[str, str], repeat: int) -> dict[str, Any]:
    totals, self_times, cumulative, owners = [], {}, {}, {}
    for _ in range(repeat):
        total, rows = _one(env)
        totals.append(total)
        for depth, name, self_us, cum_us in rows:
            self_times.setdefault(name, []).append(self_us)
            cumulative.setdefault(name, []).append(cum_us)
        owners.update(_parents(rows))
    modules = {
        name: {"self_ms": statistics.median(self_times[name]) / 1e3,
               "cumulative_ms": statistics.median(cumulative[name]) / 1e3,
               "pulled_in_by": owners.get(name)}
        for name in cumulative
    }
    return {"import_s": statistics.median(totals), "modules": modules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k != "HYBRIDLOAD_DISABLE"}
    record = {
        "installed": measure(base, args.repeat),
        "disabled": measure({**base, "HYBRIDLOAD_DISABLE": "1"}, args.repeat),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": sys.version.split()[0],
    }
    for label in ("installed", "disabled"):
        data = record[label]
        mods = data["modules"]
        own = sorted(m for m in mods if m.startswith("hybridload"))
        print(f"\nimport hybridload ({label}): {data['import_s'] * 1e3:.1f} ms, {len(mods)} modules imported, "
              f"{len(own)} of them hybridload's")
        print(f"{'module':<40} {'cumulative ms':>13} {'self ms':>8}  pulled in by")
        top = sorted(mods.items(), key=lambda item: -item[1]["self_ms"])[: args.top]
        for name, info in top:
            print(f"{name:<40} {info['cumulative_ms']:>13.1f} {info['self_ms']:>8.1f}  {info['pulled_in_by'] or '-'}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
