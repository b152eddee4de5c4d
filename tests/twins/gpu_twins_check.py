"""GPU check of the fla twins and references against the real fla kernels (a script, run on a CUDA host).

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl   # fla-core + flash-linear-attention
    PYTHONPATH=/tmp/site:src:tests/twins python3 tests/twins/gpu_twins_check.py --out $OUT

It (1) re-records the fla goldens with the real classes and compares them with the committed
``tests/data/goldens/fla.json``; (2) runs every fla reference function and every fla twin's forward next to
the real Triton kernels/modules on the same CUDA inputs and records the error against dtype tolerances.
Results are written after every check (``gpu_twins_check.json``), so a timeout still leaves what ran.

Triton autotuning is cut to the first two configs of each kernel (compile time; configs change tiling,
not the math). ``--dry-run`` exercises the plumbing on a CPU by comparing the references with themselves.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HYBRIDLOAD_DISABLE", "1")
_ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(_ROOT / "src"), str(Path(__file__).resolve().parent)]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hybridload.reference import fla as ref  # noqa: E402
from hybridload.twins import DEFAULT_TWINS  # noqa: E402
from twin_golden_grid import GRID, build  # noqa: E402
from twin_goldens_io import load, record_package  # noqa: E402

#: relative error bound ``||real - ref|| / ||real||`` per input dtype
TOLERANCE = {torch.float32: 2e-3, torch.bfloat16: 2e-2, torch.float16: 5e-3}


class Report:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"environment": {}, "goldens": {}, "checks": []}

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")

    def check(self, name: str, dtype: torch.dtype, fn: Callable[[], dict[str, tuple[torch.Tensor, torch.Tensor]]]) -> None:
        started = time.time()
        entry: dict[str, Any] = {"name": name, "dtype": str(dtype).removeprefix("torch."), "tolerance": TOLERANCE[dtype]}
        try:
            outputs = fn()
            entry["outputs"] = {}
            ok = True
            for label, (real, mine) in outputs.items():
                if real is None or mine is None:
                    same = real is None and mine is None
                    entry["outputs"][label] = {"both_none": same}
                    ok &= same
                    continue
                shape_ok = tuple(real.shape) == tuple(mine.shape) and real.dtype == mine.dtype
                r, m = real.double(), mine.double()
                rel = ((r - m).norm() / r.norm().clamp_min(1e-30)).item()
                entry["outputs"][label] = {
                    "shape": list(real.shape),
                    "dtype": str(real.dtype).removeprefix("torch."),
                    "shape_and_dtype_match": shape_ok,
                    "max_abs_err": (r - m).abs().max().item() if r.numel() else 0.0,
                    "rel_err": rel,
                }
                ok &= shape_ok and rel <= TOLERANCE[dtype]
            entry["passed"] = bool(ok)
        except Exception as exc:  # record and go on: one failing kernel must not hide the others
            entry["passed"] = False
            entry["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            entry["traceback"] = traceback.format_exc()[-3000:]
        entry["seconds"] = round(time.time() - started, 2)
        self.data["checks"].append(entry)
        self.save()
        print(f"[{'ok' if entry['passed'] else 'FAIL'}] {name} ({entry['dtype']}, {entry['seconds']}s)", flush=True)


def limit_autotuning(keep: int = 2) -> None:
    from triton.runtime import autotuner

    original = autotuner.Autotuner.prune_configs

    def prune_configs(self: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, *args, **kwargs)[:keep]

    autotuner.Autotuner.prune_configs = prune_configs


def copy_into(twin: torch.nn.Module, real: torch.nn.Module) -> torch.nn.Module:
    missing = twin.load_state_dict(real.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    return twin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--dry-run", action="store_true", help="CPU plumbing check: references against themselves")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out / "gpu_twins_check.json")
    dry = args.dry_run
    device = "cpu" if dry else "cuda"

    import fla  # noqa: F401  (the real package)
    import fla.modules as fm
    from fla.ops.kda import chunk_kda, fused_recurrent_kda
    from fla.ops.kda.gate import fused_kda_gate

    if not dry:
        import triton

        limit_autotuning()
    report.data["environment"] = {
        "device": torch.cuda.get_device_name() if not dry else "cpu (dry run)",
        "torch": torch.__version__,
        "triton": None if dry else triton.__version__,
        "python": platform.python_version(),
        "fla_core": __import__("importlib.metadata").metadata.version("fla-core"),
        "autotune_configs_kept": None if dry else 2,
    }
    report.save()

    # ---- (1) goldens, re-recorded with the real classes here
    distribution, classes = GRID["fla"]
    started = time.time()
    recorded = record_package(
        "fla", classes, build, distribution=distribution, version=report.data["environment"]["fla_core"],
        how="constructed the real classes on the GPU host from the fla-core/flash-linear-attention wheels",
    )  # fmt: skip
    committed = load("fla")
    (args.out / "fla_goldens_gpu.json").write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    report.data["goldens"] = {
        "classes_equal_committed": recorded["classes"] == committed["classes"],
        "differing_classes": sorted(p for p in classes if recorded["classes"].get(p) != committed["classes"].get(p)),
        "seconds": round(time.time() - started, 2),
    }
    report.save()
    print("goldens equal committed:", report.data["goldens"]["classes_equal_committed"], flush=True)

    real_chunk = ref.chunk_kda if dry else chunk_kda
    real_recurrent = ref.fused_recurrent_kda if dry else fused_recurrent_kda
    real_gate = ref.fused_kda_gate if dry else fused_kda_gate

    g_ = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g_) * scale).to(device=device, dtype=dtype)

    B, T, H, HV, K, V = 2, 100, 2, 4, 64, 64

    def kda_inputs(dtype: torch.dtype, batch: int = B, length: int = T) -> dict[str, torch.Tensor]:
        return {
            "q": randn(batch, length, H, K, dtype=dtype),
            "k": F.normalize(randn(batch, length, H, K), dim=-1).to(dtype),
            "v": randn(batch, length, HV, V, dtype=dtype),
            "g": F.logsigmoid(randn(batch, length, HV, K)).mul(0.1).to(dtype),
            "beta": torch.rand(batch, length, HV, generator=g_).to(device=device, dtype=dtype),
        }

    # ---- (2a) KDA references vs kernels
    for dtype in (torch.bfloat16, torch.float32):

        def chunk_plain(dtype: torch.dtype = dtype) -> dict:
            x = kda_inputs(dtype)
            h0 = randn(B, HV, K, V, scale=0.1)
            o1, s1 = real_chunk(**x, initial_state=h0.clone(), output_final_state=True)
            o2, s2 = ref.chunk_kda(**x, initial_state=h0.clone(), output_final_state=True)
            return {"o": (o1, o2), "final_state": (s1, s2)}

        report.check("fla.ops.kda.chunk_kda (decayed g, h0, final state, GVA H=2 HV=4, T=100)", dtype, chunk_plain)

        def recurrent_plain(dtype: torch.dtype = dtype) -> dict:
            x = kda_inputs(dtype, length=24)
            h0 = randn(B, HV, K, V, scale=0.1)
            o1, s1 = real_recurrent(**x, initial_state=h0.clone(), output_final_state=True, use_qk_l2norm_in_kernel=True)
            o2, s2 = ref.fused_recurrent_kda(**x, initial_state=h0.clone(), output_final_state=True, use_qk_l2norm_in_kernel=True)
            return {"o": (o1, o2), "final_state": (s1, s2)}

        report.check("fla.ops.kda.fused_recurrent_kda (l2norm in kernel, h0, T=24)", dtype, recurrent_plain)

    def chunk_fused_gate() -> dict:
        x = kda_inputs(torch.bfloat16)
        x["g"] = randn(B, T, HV, K, dtype=torch.bfloat16)
        x["beta"] = randn(B, T, HV, dtype=torch.bfloat16)
        extra = {"A_log": randn(HV, scale=0.5), "dt_bias": randn(HV * K, scale=0.5)}
        flags = {"use_qk_l2norm_in_kernel": True, "use_gate_in_kernel": True, "use_beta_sigmoid_in_kernel": True}
        o1, s1 = real_chunk(**x, output_final_state=True, **flags, **extra)
        o2, s2 = ref.chunk_kda(**x, output_final_state=True, **flags, **extra)
        return {"o": (o1, o2), "final_state": (s1, s2)}

    report.check("fla.ops.kda.chunk_kda (gate, l2norm and beta sigmoid in kernel)", torch.bfloat16, chunk_fused_gate)

    def chunk_varlen() -> dict:
        x = kda_inputs(torch.bfloat16, batch=1, length=160)
        cu = torch.tensor([0, 37, 101, 160], device=device, dtype=torch.long)
        h0 = randn(3, HV, K, V, scale=0.1)
        o1, s1 = real_chunk(**x, initial_state=h0.clone(), output_final_state=True, cu_seqlens=cu)
        o2, s2 = ref.chunk_kda(**x, initial_state=h0.clone(), output_final_state=True, cu_seqlens=cu)
        return {"o": (o1, o2), "final_state": (s1, s2)}

    report.check("fla.ops.kda.chunk_kda (packed sequences, cu_seqlens [0, 37, 101, 160])", torch.bfloat16, chunk_varlen)

    def recurrent_gate_in_kernel() -> dict:
        x = kda_inputs(torch.bfloat16, length=16)
        x["g"] = randn(B, 16, HV, K, dtype=torch.bfloat16)
        extra = {"A_log": randn(HV, scale=0.5), "dt_bias": randn(HV * K, scale=0.5)}
        o1, s1 = real_recurrent(**x, output_final_state=True, use_gate_in_kernel=True, **extra)
        o2, s2 = ref.fused_recurrent_kda(**x, output_final_state=True, use_gate_in_kernel=True, **extra)
        return {"o": (o1, o2), "final_state": (s1, s2)}

    report.check("fla.ops.kda.fused_recurrent_kda (gate in kernel)", torch.bfloat16, recurrent_gate_in_kernel)

    def gate(lower_bound: float | None) -> Callable[[], dict]:
        def run() -> dict:
            g = randn(B, T, HV, K, dtype=torch.bfloat16, scale=3.0)
            a, b = randn(HV, scale=0.5), randn(HV * K)
            return {"g": (real_gate(g, a, b, lower_bound=lower_bound), ref.fused_kda_gate(g, a, b, lower_bound=lower_bound))}

        return run

    report.check("fla.ops.kda.gate.fused_kda_gate (softplus form)", torch.bfloat16, gate(None))
    report.check("fla.ops.kda.gate.fused_kda_gate (lower_bound=-5)", torch.bfloat16, gate(-5.0))

    # ---- (2b) twins vs real modules
    def twin_pair(path: str, dtype: torch.dtype, **kwargs: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
        real_cls = {
            "ShortConvolution": fm.ShortConvolution,
            "FusedRMSNormGated": fm.FusedRMSNormGated,
            "RMSNorm": fm.RMSNorm,
        }[path]
        if dry:  # fla's modules need Triton to run: compare the twin with itself
            real_cls = DEFAULT_TWINS[f"fla.modules.{path}"]
        torch.manual_seed(0)
        real = real_cls(**kwargs, device=device, dtype=dtype)
        with torch.no_grad():
            for p in real.parameters():
                p.copy_(torch.randn(p.shape, generator=g_).to(p))
        twin = DEFAULT_TWINS[f"fla.modules.{path}"](**kwargs, device=device, dtype=dtype)
        return real, copy_into(twin, real)

    def short_conv() -> dict:
        real, twin = twin_pair("ShortConvolution", torch.bfloat16, hidden_size=128, kernel_size=4, bias=True)
        x = randn(B, 50, 128, dtype=torch.bfloat16)
        cache = randn(B, 128, 4, dtype=torch.bfloat16)
        y1, c1 = real(x.clone(), cache=cache.clone(), output_final_state=True)
        y2, c2 = twin(x.clone(), cache=cache.clone(), output_final_state=True)
        with torch.no_grad():  # the in-place decoding step
            step = randn(B, 1, 128, dtype=torch.bfloat16)
            rc, tc = c1.clone(), c1.clone()
            ys1, _ = real(step.clone(), cache=rc)
            ys2, _ = twin(step.clone(), cache=tc)
        return {"y": (y1, y2), "final_cache": (c1, c2), "step_y": (ys1, ys2), "step_cache_in_place": (rc, tc)}

    report.check("fla.modules.ShortConvolution twin (cache, final state, decode step)", torch.bfloat16, short_conv)

    def short_conv_varlen() -> dict:
        real, twin = twin_pair("ShortConvolution", torch.bfloat16, hidden_size=64, kernel_size=3)
        x = randn(1, 40, 64, dtype=torch.bfloat16)
        cu = torch.tensor([0, 5, 23, 40], device=device, dtype=torch.long)
        y1, c1 = real(x.clone(), cu_seqlens=cu, output_final_state=True)
        y2, c2 = twin(x.clone(), cu_seqlens=cu, output_final_state=True)
        return {"y": (y1, y2), "final_cache": (c1, c2)}

    report.check("fla.modules.ShortConvolution twin (packed sequences)", torch.bfloat16, short_conv_varlen)

    for activation in ("sigmoid", "swish"):

        def gated_norm(activation: str = activation) -> dict:
            real, twin = twin_pair("FusedRMSNormGated", torch.bfloat16, hidden_size=64, activation=activation, eps=1e-5)
            x, g = randn(B, 30, 4, 64, dtype=torch.bfloat16), randn(B, 30, 4, 64, dtype=torch.bfloat16)
            out = {"y": (real(x, g), twin(x, g))}
            res = randn(B, 30, 4, 64, dtype=torch.bfloat16)
            (y1, r1), (y2, r2) = real(x, g, residual=res, prenorm=True), twin(x, g, residual=res, prenorm=True)
            out.update({"y_with_residual": (y1, y2), "residual_out": (r1, r2)})
            return out

        report.check(f"fla.modules.FusedRMSNormGated twin (activation={activation}, residual/prenorm)", torch.bfloat16, gated_norm)

    def rms_norm() -> dict:
        real, twin = twin_pair("RMSNorm", torch.bfloat16, hidden_size=96)
        x, res = randn(B, 30, 96, dtype=torch.bfloat16), randn(B, 30, 96, dtype=torch.bfloat16)
        (y1, r1) = real(x, residual=res, prenorm=True, residual_in_fp32=True)
        (y2, r2) = twin(x, residual=res, prenorm=True, residual_in_fp32=True)
        return {"y": (real(x), twin(x)), "y_with_residual": (y1, y2), "residual_out_fp32": (r1, r2)}

    report.check("fla.modules.RMSNorm twin (plain, residual in fp32)", torch.bfloat16, rms_norm)

    checks = report.data["checks"]
    report.data["summary"] = {
        "checks": len(checks),
        "passed": sum(c["passed"] for c in checks),
        "goldens_equal": report.data["goldens"]["classes_equal_committed"],
    }
    report.save()
    print(json.dumps(report.data["summary"]), flush=True)


if __name__ == "__main__":
    main()
