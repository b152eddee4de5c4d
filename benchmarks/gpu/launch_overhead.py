"""Host time of one eager W4A16 call against F.linear (CUDA, M = 1): what a Python-driven decode step pays
per layer before the GPU does anything. Prints both and the calls that take the time (cProfile).

    PYTHONPATH=src python benchmarks/gpu/launch_overhead.py
"""
from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from hybridload.kernels import w4a16 as kw  # noqa: E402
from hybridload.quant.numerics import dequantize_nvfp4, quantize_nvfp4  # noqa: E402


def host_us(fn, calls: int = 2000) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def main() -> None:
    n = k = 4096
    p, s, g = quantize_nvfp4(torch.randn(n, k, device="cuda"))
    g = g.reshape(1)
    dense = dequantize_nvfp4(p, s, g, dtype=torch.bfloat16)
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    ours = host_us(lambda: kw.w4a16_linear(x, p, s, g))
    base = host_us(lambda: F.linear(x, dense))
    print(f"host us per call: w4a16_linear {ours:.1f}, F.linear {base:.1f}")
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(500):
        kw.w4a16_linear(x, p, s, g)
    profile.disable()
    torch.cuda.synchronize()
    pstats.Stats(profile).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
