"""Compile hybridload's W4A16 Triton kernels ahead of time for sm_90a (H100/H200) without a GPU, and report
what ptxas says about each configuration (registers per thread, stack frame and spills) and, for the decode
kernels, the SASS of their main loop: instructions per weight element and the most frequent opcodes.

    python benchmarks/w4a16_aot.py [--out FILE.md]      (needs the triton package, not a GPU)

A spill (local memory) or a register count that leaves one program per SM would cost a memory-bound kernel
its bandwidth, and every instruction per element costs issue slots a bandwidth-bound decode cannot spare;
this is how tile sizes and decode variants were compared without a GPU. Integer arguments and pointers are
compiled as the JIT specializes them at run time (divisible by 16), so the loads vectorize as they do there.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
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


def _compile(fn, signature: dict, constexprs: dict, warps: int, stages: int, divisible: tuple[str, ...] = ()):
    names = list(signature)
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in divisible}
    return triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs), target=TARGET,
                          options={"num_warps": warps, "num_stages": stages})


def loop_profile(compiled, elements_per_thread_step: int) -> str:
    """Instructions per weight element in the kernel's main loop (its longest backward branch), from nvdisasm."""
    folder = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as handle:
        handle.write(compiled.asm["cubin"])
    text = subprocess.run([str(folder / "nvdisasm"), "-c", handle.name], capture_output=True, text=True).stdout
    os.unlink(handle.name)
    rows, labels, pending = [], {}, []
    for line in text.splitlines():
        label = re.match(r"^(\.L_x_\d+):", line.strip())
        if label:
            pending.append(label.group(1))
            continue
        match = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if match:
            address = int(match.group(1), 16)
            labels.update({name: address for name in pending})
            pending = []
            rows.append((address, match.group(2).strip()))
    loops = []
    for address, ins in rows:
        target = re.search(r"BRA\s+`?\(?(\.L_x_\d+)", ins)
        if target and labels.get(target.group(1), address) < address:
            loops.append((labels[target.group(1)], address))
    if not loops:
        return "no loop found"
    start, end = max(loops, key=lambda span: span[1] - span[0])
    body = [re.sub(r"^@!?U?P\w+\s+", "", ins).split()[0].split(".")[0] for address, ins in rows if start <= address <= end]
    top = ", ".join(f"{op} {count}" for op, count in collections.Counter(body).most_common(6))
    return f"{len(body) / elements_per_thread_step:.2f} instructions per element ({len(body)} for {elements_per_thread_step}; {top})"


def properties(fn, signature: dict, constexprs: dict, warps: int, stages: int, divisible: tuple[str, ...] = (),
               elements_per_thread_step: int | None = None) -> str:
    compiled = _compile(fn, signature, constexprs, warps, stages, divisible)
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as handle:
        handle.write(compiled.asm["ptx"])
    result = subprocess.run([_ptxas(), "-arch=sm_90a", "-v", handle.name, "-o", os.devnull], capture_output=True, text=True)
    os.unlink(handle.name)
    mma = "mma" in compiled.asm["ptx"]
    lines = [line.split("info    :")[-1].strip() for line in (result.stdout + result.stderr).splitlines() if "spill" in line or "Used" in line]
    loop = f"; loop: {loop_profile(compiled, elements_per_thread_step)}" if elements_per_thread_step else ""
    return f"{'; '.join(lines)}; tensor-core mma: {mma}{loop}{_arrival_ptx(compiled.asm['ptx'])}{_pdl_ptx(compiled.asm['ptx'])}"


def _pdl_ptx(ptx: str) -> str:
    """Programmatic dependent launch as compiled: the griddepcontrol instructions, and which global memory
    instructions come before the wait (at most the loads of the first steps' weight words and scales; no store,
    no atomic: a PDL call reads its input and writes only after the previous kernel), and how many e4m3 pair
    widenings (the decode) come before it: none, unless the prefetched steps are decoded ahead."""
    lines = ptx.splitlines()
    waits = [i for i, line in enumerate(lines) if "griddepcontrol.wait" in line]
    if not waits:
        return ""
    before = lines[:waits[0]]
    loads = sum("ld.global" in line for line in before)
    writes = sum(("st.global" in line or "atom." in line or "red." in line) for line in before)
    widenings = sum("cvt.rn.f16x2.e4m3x2" in line for line in before)
    triggers = sum("griddepcontrol.launch_dependents" in line for line in lines)
    return (f"; PDL: griddepcontrol.launch_dependents x{triggers}, griddepcontrol.wait x{len(waits)}, before the wait "
            f"{loads} global loads, {writes} global stores or atomics, {widenings} e4m3 pair widenings")


def _arrival_ptx(ptx: str) -> str:
    """The same-launch split-K's synchronisation as compiled: its atomics and L1-bypassing loads (none elsewhere)."""
    atomics = [next(word for word in line.split() if word.startswith("atom.")) for line in ptx.splitlines() if "atom." in line]
    bypass = sum("ld.global.cg" in line for line in ptx.splitlines())
    if not atomics:
        return ""
    return f"; arrival: {', '.join(sorted(set(atomics)))} x{len(atomics)}, ld.global.cg x{bypass}"


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
    decode_sig = {"X": "*bf16", "W": "*i64", "S": "*u8", "G": "*fp32", "B": "*bf16", "Y": "*bf16", "P": "*fp32", "C": "*i32", "IDS": "*i32",
                  "M": "i32", "N": "i32", "K": "i32", "KG": "i32", "G_PER_SPLIT": "i32", "TOPK": "i32", "E": "i32",
                  "stride_xm": "i32", "stride_ym": "i32", "stride_we": "i32", "stride_wn": "i32", "stride_se": "i32", "stride_sn": "i32",
                  **{name: "constexpr" for name in ("BLOCK_N", "BLOCK_G", "SPLIT_K", "SERIAL", "PREFETCH", "MOE", "HAS_BIAS", "RECIPROCAL", "ASM", "F16_DOT")}}
    divisible = tuple(name for name, kind in decode_sig.items() if kind != "constexpr" and name not in ("M", "N", "TOPK", "E"))
    for block_n, block_g, warps, prefetch, f16_dot in ((16, 16, 4, 2, False), (16, 32, 4, 2, False), (8, 64, 4, 2, True),
                                                       (16, 32, 4, 2, True), (32, 16, 4, 1, True)):
        consts = {"BLOCK_N": block_n, "BLOCK_G": block_g, "SPLIT_K": 1, "SERIAL": False, "PREFETCH": prefetch, "MOE": False,
                  "HAS_BIAS": False, "RECIPROCAL": False, "ASM": True, "F16_DOT": f16_dot}
        sums = "fp16x2 group sums" if f16_dot else "fp32 sums"
        rows.append((f"_gemv_kernel bf16, prefetch {prefetch}, {sums}", block_n, f"{block_g} groups", warps, 1,
                     properties(k._gemv_kernel, decode_sig, consts, warps, 1, divisible, block_n * block_g * 16 // (32 * warps))))
    pdl_sig = {**decode_sig, "PDL": "constexpr", "DECODE_AHEAD": "constexpr"}
    for block_n, block_g, warps in ((8, 64, 4), (8, 64, 8), (16, 32, 8)):  # the dispatch's short-K tiles, and 4 warps
        consts = {"BLOCK_N": block_n, "BLOCK_G": block_g, "SPLIT_K": 1, "SERIAL": False, "PREFETCH": 2, "MOE": False,
                  "HAS_BIAS": False, "RECIPROCAL": False, "ASM": True, "F16_DOT": True, "PDL": True, "DECODE_AHEAD": True}
        rows.append(("_gemv_kernel bf16, programmatic dependent launch, prefetched steps decoded before the wait",
                     block_n, f"{block_g} groups", warps, 1,
                     properties(k._gemv_kernel, pdl_sig, consts, warps, 1, divisible, block_n * block_g * 16 // (32 * warps))))
    for serial, moe in ((False, False), (True, False), (False, True)):
        consts = {"BLOCK_N": 8 if not serial else 32, "BLOCK_G": 64 if not serial else 16, "SPLIT_K": 1 if not serial else 8,
                  "SERIAL": serial, "PREFETCH": 2 if not serial else 1, "MOE": moe, "HAS_BIAS": False, "RECIPROCAL": False,
                  "ASM": True, "F16_DOT": True, "PDL": True, "DECODE_AHEAD": False}
        what = "split K 8 summed in the same launch, " if serial else "routed pairs (MoE), " if moe else ""
        rows.append((f"_gemv_kernel bf16, {what}programmatic dependent launch", consts["BLOCK_N"], f"{consts['BLOCK_G']} groups", 4, 1,
                     properties(k._gemv_kernel, pdl_sig, consts, 4, 1, divisible,
                                consts["BLOCK_N"] * consts["BLOCK_G"] * 16 // 128)))
    mma_sig = {name: kind for name, kind in decode_sig.items() if name != "F16_DOT"}
    for block_n, block_g, warps, stages in ((64, 8, 4, 1), (64, 8, 4, 3), (128, 8, 8, 1)):
        consts = {"BLOCK_N": block_n, "BLOCK_G": block_g, "SPLIT_K": 1, "SERIAL": False, "PREFETCH": 0, "MOE": False,
                  "HAS_BIAS": False, "RECIPROCAL": False, "ASM": True}
        rows.append(("_mma_gemv_kernel bf16, 16 rows", block_n, f"{block_g} groups", warps, stages,
                     properties(k._mma_gemv_kernel, mma_sig, consts, warps, stages, divisible, block_n * block_g * 16 // (32 * warps))))
    for serial in (False, True):
        consts = {"BLOCK_N": 32, "BLOCK_G": 16, "SPLIT_K": 8, "SERIAL": serial, "PREFETCH": 1, "MOE": False, "HAS_BIAS": True,
                  "RECIPROCAL": False, "ASM": True, "F16_DOT": True}
        summed = "in the same launch" if serial else "by the reduce launch"
        rows.append((f"_gemv_kernel bf16, split K 8, partials summed {summed}", 32, "16 groups", 4, 1,
                     properties(k._gemv_kernel, decode_sig, consts, 4, 1, divisible, 32 * 16 * 16 // 128)))
    consts = {"BLOCK_N": 64, "BLOCK_G": 8, "SPLIT_K": 8, "SERIAL": True, "PREFETCH": 0, "MOE": False, "HAS_BIAS": True,
              "RECIPROCAL": False, "ASM": True}
    rows.append(("_mma_gemv_kernel bf16, 16 rows, split K 8, partials summed in the same launch", 64, "8 groups", 4, 1,
                 properties(k._mma_gemv_kernel, mma_sig, consts, 4, 1, divisible, 64 * 8 * 16 // 128)))
    rows.append(("_mma_gemv_kernel bf16, 16 rows, split K 8, programmatic dependent launch", 64, "8 groups", 4, 1,
                 properties(k._mma_gemv_kernel, {**mma_sig, "PDL": "constexpr"}, {**consts, "PDL": True}, 4, 1, divisible,
                            64 * 8 * 16 // 128)))
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
        "| kernel | BLOCK_N | BLOCK_K (or groups of 16) | warps | stages | ptxas, and the decode loop's SASS |",
        "|---|---:|---:|---:|---:|---|",
        *[f"| {name} | {bn} | {bk} | {w} | {st} | {props} |" for name, bn, bk, w, st, props in rows],
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
