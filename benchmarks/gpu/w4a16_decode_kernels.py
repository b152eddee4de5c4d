"""The two W4A16 decode kernels side by side on one GPU: the CUDA-core GEMV (``gemv``) and the tensor-core
decode GEMM (``mma_gemv``), over their tile grids, for M = 1, 4, 16 at the decode shapes and for the MoE decode
step; bf16 cuBLAS in the same run. GPU time per call in a CUDA graph that streams every weight from HBM. The
GEMV runs with each group's products summed in fp32 and as fp16x2 (``F16_DOT``). A split K's partials are
summed by a second launch and, with a workspace, in the same launch (``--serial``); ``--read-floor`` adds a
kernel that only streams each shape's packed bytes.

    PYTHONPATH=src python benchmarks/gpu/w4a16_decode_kernels.py --out FILE.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from w4a16 import DECODE_SHAPES, L2_ROTATE_BYTES, copy_bandwidth, environment, graph_time_us, packed  # noqa: E402

from hybridload.kernels import w4a16 as kw  # noqa: E402
from hybridload.kernels._runtime import load_launcher  # noqa: E402
from hybridload.quant.numerics import dequantize_nvfp4  # noqa: E402

# F16_DOT: each group's 16 products summed as fp16x2 (the default for 16-bit inputs) or in fp32
GEMV = [dict(BLOCK_N=16, BLOCK_G=16, num_warps=4, PREFETCH=2, F16_DOT=False),
        dict(BLOCK_N=16, BLOCK_G=16, num_warps=4, PREFETCH=2, F16_DOT=True),
        dict(BLOCK_N=32, BLOCK_G=16, num_warps=4, PREFETCH=1, F16_DOT=True),
        dict(BLOCK_N=32, BLOCK_G=16, num_warps=4, PREFETCH=2, F16_DOT=True),
        dict(BLOCK_N=64, BLOCK_G=16, num_warps=4, PREFETCH=1, F16_DOT=True),
        dict(BLOCK_N=64, BLOCK_G=16, num_warps=8, PREFETCH=1, F16_DOT=True),
        dict(BLOCK_N=16, BLOCK_G=32, num_warps=4, PREFETCH=2, F16_DOT=True),
        dict(BLOCK_N=8, BLOCK_G=32, num_warps=4, PREFETCH=2, F16_DOT=True),
        dict(BLOCK_N=8, BLOCK_G=64, num_warps=4, PREFETCH=2, F16_DOT=True),
        dict(BLOCK_N=16, BLOCK_G=32, num_warps=4, PREFETCH=1, F16_DOT=True),
        dict(BLOCK_N=16, BLOCK_G=32, num_warps=8, PREFETCH=2, F16_DOT=True)]
# with the prefetched steps decoded before a dependent launch's wait (DECODE_AHEAD): the dispatch's three
# tiles (entries 11-13 are 2, 6, 8), five more (14-18: 1, 3, 7, 9, 10) and four tilings of 2 and 8 warps (19-22)
GEMV += [{**GEMV[tile], "DECODE_AHEAD": True} for tile in (2, 6, 8, 1, 3, 7, 9, 10)]
GEMV += [dict(BLOCK_N=8, BLOCK_G=64, num_warps=8, PREFETCH=2, F16_DOT=True, DECODE_AHEAD=True),
         dict(BLOCK_N=16, BLOCK_G=64, num_warps=8, PREFETCH=2, F16_DOT=True, DECODE_AHEAD=True),
         dict(BLOCK_N=8, BLOCK_G=64, num_warps=2, PREFETCH=2, F16_DOT=True, DECODE_AHEAD=True),
         dict(BLOCK_N=8, BLOCK_G=32, num_warps=2, PREFETCH=2, F16_DOT=True, DECODE_AHEAD=True)]
MMA = [dict(BLOCK_N=64, BLOCK_G=8, num_warps=4, num_stages=1), dict(BLOCK_N=64, BLOCK_G=8, num_warps=4, num_stages=3),
       dict(BLOCK_N=64, BLOCK_G=16, num_warps=4, num_stages=3), dict(BLOCK_N=128, BLOCK_G=8, num_warps=8, num_stages=3),
       dict(BLOCK_N=64, BLOCK_G=8, num_warps=4, num_stages=1, PREFETCH=1), dict(BLOCK_N=64, BLOCK_G=16, num_warps=4, num_stages=1, PREFETCH=1),
       dict(BLOCK_N=128, BLOCK_G=8, num_warps=8, num_stages=1, PREFETCH=1)]
SPLITS = (1, 2, 4, 8, 16)


READ_TILES = [(8, 64), (16, 32), (32, 16), (16, 64)]


def read_floor_rows(q, m, n, k, copies, bf16, packed_bytes, bw) -> list[dict]:
    """The fastest a single launch streams this shape's packed words and scale bytes (each row tile over its
    K range, no decode and no arithmetic beyond an xor) over tiles and splits: the floor the GEMV is held to."""
    import triton

    from read_floor import stream_packed_kernel

    rows = []
    for (block_n, block_g), split in itertools.product(READ_TILES, (1, 2, 4, 8)):
        kg = -(-k // 16)
        g_per_split = -(-kg // split)
        sink = torch.empty(split, n, dtype=torch.int64, device="cuda")

        def call(i, block_n=block_n, block_g=block_g, split=split, g_per_split=g_per_split, sink=sink):
            p, s, _ = q[i]
            w64, su8 = kw.packed_words(p), s.view(torch.uint8)
            grid = (triton.cdiv(n, block_n), split)
            return lambda: stream_packed_kernel[grid](w64, su8, sink, n, kg, g_per_split, w64.stride(0), su8.stride(0),
                                                      BLOCK_N=block_n, BLOCK_G=block_g, num_warps=4)

        us = graph_time_us(call, copies)
        rows.append({"kernel": "read_floor", "M": m, "N": n, "K": k, "graph_us": us, "bf16_graph_us": bf16,
                     "speedup_vs_bf16": bf16 / us, "packed_bw_fraction_of_copy": packed_bytes / (us * 1e-6) / bw,
                     "rel_l2_error_vs_dequantized_fp32": 0.0,
                     "config": {"BLOCK_N": block_n, "BLOCK_G": block_g, "SPLIT_K": split}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ms", default="1,4,16", help="row counts, comma-separated")
    parser.add_argument("--kernels", default="gemv,mma_gemv")
    parser.add_argument("--splits", default=",".join(map(str, SPLITS)))
    parser.add_argument("--no-moe", action="store_true")
    parser.add_argument("--shapes", default="", help="N x K weight shapes instead of the decode shapes: 4096x14336,...")
    parser.add_argument("--gemv", default="", help="indices into the GEMV tile list (default: all)")
    parser.add_argument("--serial", default="0,1",
                        help="split-K partials summed by a second launch (0), in the same launch with a workspace (1)")
    parser.add_argument("--read-floor", action="store_true",
                        help="also time a kernel that only streams the packed words and scales (no decode, no math)")
    args = parser.parse_args()
    ms = [int(v) for v in args.ms.split(",")]
    serials = [int(v) for v in args.serial.split(",")]
    splits = [int(v) for v in args.splits.split(",")]
    launcher = load_launcher("_w4a16_triton")
    bw = copy_bandwidth()
    result = {"environment": environment(), "copy_bandwidth_gbps": bw / 1e9, "linear": [], "moe": []}
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")] if args.shapes else DECODE_SHAPES
    gemv_tiles = [GEMV[int(i)] for i in args.gemv.split(",")] if args.gemv else GEMV
    for (n, k), m in itertools.product(shapes, ms):
        packed_bytes = n * (k // 2) + n * (k // 16) + 4
        copies = max(2, min(64, -(-L2_ROTATE_BYTES // packed_bytes)))
        q = [packed(n, k, i) for i in range(copies)]
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        ref = F.linear(x.float(), dequantize_nvfp4(*q[0]))
        dense = [dequantize_nvfp4(*q[i], dtype=torch.bfloat16) for i in range(max(2, min(64, -(-L2_ROTATE_BYTES // (n * k * 2)))))]
        bf16 = graph_time_us(lambda i: (lambda: F.linear(x, dense[i])), len(dense))
        del dense
        kernels = [("mma_gemv", c) for c in MMA] + ([("gemv", c) for c in gemv_tiles] if m <= 4 else [])
        best = {}
        kernels = [(name, c) for name, c in kernels if name in args.kernels.split(",")]
        workspace = kw.w4a16_workspace(m * (n + 8), "cuda")  # every tiling; the graph's calls run in turn, so they share it
        variants = [(kernel, split, serial) for kernel, split, serial in itertools.product(kernels, splits, serials)
                    if split > 1 or not serial]
        for (name, base), split, serial in variants:
            config = {**base, "SPLIT_K": split}
            fn = getattr(launcher, name)

            def call(i, fn=fn, config=config, serial=serial):
                p, s, g = q[i]
                w64, su8 = kw.packed_words(p), s.view(torch.uint8)
                return lambda: fn(x, w64, su8, g, None, out, k, False, config, counters=workspace if serial else None)

            try:
                call(0)()
                rel = float((out.float() - ref).norm() / ref.norm())
                us = graph_time_us(call, copies)
                assert not serial or not workspace.any(), "the same-launch split left its counters non-zero"
                row = {"kernel": name, "M": m, "N": n, "K": k, "config": config, "serial": serial, "graph_us": us, "bf16_graph_us": bf16,
                       "speedup_vs_bf16": bf16 / us, "packed_bw_fraction_of_copy": packed_bytes / (us * 1e-6) / bw,
                       "rel_l2_error_vs_dequantized_fp32": rel}
            except Exception as exc:  # noqa: BLE001 - a config that fails is recorded, not fatal
                row = {"kernel": name, "M": m, "N": n, "K": k, "config": config, "error": f"{type(exc).__name__}: {exc}"[:300]}
            result["linear"].append(row)
        # what w4a16_linear dispatches to, with its own tile choice: as a layer calls it (with its workspace), and without
        for serial in serials:
            space = workspace if serial else None
            rel = float((kw.w4a16_linear(x, *q[0], workspace=space).float() - ref).norm() / ref.norm())
            us = graph_time_us(lambda i: (lambda: kw.w4a16_linear(x, *q[i], workspace=space)), copies)
            config = kw._gemv_config(m, n, -(-k // 16), x.device, bool(serial)) if m <= kw.GEMV_MAX_M else {}
            result["linear"].append({"kernel": "dispatch", "M": m, "N": n, "K": k, "serial": serial, "graph_us": us,
                                     "bf16_graph_us": bf16, "rel_l2_error_vs_dequantized_fp32": rel, "speedup_vs_bf16": bf16 / us,
                                     "packed_bw_fraction_of_copy": packed_bytes / (us * 1e-6) / bw, "config": config})
        if args.read_floor:
            result["linear"].extend(read_floor_rows(q, m, n, k, copies, bf16, packed_bytes, bw))
        for row in result["linear"]:
            if row["M"] == m and row["N"] == n and row["K"] == k and "graph_us" in row:
                name = (row["kernel"] + ("-f16dot" if row["config"].get("F16_DOT") else "")
                        + ("-serial" if row.get("serial") and row["config"].get("SPLIT_K", 1) > 1 else ""))
                if name not in best or row["graph_us"] < best[name]["graph_us"]:
                    best[name] = row
        for name, row in best.items():
            print(f"M={m:<2} {n}x{k} {name:14s} {row['graph_us']:6.1f} us  x{row['speedup_vs_bf16']:.2f} bf16 ({bf16:.1f})  "
                  f"{row['packed_bw_fraction_of_copy']:.0%} bw  rel {row['rel_l2_error_vs_dequantized_fp32']:.1e}  {row['config']}", flush=True)
        errors = [r for r in result["linear"] if "error" in r and r["M"] == m and r["N"] == n]
        for row in errors[:2]:
            print("error", row["kernel"], row["config"], row["error"], flush=True)
        del q
        torch.cuda.empty_cache()
    if args.no_moe:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        return
    # MoE decode step: 128 experts, top-6, 3712 x 2688
    experts, topk, n, k = 128, 6, 3712, 2688
    bank = [packed(n, k, 1000 + e) for e in range(experts)]
    W = torch.stack([b[0] for b in bank]); S = torch.stack([b[1] for b in bank]); G = torch.cat([b[2] for b in bank])  # noqa: E702
    del bank
    for tokens in (1, 4):
        x = torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16)
        id_sets = [torch.stack([torch.randperm(experts, device="cuda")[:topk] for _ in range(tokens)]).to(torch.int32) for _ in range(8)]
        out = torch.empty(tokens * topk, n, device="cuda", dtype=torch.bfloat16)
        ids0 = id_sets[0].cpu().tolist()
        ref = torch.stack([F.linear(x[t].float(), dequantize_nvfp4(W[e], S[e], G[e])) for t in range(tokens) for e in ids0[t]])
        w64, su8 = kw.packed_words(W), S.view(torch.uint8)
        moe_kernels = [("gemv", c) for c in gemv_tiles] + [("mma_gemv", c) for c in MMA[:4]]
        for name, base in [(name, c) for name, c in moe_kernels if name in args.kernels.split(",")]:
            config = {**base, "SPLIT_K": 1}
            fn = getattr(launcher, name)

            def call(i, fn=fn, config=config):
                return lambda: fn(x, w64, su8, G, None, out, k, False, config, topk_ids=id_sets[i].reshape(-1), topk=topk)

            call(0)()
            rel = float((out.float() - ref).norm() / ref.norm())
            us = graph_time_us(call, 8, reps=50)
            row = {"kernel": name, "tokens": tokens, "config": config, "graph_us": us, "rel_l2_error_vs_dequantized_fp32": rel}
            result["moe"].append(row)
            print(f"moe T={tokens} {name:8s} {us:6.1f} us rel {rel:.1e} {config}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
