"""W4A16 NVFP4 kernels against bf16 cuBLAS and plain PyTorch, side by side in one run (needs CUDA + triton).

    python benchmarks/w4a16.py [--out FILE.json] [--sweep] [--quick]

For each shape it prints and records, per implementation:

* ``graph_us``: GPU time per call in a CUDA graph that cycles through enough distinct weight copies to
  exceed L2 (each call streams its weight from HBM, as successive layers of a model do) -- the kernel's own
  time, without host launch overhead;
* ``eager_us``: ``triton.testing.do_bench`` of one eager call (L2 flushed before each; the median), launch
  overhead included (for plain PyTorch both: its e2m1 table stays on the device, so the reference path captures);
* for the decode kernels (M <= 16) both launch orderings, whichever is the default: ``w4a16_graph_us_pdl``
  (programmatic dependent launch: a call's programs start while the previous call drains) and
  ``w4a16_graph_us_plain_launch``; at M = 1 also each call after an ordinary elementwise kernel, its own time
  subtracted (``*_after_a_plain_kernel``), where nothing can overlap, with bf16 cuBLAS timed the same way;
  eager through a served layer's ``W4A16Layer`` (its kernel launch kept and replayed: ``w4a16_layer_eager_us``),
  and ``sustained_us``: wall time per call of many eager calls in a row (``w4a16_linear``, the layer, bf16
  ``F.linear``, plain PyTorch), what an eager loop sustains, host time included;

and the ratios the targets are stated in: bf16 time / W4A16 time, plain-PyTorch time / W4A16 time, and the
packed bytes read per second as a fraction of the device-to-device copy bandwidth measured in the same run
(bytes read + written, as the copy benchmark counts them). "Plain PyTorch" is the reference path: dequantize
the whole weight with :func:`hybridload.quant.numerics.dequantize_nvfp4`, then ``F.linear``.
"""
from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hybridload.kernels import w4a16 as kw  # noqa: E402
from hybridload.kernels._runtime import load_launcher  # noqa: E402
from hybridload.quant.numerics import dequantize_nvfp4, quantize_nvfp4  # noqa: E402

L2_ROTATE_BYTES = 256 * 2**20
DECODE_SHAPES = [(4096, 4096), (21504, 4096), (4096, 21504), (1856, 2688), (2688, 1856)]  # (N out, K in)
PREFILL_SHAPES = [(4096, 4096), (21504, 4096)]


def copy_bandwidth() -> float:
    """Bytes read + written per second by a 1 GiB device-to-device copy (median of do_bench)."""
    import triton.testing

    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=50, rep=300)
    return 2 * src.numel() / (ms * 1e-3)


def graph_time_us(make_call, copies: int, reps: int = 20) -> float:
    """GPU time of one call: a CUDA graph of ``copies`` calls (each on its own operands), replayed."""
    calls = [make_call(i) for i in range(copies)]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:  # warm up (compiles, allocator) outside the capture
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / copies)
    times.sort()
    return times[len(times) // 2]


def eager_us(fn) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median") * 1e3


def sustained_us(fn, calls: int = 400) -> float:
    """Wall time per call of ``calls`` eager calls in a row, synchronized only at both ends: the rate an eager
    loop sustains, bound by the host's time per call or the GPU's, whichever is longer (no L2 flush)."""
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def packed(n: int, k: int, seed: int):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16, generator=gen)
    p, s, g = quantize_nvfp4(w)
    return p, s, g.reshape(1)


def after_a_plain_kernel_us(make_call, copies: int, x: torch.Tensor) -> float:
    """GPU time of one call when each call follows an ordinary elementwise kernel on its input (as a linear
    follows a norm or an activation in a model), that kernel's own time subtracted."""
    scratch = torch.empty_like(x)

    def norm_like(i):
        return lambda: torch.mul(x, 1.0, out=scratch)

    def pair(i):
        call = make_call(i)
        return lambda: (torch.mul(x, 1.0, out=scratch), call())

    return graph_time_us(pair, copies) - graph_time_us(norm_like, copies)


def linear_case(m: int, n: int, k: int, bw: float, config: dict | None = None) -> dict:
    packed_bytes = n * (k // 2) + n * (k // 16) + 4
    bf16_bytes = n * k * 2
    copies = max(2, min(64, -(-L2_ROTATE_BYTES // packed_bytes)))
    bf_copies = max(2, min(64, -(-L2_ROTATE_BYTES // bf16_bytes)))
    q = [packed(n, k, i) for i in range(copies)]
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    launcher = load_launcher("_w4a16_triton")

    workspaces = [kw.w4a16_workspace(n, "cuda") for _ in range(copies)]  # one per layer, as served modules hold

    def ours(i, pdl=None):
        p, s, g = q[i]
        if config is None:
            return lambda: kw.w4a16_linear(x, p, s, g, workspace=workspaces[i], pdl=pdl)
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        su8 = s.view(torch.uint8)
        if "BLOCK_G" in config:
            w64 = kw.packed_words(p)
            return lambda: launcher.gemv(x, w64, su8, g, None, out, k, False, config)
        return lambda: launcher.gemm(x, p, su8, g, None, out, k, False, config)

    dense = [dequantize_nvfp4(*q[i % copies], dtype=torch.bfloat16) for i in range(bf_copies)]

    def bf16(i):
        w = dense[i]
        return lambda: F.linear(x, w)

    def plain_call(i):  # plain PyTorch: dequantize the whole weight, then F.linear
        p, s, g = q[i]
        return lambda: F.linear(x, dequantize_nvfp4(p, s, g, dtype=torch.bfloat16))

    p0, s0, g0 = q[0]
    plain = plain_call(0)
    # correctness of this very call against the dense bf16 product
    y = ours(0)()
    ref = F.linear(x.float(), dequantize_nvfp4(p0, s0, g0))
    rel = float((y.float() - ref).norm() / ref.norm())
    row = {
        "M": m, "N": n, "K": k, "config": config,
        "w4a16_graph_us": graph_time_us(ours, copies),
        "bf16_graph_us": graph_time_us(bf16, bf_copies),
        "w4a16_eager_us": eager_us(ours(0)),
        "bf16_eager_us": eager_us(bf16(0)),
        "rel_l2_error_vs_dequantized_fp32": rel,
        "packed_bytes": packed_bytes,
    }
    if config is None and m <= 16:  # both launch orderings of the decode kernels, whichever is the default
        plain_launch = functools.partial(ours, pdl=False)
        dependent_launch = functools.partial(ours, pdl=True)
        row["w4a16_graph_us_plain_launch"] = graph_time_us(plain_launch, copies)
        row["w4a16_graph_us_pdl"] = graph_time_us(dependent_launch, copies)
        if m == 1:
            row["w4a16_graph_us_after_a_plain_kernel"] = after_a_plain_kernel_us(plain_launch, copies, x)
            row["w4a16_graph_us_after_a_plain_kernel_pdl"] = after_a_plain_kernel_us(dependent_launch, copies, x)
            row["bf16_graph_us_after_a_plain_kernel"] = after_a_plain_kernel_us(bf16, bf_copies, x)
        row["plain_pytorch_eager_us"] = eager_us(plain)
        row["plain_pytorch_graph_us"] = graph_time_us(plain_call, copies)
        # eager through a served layer's W4A16Layer (its launch kept after the first call, then replayed)
        layer = kw.W4A16Layer(p0, s0, g0, in_features=k, workspace=workspaces[0])
        layer(x)
        row["w4a16_layer_eager_us"] = eager_us(lambda: layer(x))
        row["speedup_vs_plain_pytorch_layer_eager"] = row["plain_pytorch_eager_us"] / row["w4a16_layer_eager_us"]
        row["sustained_us"] = {"w4a16_linear": sustained_us(ours(0)), "w4a16_layer": sustained_us(lambda: layer(x)),
                               "bf16_linear": sustained_us(bf16(0)), "plain_pytorch": sustained_us(plain, 50)}
        row["speedup_vs_plain_pytorch_graph"] = row["plain_pytorch_graph_us"] / row["w4a16_graph_us"]
    row["speedup_vs_bf16_graph"] = row["bf16_graph_us"] / row["w4a16_graph_us"]
    row["speedup_vs_bf16_eager"] = row["bf16_eager_us"] / row["w4a16_eager_us"]
    row["packed_bw_fraction_of_copy"] = packed_bytes / (row["w4a16_graph_us"] * 1e-6) / bw
    if "plain_pytorch_eager_us" in row:
        row["speedup_vs_plain_pytorch_eager"] = row["plain_pytorch_eager_us"] / row["w4a16_eager_us"]
    if m > 16:
        flops = 2 * m * n * k
        row["w4a16_tflops"] = flops / (row["w4a16_graph_us"] * 1e-6) / 1e12
        row["bf16_tflops"] = flops / (row["bf16_graph_us"] * 1e-6) / 1e12
    del q, dense
    torch.cuda.empty_cache()
    return row


def moe_case(bw: float, experts: int = 128, topk: int = 6, n: int = 3712, k: int = 2688, tokens: int = 1) -> dict:
    bank_w, bank_s, bank_g = [], [], []
    for e in range(experts):
        p, s, g = packed(n, k, 1000 + e)
        bank_w.append(p), bank_s.append(s), bank_g.append(g)
    W, S, G = torch.stack(bank_w), torch.stack(bank_s), torch.cat(bank_g)
    del bank_w, bank_s, bank_g
    dense = dequantize_nvfp4(W, S, G, dtype=torch.bfloat16)  # (E, N, K) bf16: 2.4 GiB for the default shape
    x = torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16)
    copies = 8  # each call routes to other experts, so consecutive calls do not find their experts in L2
    id_sets = [torch.stack([torch.randperm(experts, device="cuda")[:topk] for _ in range(tokens)]).to(torch.int32)
               for _ in range(copies)]
    host_sets = [ids.cpu().tolist() for ids in id_sets]
    host_ids = host_sets[0]

    def ours_call(i):
        return lambda: kw.w4a16_moe(x, id_sets[i], W, S, G)

    def bf16_call(i):  # the best case for bf16: ids known on the host, one cuBLAS call per routed expert
        chosen = host_sets[i]
        return lambda: [F.linear(x[t : t + 1], dense[e]) for t in range(tokens) for e in chosen[t]]

    ours, bf16 = ours_call(0), bf16_call(0)

    def plain_call(i):  # plain PyTorch: dequantize the active experts, then matmul
        def plain():
            active = id_sets[i].reshape(-1).long()
            w = dequantize_nvfp4(W[active], S[active], G[active], dtype=torch.bfloat16)
            return torch.einsum("tk,tjnk->tjn", x, w.view(tokens, topk, n, k))
        return plain

    plain = plain_call(0)

    y = ours()
    ref = torch.stack([torch.stack([F.linear(x[t].float(), dequantize_nvfp4(W[e], S[e], G[e])) for e in host_ids[t]]) for t in range(tokens)])
    rel = float((y.float() - ref).norm() / ref.norm())
    active_bytes = tokens * topk * (n * (k // 2) + n * (k // 16))
    row = {
        "experts": experts, "topk": topk, "N": n, "K": k, "tokens": tokens,
        "w4a16_graph_us": graph_time_us(ours_call, copies, reps=50),
        "bf16_graph_us": graph_time_us(bf16_call, copies, reps=50),
        "w4a16_eager_us": eager_us(ours),
        "bf16_eager_us": eager_us(bf16),
        "plain_pytorch_eager_us": eager_us(plain),
        "plain_pytorch_graph_us": graph_time_us(plain_call, copies, reps=50),
        "rel_l2_error_vs_dequantized_fp32": rel,
        "active_packed_bytes": active_bytes,
        "all_experts_bf16_gib": dense.numel() * 2 / 2**30,
        "all_experts_nvfp4_gib": (W.numel() + S.numel() + G.numel() * 4) / 2**30,
    }
    row["speedup_vs_bf16_graph"] = row["bf16_graph_us"] / row["w4a16_graph_us"]
    row["speedup_vs_bf16_eager"] = row["bf16_eager_us"] / row["w4a16_eager_us"]
    row["speedup_vs_plain_pytorch_eager"] = row["plain_pytorch_eager_us"] / row["w4a16_eager_us"]
    row["speedup_vs_plain_pytorch_graph"] = row["plain_pytorch_graph_us"] / row["w4a16_graph_us"]
    row["packed_bw_fraction_of_copy"] = active_bytes / (row["w4a16_graph_us"] * 1e-6) / bw
    del W, S, G, dense
    torch.cuda.empty_cache()
    return row


SWEEP_CONFIGS = [(32, 128, 4), (16, 512, 4), (32, 256, 4), (32, 512, 4), (64, 256, 4), (64, 512, 8), (128, 256, 8)]
# BLOCK_N, BLOCK_G, warps, prefetch depth
GEMV_SWEEP = [(16, 16, 4, 1), (16, 16, 4, 2), (16, 16, 2, 1), (16, 16, 2, 2), (32, 16, 4, 2), (32, 32, 4, 1), (16, 32, 4, 1),
              (32, 16, 2, 2), (64, 16, 8, 2), (8, 16, 1, 2), (32, 8, 4, 2)]


def gemv_sweep(bw: float) -> list[dict]:
    """The GEMV kernel at M = 1 on every decode shape: tile sizes x split-K, GPU time in a CUDA graph only."""
    rows = []
    launcher = load_launcher("_w4a16_triton")
    for n, k in DECODE_SHAPES:
        packed_bytes = n * (k // 2) + n * (k // 16) + 4
        copies = max(2, min(64, -(-L2_ROTATE_BYTES // packed_bytes)))
        q = [packed(n, k, i) for i in range(copies)]
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
        ref = F.linear(x.float(), dequantize_nvfp4(*q[0]))
        for block_n, block_g, warps, prefetch in GEMV_SWEEP:
            for split_k in (1, 2, 4, 8):
                config = {"BLOCK_N": block_n, "BLOCK_G": block_g, "SPLIT_K": split_k, "num_warps": warps, "PREFETCH": prefetch}

                def call(i, config=config):
                    p, s, g = q[i]
                    w64, su8 = kw.packed_words(p), s.view(torch.uint8)
                    return lambda: launcher.gemv(x, w64, su8, g, None, out, k, False, config)

                try:
                    call(0)()
                    rel = float((out.float() - ref).norm() / ref.norm())
                    us = graph_time_us(call, copies)
                    row = {"N": n, "K": k, "config": config, "w4a16_graph_us": us, "rel_l2_error_vs_dequantized_fp32": rel,
                           "packed_bw_fraction_of_copy": packed_bytes / (us * 1e-6) / bw}
                except Exception as exc:  # noqa: BLE001 - a config that fails is recorded, not fatal
                    row = {"N": n, "K": k, "config": config, "error": f"{type(exc).__name__}: {exc}"[:300]}
                rows.append(row)
                print("gemv", json.dumps({key: row.get(key) for key in ("N", "K", "config", "w4a16_graph_us", "packed_bw_fraction_of_copy", "rel_l2_error_vs_dequantized_fp32", "error")}), flush=True)
        del q
        torch.cuda.empty_cache()
    return rows


def sweep(bw: float) -> list[dict]:
    """M=1 at 4096x4096 for a few (BLOCK_N, BLOCK_K, num_warps), split-K filling the GPU: tuning data."""
    rows = []
    n, k = DECODE_SHAPES[0]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for block_n, block_k, warps in SWEEP_CONFIGS:
        split_k = max(1, min(-(-2 * sms // -(-n // block_n)), k // block_k, 16))
        config = {"BLOCK_M": 16, "BLOCK_N": block_n, "BLOCK_K": block_k, "SPLIT_K": split_k, "num_warps": warps, "num_stages": 3}
        try:
            row = linear_case(1, n, k, bw, config)
        except Exception as exc:  # noqa: BLE001 - a config that does not compile is recorded, not fatal
            row = {"N": n, "K": k, "config": config, "error": f"{type(exc).__name__}: {exc}"[:300]}
        rows.append(row)
        print("sweep", json.dumps({key: row.get(key) for key in ("config", "w4a16_graph_us", "packed_bw_fraction_of_copy", "error")}), flush=True)
    return rows


def environment() -> dict:
    import triton
    import transformers

    props = torch.cuda.get_device_properties(0)
    launcher = load_launcher("_w4a16_triton")
    return {
        "gpu": torch.cuda.get_device_name(0),
        "sm": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "gemv_pdl_default": bool(launcher.GEMV_PDL),
        "mma_pdl_default": bool(launcher.MMA_PDL),
        "decode_pdl_supported": bool(launcher.pdl_supported(torch.device("cuda", 0))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "w4a16-h100.json")
    parser.add_argument("--sweep", action="store_true", help="also time a grid of tile configs at M=1")
    parser.add_argument("--gemv-sweep", action="store_true", help="time the GEMV kernel's tile grid at M=1 first")
    parser.add_argument("--quick", action="store_true", help="decode shapes only")
    parser.add_argument("--lean", action="store_true", help="M=1 and 16 decode, M=64 and 2048 prefill, MoE at one token")
    parser.add_argument("--shapes", default="", help="decode N x K shapes instead of the default ones: 4096x21504,...")
    args = parser.parse_args()
    torch.manual_seed(0)
    bw = copy_bandwidth()
    result = {"environment": environment(), "copy_bandwidth_gbps": bw / 1e9, "decode": [], "prefill": [], "moe": []}
    print(json.dumps(result["environment"]), f"copy {bw / 1e9:.0f} GB/s", flush=True)
    if args.gemv_sweep:
        result["gemv_sweep"] = gemv_sweep(bw)
    decode_shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")] if args.shapes else DECODE_SHAPES
    for n, k in decode_shapes:
        for m in ((1, 16) if args.lean else (1, 4, 16)):
            row = linear_case(m, n, k, bw)
            result["decode"].append(row)
            print(f"decode M={m:<3} {n}x{k}: w4a16 {row['w4a16_graph_us']:.1f} us (graph) / {row['w4a16_eager_us']:.1f} eager; "
                  f"bf16 {row['bf16_graph_us']:.1f} / {row['bf16_eager_us']:.1f}; x{row['speedup_vs_bf16_graph']:.2f} vs bf16 (graph), "
                  f"{row['packed_bw_fraction_of_copy']:.0%} of copy bw"
                  + (f", x{row['speedup_vs_plain_pytorch_eager']:.1f} (eager) / x{row['speedup_vs_plain_pytorch_graph']:.1f} "
                     "(graph) vs plain PyTorch" if "speedup_vs_plain_pytorch_eager" in row else "")
                  + (f"; plain launch {row['w4a16_graph_us_plain_launch']:.1f} / with PDL {row['w4a16_graph_us_pdl']:.1f} us"
                     if "w4a16_graph_us_pdl" in row else "")
                  + (f"; layer eager {row['w4a16_layer_eager_us']:.1f} us (x{row['speedup_vs_plain_pytorch_layer_eager']:.1f} "
                     "vs plain PyTorch); sustained us/call " + " / ".join(f"{key} {value:.1f}" for key, value in
                                                                          row["sustained_us"].items())
                     if "sustained_us" in row else "")
                  + (f"; after a plain kernel {row['w4a16_graph_us_after_a_plain_kernel']:.1f} / with PDL "
                     f"{row['w4a16_graph_us_after_a_plain_kernel_pdl']:.1f} / bf16 {row['bf16_graph_us_after_a_plain_kernel']:.1f} us"
                     if "w4a16_graph_us_after_a_plain_kernel" in row else ""),
                  flush=True)
    if not args.quick:
        for n, k in PREFILL_SHAPES:
            for m in ((64, 2048) if args.lean else (32, 64, 128, 2048, 4096)):
                row = linear_case(m, n, k, bw)
                result["prefill"].append(row)
                print(f"prefill M={m:<5} {n}x{k}: w4a16 {row['w4a16_graph_us']:.1f} us, bf16 {row['bf16_graph_us']:.1f} us: "
                      f"x{row['speedup_vs_bf16_graph']:.2f} of bf16 throughput", flush=True)
        for tokens in ((1,) if args.lean else (1, 4)):
            row = moe_case(bw, tokens=tokens)
            result["moe"].append(row)
            print(f"moe decode T={tokens} 128 experts top6 {row['N']}x{row['K']}: w4a16 {row['w4a16_graph_us']:.1f} us (graph) / "
                  f"{row['w4a16_eager_us']:.1f} eager; bf16 {row['bf16_graph_us']:.1f} / {row['bf16_eager_us']:.1f}; "
                  f"plain PyTorch {row['plain_pytorch_graph_us']:.1f} / {row['plain_pytorch_eager_us']:.1f}; "
                  f"x{row['speedup_vs_bf16_graph']:.2f} vs bf16 (graph), x{row['speedup_vs_plain_pytorch_graph']:.1f} vs plain PyTorch "
                  "(graph)", flush=True)
    if args.sweep:
        result["sweep"] = sweep(bw)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
