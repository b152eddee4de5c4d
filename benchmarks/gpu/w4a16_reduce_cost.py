"""GPU time of the W4A16 split-K reduce launch alone (what a split K adds to a decode GEMV), in a CUDA graph.

    PYTHONPATH=src python benchmarks/gpu/w4a16_reduce_cost.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from w4a16 import graph_time_us  # noqa: E402

from hybridload.kernels._runtime import load_launcher  # noqa: E402


def main() -> None:
    launcher = load_launcher("_w4a16_triton")
    for split, n in ((8, 4096), (2, 14336), (4, 1024), (16, 1024)):
        parts = [torch.randn(split, 1, n, device="cuda") for _ in range(4)]
        scale = torch.ones(1, device="cuda")
        out = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
        us = graph_time_us(lambda i: (lambda: launcher._reduce_partials(parts[i], scale, None, out, False)), 4)
        print(f"reduce split={split} n={n}: {us:.2f} us per call in a graph", flush=True)


if __name__ == "__main__":
    main()
