"""Does what ran before change a W4A16 decode call's time? One process, two large shapes, each timed several
ways in a CUDA graph: first, again, with one workspace shared by every weight copy, after bf16 cuBLAS on the
same shape, and with 200 replays. Prints one line per timing (GPU µs per call).

    PYTHONPATH=src python benchmarks/gpu/w4a16_order_probe.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from w4a16 import graph_time_us, packed  # noqa: E402

from hybridload.kernels import w4a16 as kw  # noqa: E402
from hybridload.quant.numerics import dequantize_nvfp4  # noqa: E402


def probe(n: int, k: int) -> None:
    q = [packed(n, k, i) for i in range(6)]
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    own_spaces = [kw.w4a16_workspace(n, "cuda") for _ in q]
    shared_space = kw.w4a16_workspace(n, "cuda")

    def own(i):
        return lambda: kw.w4a16_linear(x, *q[i], workspace=own_spaces[i])

    def shared(i):
        return lambda: kw.w4a16_linear(x, *q[i], workspace=shared_space)

    def show(name: str, make_call, copies: int = 6, reps: int = 20) -> None:
        print(n, k, name, round(graph_time_us(make_call, copies, reps=reps), 2), flush=True)

    show("own ws first", own)
    show("own ws again", own)
    show("shared ws", shared)
    dense = [dequantize_nvfp4(*q[i], dtype=torch.bfloat16) for i in range(2)]
    show("bf16", lambda i: (lambda: F.linear(x, dense[i])), copies=2)
    show("own ws after bf16", own)
    show("shared ws after bf16", shared)
    show("own ws reps 200", own, reps=200)


if __name__ == "__main__":
    for shape in ((4096, 21504), (21504, 4096)):
        probe(*shape)
