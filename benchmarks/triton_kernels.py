"""Benchmark hybridload's Triton kernels on a GPU against the copy bandwidth and plain PyTorch, same run.

For every kernel and realistic size (Nemotron-H-like: hidden 2688-4096, Mamba2 d_inner 8192 in 8 groups,
conv dim 10240, 128 heads x 64 x dstate 128; 1 to 32k tokens) it prints and records:

* bytes moved: every input read once plus every output written once (broadcast strides counted once);
* achieved bandwidth = bytes / median time, and its fraction of the device-to-device copy bandwidth
  measured at the start of the run (``dst.copy_(src)`` of 1 GiB, read + write counted);
* the speed-up over plain PyTorch (``hybridload.reference``, eager) and, where the real package imports,
  over the real kernel.

Times are medians of ``triton.testing.do_bench`` (CUDA events; L2 flushed before every call). Decode
kernels also get ``host us/call``: a host-timed loop, launch overhead included, what one decode step costs.

Usage: ``python benchmarks/triton_kernels.py [--sweep] [--out DIR]``. ``--sweep`` first times block-size variants
of each kernel on its largest input (each checked against the reference) to choose the defaults.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HYBRIDLOAD_DISABLE", "1")  # the transformers integration is irrelevant here

import triton  # noqa: E402
from triton.testing import do_bench, do_bench_cudagraph  # noqa: E402

from hybridload import kernels  # noqa: E402
from hybridload.kernels import _causal_conv1d_triton as conv_triton  # noqa: E402
from hybridload.kernels import _layernorm_gated_triton as norm_triton  # noqa: E402
from hybridload.kernels import _ssm_state_update_triton as ssu_triton  # noqa: E402
from hybridload.kernels.tolerances import within_tolerance  # noqa: E402
from hybridload.reference import causal_conv1d as ref_conv  # noqa: E402
from hybridload.reference import mamba_ssm as ref_mamba  # noqa: E402

DEV = "cuda"
BF16 = torch.bfloat16


def unique_bytes(*tensors: torch.Tensor | None) -> int:
    """Bytes of the distinct elements a tensor addresses (a zero-stride axis counts once)."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        n = math.prod(size for size, stride in zip(t.shape, t.stride()) if stride != 0)
        total += n * t.element_size()
    return total


def median_us(fn: Callable[[], Any]) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3


def graph_us(fn: Callable[[], Any]) -> float | None:
    """GPU time per call with launch overhead removed (CUDA-graph replay, median); None if not capturable.

    L2 is not flushed between replays: inputs under ~50 MB may be served partly from L2.
    """
    try:
        return do_bench_cudagraph(fn, rep=20, return_mode="median") * 1e3
    except Exception:
        torch.cuda.synchronize()
        return None


def host_us(fn: Callable[[], Any], iters: int = 200) -> float:
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1e6


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written)."""
    src = torch.randn(2**29, device=DEV, dtype=BF16)  # 1 GiB
    dst = torch.empty_like(src)
    t = median_us(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / t / 1e3


def real_module(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except Exception:  # absent or broken: exactly the case the fallbacks exist for
        return None


# --------------------------------------------------------------------------- cases
# Each case: (name, make) where make() -> dict(ours=fn, torch=fn, real=fn|None, bytes=int, decode=bool)


def norm_case(tokens: int, hidden: int, group: int | None, gated: bool) -> Callable[[], dict]:
    def make() -> dict:
        x = torch.randn(tokens, hidden, device=DEV, dtype=BF16)
        z = torch.randn(tokens, hidden, device=DEV, dtype=BF16) if gated else None
        w = torch.randn(hidden, device=DEV, dtype=BF16)
        kw = dict(z=z, eps=1e-5, group_size=group, norm_before_gate=False)
        real = real_module("mamba_ssm.ops.triton.layernorm_gated")
        out = torch.empty_like(x)
        return dict(
            ours=lambda: kernels.rmsnorm_fn(x, w, None, **kw),
            torch=lambda: ref_mamba.rmsnorm_fn(x, w, None, **kw),
            real=(lambda: real.rmsnorm_fn(x, w, None, **kw)) if real else None,
            bytes=unique_bytes(x, z, w, out),
            decode=tokens <= 256,
        )

    return make


def conv_case(batch: int, seqlen: int, dim: int, layout: str, seq_idx: bool = False) -> Callable[[], dict]:
    def make() -> dict:
        if layout == "channel-last":
            x = torch.randn(batch, seqlen, dim, device=DEV, dtype=BF16).transpose(1, 2)
        else:
            x = torch.randn(batch, dim, seqlen, device=DEV, dtype=BF16)
        w = torch.randn(dim, 4, device=DEV, dtype=BF16)
        b = torch.randn(dim, device=DEV, dtype=BF16)
        s = None
        if seq_idx:
            s = (torch.arange(seqlen, device=DEV) // 1000).to(torch.int32)[None].expand(batch, seqlen).contiguous()
        real = real_module("causal_conv1d")
        return dict(
            ours=lambda: kernels.causal_conv1d_fn(x, w, b, seq_idx=s, activation="silu"),
            torch=lambda: ref_conv.causal_conv1d_fn(x, w, b, seq_idx=s, activation="silu"),
            real=(lambda: real.causal_conv1d_fn(x, w, b, seq_idx=s, activation="silu")) if real else None,
            bytes=unique_bytes(x, w, b, s, x),  # x read, out (same size) written
            decode=False,
        )

    return make


def update_case(batch: int, dim: int) -> Callable[[], dict]:
    def make() -> dict:
        x = torch.randn(batch, dim, device=DEV, dtype=BF16)
        state = torch.randn(batch, dim, 4, device=DEV, dtype=BF16)
        state_ref = state.clone()
        w = torch.randn(dim, 4, device=DEV, dtype=BF16)
        b = torch.randn(dim, device=DEV, dtype=BF16)
        real = real_module("causal_conv1d")
        return dict(
            ours=lambda: kernels.causal_conv1d_update(x, state, w, b, "silu"),
            torch=lambda: ref_conv.causal_conv1d_update(x, state_ref, w, b, "silu"),
            real=(lambda: real.causal_conv1d_update(x, state_ref, w, b, "silu")) if real else None,
            bytes=unique_bytes(x, w, b, x) + 2 * unique_bytes(state),  # state read and rewritten
            decode=True,
        )

    return make


def ssu_case(batch: int, state_dtype: torch.dtype, nheads: int = 128, dim: int = 64, dstate: int = 128,
             ngroups: int = 8) -> Callable[[], dict]:
    def make() -> dict:
        state = torch.randn(batch, nheads, dim, dstate, device=DEV, dtype=state_dtype)
        state_ref = state.clone()
        args = dict(
            x=torch.randn(batch, nheads, dim, device=DEV, dtype=BF16),
            dt=torch.randn(batch, nheads, device=DEV, dtype=BF16)[..., None].expand(batch, nheads, dim),
            A=-torch.rand(nheads, device=DEV)[:, None, None].expand(nheads, dim, dstate),
            B=torch.randn(batch, ngroups, dstate, device=DEV, dtype=BF16),
            C=torch.randn(batch, ngroups, dstate, device=DEV, dtype=BF16),
            D=torch.randn(nheads, device=DEV)[:, None].expand(nheads, dim),
            z=torch.randn(batch, nheads, dim, device=DEV, dtype=BF16),
            dt_bias=torch.randn(nheads, device=DEV)[:, None].expand(nheads, dim),
            dt_softplus=True,
        )
        real = real_module("mamba_ssm.ops.triton.selective_state_update")
        tensors = [v for v in args.values() if isinstance(v, torch.Tensor)]
        return dict(
            ours=lambda: kernels.selective_state_update(state, **args),
            torch=lambda: ref_mamba.selective_state_update(state_ref, **args),
            real=(lambda: real.selective_state_update(state_ref, **args)) if real else None,
            bytes=unique_bytes(*tensors, args["x"]) + 2 * unique_bytes(state),  # + out; state read and written
            decode=True,
        )

    return make


CASES: list[tuple[str, str, Callable[[], dict]]] = [
    ("rmsnorm_fn", "1 tok x 4096", norm_case(1, 4096, None, False)),
    ("rmsnorm_fn", "512 tok x 4096", norm_case(512, 4096, None, False)),
    ("rmsnorm_fn", "4k tok x 4096", norm_case(4096, 4096, None, False)),
    ("rmsnorm_fn", "32k tok x 4096", norm_case(32768, 4096, None, False)),
    ("rmsnorm_fn", "4k tok x 2688", norm_case(4096, 2688, None, False)),
    ("rmsnorm_fn", "32k tok x 2688", norm_case(32768, 2688, None, False)),
    ("rmsnorm_fn", "gated 1 tok x 8192/8g", norm_case(1, 8192, 1024, True)),
    ("rmsnorm_fn", "gated 4k tok x 8192/8g", norm_case(4096, 8192, 1024, True)),
    ("rmsnorm_fn", "gated 32k tok x 8192/8g", norm_case(32768, 8192, 1024, True)),
    ("causal_conv1d_fn", "ch-last 1x512 x 10240", conv_case(1, 512, 10240, "channel-last")),
    ("causal_conv1d_fn", "ch-last 1x4k x 10240", conv_case(1, 4096, 10240, "channel-last")),
    ("causal_conv1d_fn", "ch-last 1x32k x 10240", conv_case(1, 32768, 10240, "channel-last")),
    ("causal_conv1d_fn", "ch-last 8x4k x 10240", conv_case(8, 4096, 10240, "channel-last")),
    ("causal_conv1d_fn", "ch-last 1x32k seq_idx", conv_case(1, 32768, 10240, "channel-last", seq_idx=True)),
    ("causal_conv1d_fn", "contig 1x4k x 8192", conv_case(1, 4096, 8192, "contiguous")),
    ("causal_conv1d_fn", "contig 1x32k x 8192", conv_case(1, 32768, 8192, "contiguous")),
    ("causal_conv1d_update", "batch 1 x 10240", update_case(1, 10240)),
    ("causal_conv1d_update", "batch 64 x 10240", update_case(64, 10240)),
    ("causal_conv1d_update", "batch 256 x 10240", update_case(256, 10240)),
    ("selective_state_update", "batch 1, fp32 state", ssu_case(1, torch.float32)),
    ("selective_state_update", "batch 16, fp32 state", ssu_case(16, torch.float32)),
    ("selective_state_update", "batch 64, fp32 state", ssu_case(64, torch.float32)),
    ("selective_state_update", "batch 64, bf16 state", ssu_case(64, BF16)),
]


def run_case(kernel: str, name: str, make: Callable[[], dict], copy_gbs: float) -> dict:
    case = make()
    # correctness first, on this very input (in-place kernels start from equal copies of the state)
    first = case["ours"]()
    ok = within_tolerance(first[0] if isinstance(first, tuple) else first, case["torch"]())
    t_ours = median_us(case["ours"])
    t_torch = median_us(case["torch"])
    t_real = median_us(case["real"]) if case["real"] is not None else None
    g_ours = graph_us(case["ours"])
    g_torch = graph_us(case["torch"])
    row = dict(
        kernel=kernel, case=name, ok=ok, bytes=case["bytes"], ours_us=t_ours, torch_us=t_torch, real_us=t_real,
        ours_gpu_us=g_ours, torch_gpu_us=g_torch,
        ours_gbs=case["bytes"] / t_ours / 1e3, frac_copy=case["bytes"] / t_ours / 1e3 / copy_gbs,
        frac_copy_gpu=(case["bytes"] / g_ours / 1e3 / copy_gbs) if g_ours else None,
        speedup_vs_torch=t_torch / t_ours, speedup_vs_real=(t_real / t_ours) if t_real else None,
        gpu_speedup_vs_torch=(g_torch / g_ours) if g_ours and g_torch else None,
    )
    if case["decode"]:
        row["ours_host_us"] = host_us(case["ours"])
        row["torch_host_us"] = host_us(case["torch"])
    del case
    torch.cuda.empty_cache()
    return row


# --------------------------------------------------------------------------- block-size sweep


def sweep(rows: list[dict], tokens: int = 32768, conv_dim: int = 10240, decode_batch: int = 64) -> None:
    """Time block-size variants on the largest inputs; each variant's output is checked first."""

    def record(
        kernel: str, config: str, fn: Callable[..., torch.Tensor], ref: torch.Tensor, nbytes: int,
        state: torch.Tensor | None = None,
    ) -> None:
        """fn(state) for in-place kernels: checked on a clone of the state, timed on the state itself."""
        ok = within_tolerance(fn(state.clone()) if state is not None else fn(None), ref)
        saved = state.clone() if state is not None else None
        t = median_us(lambda: fn(state))
        if state is not None:
            state.copy_(saved)  # the next variant is checked against the reference of the original state
        rows.append(dict(kernel=kernel, config=config, ok=ok, us=t, gbs=nbytes / t / 1e3))
        print(f"  sweep {kernel:38s} {config:24s} {'ok ' if ok else 'BAD'} {t:9.1f} us {nbytes / t / 1e3:7.0f} GB/s",
              flush=True)

    for hidden, group, gated in ((4096, 4096, False), (8192, 1024, True)):
        x = torch.randn(tokens, hidden, device=DEV, dtype=BF16)
        z = torch.randn_like(x) if gated else None
        w = torch.randn(hidden, device=DEV, dtype=BF16)
        ref = ref_mamba.rmsnorm_fn(x, w, None, z=z, eps=1e-5, group_size=group, norm_before_gate=False)
        nbytes = unique_bytes(x, z, x)
        for block_m in (1, 2, 4, 8):
            for warps in (4, 8, 16):
                if block_m * triton.next_power_of_2(group) // (32 * warps) < 1:
                    continue
                record(
                    f"rmsnorm 32k x {hidden}/g{group}", f"block_m={block_m} warps={warps}",
                    lambda _: norm_triton.layer_norm_fwd(x, w, None, z, 1e-5, group, False, True, block_m, warps),
                    ref, nbytes,
                )
        del x, z, ref

    for layout, configs in (
        ("channel-last", [(32, 128, 4), (16, 256, 4), (32, 256, 4), (64, 256, 4), (8, 512, 4), (16, 512, 4),
                          (32, 512, 8), (16, 256, 2), (16, 1024, 8)]),
        ("contiguous", [(128, 16, 4), (256, 16, 4), (512, 16, 4), (256, 8, 2), (512, 8, 4), (1024, 8, 8),
                        (2048, 4, 8)]),
    ):
        dim = conv_dim
        x = (torch.randn(1, tokens, dim, device=DEV, dtype=BF16).transpose(1, 2) if layout == "channel-last"
             else torch.randn(1, dim, tokens, device=DEV, dtype=BF16))
        w = torch.randn(dim, 4, device=DEV, dtype=BF16)
        b = torch.randn(dim, device=DEV, dtype=BF16)
        ref = ref_conv.causal_conv1d_fn(x, w, b, activation="silu")
        for bl, bd, warps in configs:
            record(
                f"causal_conv1d_fn {layout} 1x32k", f"L={bl} D={bd} warps={warps}",
                lambda _: conv_triton.causal_conv1d_fwd(x, w, b, None, None, None, True, bl, bd, warps),
                ref, unique_bytes(x, x),
            )
        del x, ref

    x = torch.randn(4 * decode_batch, conv_dim, 1, device=DEV, dtype=BF16)
    w = torch.randn(conv_dim, 4, device=DEV, dtype=BF16)
    state = torch.randn(4 * decode_batch, conv_dim, 4, device=DEV, dtype=BF16)
    ref = ref_conv.causal_conv1d_update(x, state.clone(), w, None, "silu")
    for bd, warps in ((64, 1), (64, 2), (128, 2), (128, 4), (256, 4), (512, 4), (256, 8)):
        record(
            "causal_conv1d_update batch 256", f"D={bd} warps={warps}",
            lambda st: conv_triton.causal_conv1d_update(x, st, w, None, True, None, None, bd, warps),
            ref, unique_bytes(x, x) + 2 * unique_bytes(state), state,
        )

    nb = decode_batch
    case_state = torch.randn(nb, 128, 64, 128, device=DEV)
    a = dict(
        x=torch.randn(nb, 128, 64, device=DEV, dtype=BF16),
        dt=torch.randn(nb, 128, 64, device=DEV, dtype=BF16), A=-torch.rand(128, 64, 128, device=DEV),
        B=torch.randn(nb, 8, 128, device=DEV, dtype=BF16), C=torch.randn(nb, 8, 128, device=DEV, dtype=BF16),
        D=torch.randn(128, 64, device=DEV), z=torch.randn(nb, 128, 64, device=DEV, dtype=BF16),
        dt_bias=torch.randn(128, 64, device=DEV),
    )
    ref = ref_mamba.selective_state_update(case_state.clone(), **a, dt_softplus=True)
    nbytes = 2 * unique_bytes(case_state) + unique_bytes(*a.values(), a["x"])
    for block_m in (4, 8, 16, 32):
        for warps in (4, 8):
            record(
                "selective_state_update batch 64 fp32", f"block_m={block_m} warps={warps}",
                lambda st: ssu_triton.selective_state_update(
                    st, a["x"], a["dt"], a["A"], a["B"], a["C"], a["D"], a["z"], a["dt_bias"], True, None,
                    block_m, warps,
                ),
                ref, nbytes, case_state,
            )


def profile_host() -> None:
    """Where the host time of one decode-size call goes (the launch overhead a decode step pays)."""
    import cProfile
    import pstats

    for kernel, name, make in CASES:
        if name not in ("1 tok x 4096", "batch 64 x 10240", "batch 1, fp32 state"):
            continue
        fn = make()["ours"]
        host_us(fn)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(500):
            fn()
        profiler.disable()
        torch.cuda.synchronize()
        print(f"--- host profile: {kernel} {name} (500 calls)")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


# --------------------------------------------------------------------------- report


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"# hybridload.kernels benchmark ({meta['device']})",
        "",
        f"torch {meta['torch']}, triton {meta['triton']}; copy bandwidth {meta['copy_gbs']:.0f} GB/s "
        "(device-to-device `copy_` of 1 GiB, read + write).",
        "",
        "* *eager us*: median of `triton.testing.do_bench` (CUDA events, L2 flushed before each call); for "
        "small inputs this includes the Python launch overhead that the GPU waits for.",
        "* *GPU us*: median of `do_bench_cudagraph` (graph replay: launch overhead removed, L2 not flushed, "
        "so inputs under ~50 MB can be partly L2-resident).",
        "* *GB/s*, *% of copy*: MB moved (inputs read once + outputs written once) / eager time (conservative: "
        "L2 flushed, overhead included); *% of copy (GPU)*: the same over GPU time.",
        "* *vs torch*: plain PyTorch (hybridload.reference, eager) time / ours, eager and GPU (graph) time.",
        "* *host us/call*: host-timed loop of calls (decode cases): what one call costs the host.",
        "",
        "| kernel | case | matches ref | MB moved | eager us | GPU us | GB/s | % of copy | % of copy (GPU) "
        "| torch eager us | vs torch (eager) | vs torch (GPU) | real us | host us/call (ours / torch) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        real = f"{r['real_us']:.1f}" if r["real_us"] else "n/a"
        host = f"{r['ours_host_us']:.1f} / {r['torch_host_us']:.1f}" if "ours_host_us" in r else ""
        gpu = f"{r['ours_gpu_us']:.1f}" if r["ours_gpu_us"] else "n/a"
        gpu_vs = f"{r['gpu_speedup_vs_torch']:.1f}x" if r["gpu_speedup_vs_torch"] else "n/a"
        frac_gpu = f"{100 * r['frac_copy_gpu']:.0f}%" if r["frac_copy_gpu"] else "n/a"
        lines.append(
            f"| {r['kernel']} | {r['case']} | {'yes' if r['ok'] else 'NO'} | {r['bytes'] / 1e6:.2f} | "
            f"{r['ours_us']:.1f} | {gpu} | {r['ours_gbs']:.0f} | {100 * r['frac_copy']:.0f}% | {frac_gpu} | "
            f"{r['torch_us']:.1f} | {r['speedup_vs_torch']:.1f}x | {gpu_vs} | {real} | {host} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="time block-size variants first")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--tag", default=None, help="file name suffix (default: the GPU name)")
    parser.add_argument("--profile", action="store_true", help="cProfile the host side of decode-size calls")
    args = parser.parse_args()
    if not kernels.available():
        raise SystemExit("needs CUDA and triton (hybridload.kernels.available() is False)")

    props = torch.cuda.get_device_properties(0)
    copy_gbs = copy_bandwidth()
    meta = dict(
        device=props.name, sms=props.multi_processor_count, torch=torch.__version__, triton=triton.__version__,
        python=platform.python_version(), copy_gbs=copy_gbs,
        real_packages={m: real_module(m) is not None for m in ("mamba_ssm", "causal_conv1d")},
    )
    print(f"{props.name}: copy bandwidth {copy_gbs:.0f} GB/s", flush=True)
    if args.profile:
        profile_host()
    sweep_rows: list[dict] = []
    if args.sweep:
        try:
            sweep(sweep_rows)
        except Exception as exc:
            print(f"sweep FAILED: {type(exc).__name__}: {exc}", flush=True)
    rows = []
    failures = []
    for kernel, name, make in CASES:
        try:
            row = run_case(kernel, name, make, copy_gbs)
        except Exception as exc:  # keep measuring the other cases; report the failure
            failures.append(f"{kernel} {name}: {type(exc).__name__}: {exc}")
            print("FAILED", failures[-1], flush=True)
            torch.cuda.empty_cache()
            continue
        rows.append(row)
        print(
            f"{'ok ' if row['ok'] else 'BAD'} {kernel:24s} {name:26s} {row['ours_us']:9.1f} us "
            f"(GPU {row['ours_gpu_us'] or float('nan'):8.1f}) {row['ours_gbs']:6.0f} GB/s "
            f"{100 * row['frac_copy']:4.0f}% copy  torch {row['torch_us']:9.1f} us  x{row['speedup_vs_torch']:.1f}",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag or props.name.replace("NVIDIA ", "").replace(" ", "-").lower()
    record = dict(meta=meta, rows=rows, sweep=sweep_rows, failures=failures)
    (out / f"kernels-{tag}.json").write_text(json.dumps(record, indent=1))
    (out / f"kernels-{tag}.md").write_text(markdown(meta, rows))
    print()
    print(markdown(meta, rows))


if __name__ == "__main__":
    main()
