"""Compile hybridload's W4A16 Triton kernels ahead of time for sm_90a (H100/H200) without a GPU, and report
what ptxas says about each configuration: registers per thread, stack frame and spills.

    python benchmarks/w4a16_aot.py [--out FILE.md]      (needs the triton package, not a GPU)

A spill (local memory) or a register count that leaves one program per SM would cost a memory-bound kernel
its bandwidth; this is how the default tile sizes of hybridload.kernels.w4a16 were chosen without a GPU.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hybridload.kernels import _w4a16_triton as k  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def _ptxas() -> str:
    folder = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for name in ("ptxas-blackwell", "ptxas"):  # the newer one reads the PTX version this triton emits
        if (folder / name).is_file():
            return str(folder / name)
    raise SystemExit("this triton ships no ptxas")


def properties(fn, signature: dict, constexprs: dict, warps: int, stages: int) -> str:
    compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=TARGET,
                              options={"num_warps": warps, "num_stages": stages})
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as handle:
        handle.write(compiled.asm["ptx"])
    result = subprocess.run([_ptxas(), "-arch=sm_90a", "-v", handle.name, "-o", os.devnull], capture_output=True, text=True)
    os.unlink(handle.name)
    mma = "mma" in compiled.asm["ptx"]
    lines = [line.split("info    :")[-1].strip() for line in (result.stdout + result.stderr).splitlines() if "spill" in line or "Used" in line]
    return f"{'; '.join(lines)}; tensor-core mma: {mma}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "w4a16-aot-sm90.md")
    args = parser.parse_args()
    gemm_sig = {"X": "*bf16", "W": "*u8", "S": "*u8", "G": "*fp32", "B": "*bf16", "Y": "*bf16", "P": "*fp32",
                "M": "i32", "N": "i32", "K": "i32", "KH": "i32", "K_PER_SPLIT": "i32",
                "stride_xm": "i32", "stride_ym": "i32", "stride_wn": "i32", "stride_sn": "i32",
                **{name: "constexpr" for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "SPLIT_K", "HAS_BIAS", "RECIPROCAL", "DOT_DTYPE", "IEEE")}}
    moe_sig = {"X": "*bf16", "W": "*u8", "S": "*u8", "G": "*fp32", "Y": "*bf16", "TILE_EXPERT": "*i32", "ROW_MAP": "*i64",
               "N": "i32", "K": "i32", "KH": "i32", "E": "i32", "TOPK": "i32",
               "stride_xm": "i32", "stride_ym": "i32", "stride_we": "i32", "stride_wn": "i32", "stride_se": "i32", "stride_sn": "i32",
               **{name: "constexpr" for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "PER_PAIR", "RECIPROCAL", "DOT_DTYPE", "IEEE")}}
    rows = []
    for block_n, block_k, warps, stages in ((32, 128, 4, 4), (32, 256, 4, 4), (32, 256, 8, 4), (16, 256, 4, 4), (64, 128, 4, 4), (64, 256, 8, 3), (64, 512, 8, 3)):
        consts = {"BLOCK_M": 16, "BLOCK_N": block_n, "BLOCK_K": block_k, "SPLIT_K": 3, "HAS_BIAS": False,
                  "RECIPROCAL": False, "DOT_DTYPE": tl.bfloat16, "IEEE": False}
        rows.append(("_gemm_kernel bf16 M-tile 16", block_n, block_k, warps, stages, properties(k._gemm_kernel, gemm_sig, consts, warps, stages)))
    for block_k in (128, 256):
        for per_pair in (True, False):
            consts = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": block_k, "PER_PAIR": per_pair, "RECIPROCAL": False,
                      "DOT_DTYPE": tl.bfloat16, "IEEE": False}
            rows.append((f"_moe_kernel bf16 {'per-pair' if per_pair else 'sorted'} tiles", 32, block_k, 4, 4,
                         properties(k._moe_kernel, moe_sig, consts, 4, 4)))
    text = [
        "# W4A16 kernels compiled for sm_90a without a GPU (ptxas -v)",
        "",
        f"`python benchmarks/w4a16_aot.py`, {time.strftime('%Y-%m-%d')}, triton {triton.__version__} (its bundled ptxas), "
        "Python " + sys.version.split()[0] + ". Compile-level facts only: no timing.",
        "",
        "| kernel | BLOCK_N | BLOCK_K | warps | stages | ptxas |",
        "|---|---:|---:|---:|---:|---|",
        *[f"| {name} | {bn} | {bk} | {w} | {st} | {props} |" for name, bn, bk, w, st, props in rows],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
