"""The recorded GPU runs (real fla kernels served strictly, the GPU-less meta tree against the served one, the
bundled example through the Triton fallback), in one script for one device call.

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl   # fla-core + flash-linear-attention
    export PYTHONPATH=/tmp/site:src
    python3 benchmarks/gpu/run_all.py --out $OUT

1. ``fla`` (6.6): the Kimi-style model (``kimi_gpu_model.py``) is dispatched with ``device_map="cuda"``,
   ``strict=True``, ``verify_tree=True``; its remote code binds fla's real Triton kernels. ``kernel_report``
   is recorded, and forwards on the recurrent (T=24) and chunked (T=100) KDA paths are compared with the
   pure-torch path of the same weights (``pure_torch.py``: twins + references, fla hidden).
2. ``kimi_signature`` (7.5): the signature of that served model is compared with ``hybridload.compare``
   to the GPU-less meta signature of the same plan, made on a CPU machine without fla
   (``prepare_meta.py`` -> ``tests/data/gpu/kimi_gpu_meta_signature.json``; the plan travels as the lock
   ``tests/data/gpu/kimi_gpu.lock.json``).
3. ``example`` (8.5): the bundled ``hybrid_tiny`` (remote code importing mamba_ssm and causal_conv1d, neither
   installed) is dispatched with ``kernel_fallback="triton"`` and ``strict=True``; forward and greedy
   generation are compared with the pure-torch path (``tests/fakekernels``, plain transformers).

Written to ``--out``: ``gpu_runs.json`` (every part's record, the comparisons, the environment),
``logits.pt`` (every logits tensor compared, by part) and ``kimi_gpu_served_signature.json``.

Each part runs in its own interpreter (kernel packages visible or hidden, transformers' dynamic-module and
availability caches), writes its record as it goes, and the parent merges them into ``gpu_runs.json``
(written after every part, so a timeout still leaves what ran). Without CUDA the script exits with status 2
and a message; ``--dry-run`` instead runs the CPU-capable parts (the pure-torch paths) to check the plumbing.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO / "tests" / "data" / "gpu"
LOCK = DATA / "kimi_gpu.lock.json"
META_SIGNATURE = DATA / "kimi_gpu_meta_signature.json"
FAKEKERNELS = REPO / "tests" / "fakekernels"
sys.path[:0] = [p for p in (str(REPO / "src"), str(HERE)) if p not in sys.path]

from checks import EXAMPLE_TOLERANCE, FLA_TOLERANCE, compare_logits  # noqa: E402

KIMI_LENGTHS = (24, 100)  # <= 64: fused_recurrent_kda; > 64: chunk_kda (the fixture's rule)
EXAMPLE_BATCH = (2, 48)
EXAMPLE_PROMPT = "hybridload loads hybrid models the same way on a laptop and on a GPU server."
EXAMPLE_NEW_TOKENS = 16
AUTOTUNE_KEEP = 2


# ---------------------------------------------------------------------------------------------- helpers
def _save(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)[:2000], "traceback": traceback.format_exc()[-4000:]}


def limit_autotuning(keep: int = AUTOTUNE_KEEP) -> None:
    """Benchmark only the first ``keep`` configs of each Triton autotuner (compile time; tiling, not math)."""
    from triton.runtime import autotuner

    original = autotuner.Autotuner.prune_configs

    def prune_configs(self: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, *args, **kwargs)[:keep]

    autotuner.Autotuner.prune_configs = prune_configs


def cuda_kernels(fn: Callable[[], Any]) -> list[str]:
    """Names of the CUDA kernels ``fn`` launched (torch.profiler), deduplicated, in first-launch order."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names: dict[str, None] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            names.setdefault(event.name[:160], None)
    return list(names)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    import torch

    started = time.perf_counter()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, round(time.perf_counter() - started, 3)


def _plan_facts(plan: Any) -> dict[str, Any]:
    return {
        "repo": plan.repo, "fingerprint": plan.fingerprint, "dtype": plan.dtype, "model_class": plan.model_class,
        "attn_implementation_built": plan.attn_implementation_built, "trust_remote_code": plan.trust_remote_code,
        "versions": dict(plan.versions),
    }


def _report(model: Any) -> dict[str, Any]:
    report = model.hybridload_kernel_report
    return {"entries": report.to_dict()["entries"], "text": report.format()}


def _kimi_plan(dtype: str) -> Any:
    import hybridload

    import kimi_gpu_model

    if dtype == "bfloat16":  # the plan the GPU-less machine resolved, checked against the lock here
        return hybridload.resolve(kimi_gpu_model.FOLDER, trust_remote_code=True, lock=LOCK)
    return hybridload.resolve(kimi_gpu_model.FOLDER, trust_remote_code=True, dtype=dtype)


def _kimi_inputs(length: int) -> Any:
    import torch

    import kimi_gpu_model

    generator = torch.Generator().manual_seed(1000 + length)
    return torch.randint(0, kimi_gpu_model.CONFIG["vocab_size"], (2, length), generator=generator)


# ---------------------------------------------------------------------------------------------- parts
def part_fla_served(work: Path, dtype: str, record: dict[str, Any]) -> None:
    """Real fla kernels: dispatch on CUDA, kernel_report, signature, forwards (+ launched kernels)."""
    import torch

    record["fla_importable"] = importlib.util.find_spec("fla") is not None
    limit_autotuning()
    import hybridload

    import kimi_gpu_model

    folder = kimi_gpu_model.FOLDER
    plan = _kimi_plan(dtype)
    record["plan"] = _plan_facts(plan)
    record["plan_from_lock"] = dtype == "bfloat16"
    if not (folder / "model.safetensors").exists():
        raise RuntimeError(f"{folder} has no weights: the parent writes them before the parts run")
    model, record["dispatch_seconds"] = _timed(
        lambda: hybridload.dispatch(plan, device_map="cuda", strict=True, kernel_fallback="none", verify_tree=True)
    )
    record["dispatch"] = {"device_map": "cuda", "strict": True, "kernel_fallback": "none", "verify_tree": True}
    record["devices"] = sorted({str(p.device) for p in model.parameters()})
    record["kernel_report"] = _report(model)
    if dtype == "bfloat16":
        served = hybridload.signature(model, plan, header={"built_on": {"cuda": torch.cuda.get_device_name()}})
        served.write(work / "kimi_gpu_served_signature.json")
        meta = hybridload.TreeSignature.read(META_SIGNATURE)
        diff = hybridload.compare(meta, served, labels=("GPU-less meta build", "H100 dispatch"))
        record["signature"] = {"served_digest": served.digest, "meta_digest": meta.digest, "diff": diff.to_dict()}
    record["forwards"] = {}
    for length in KIMI_LENGTHS:
        ids = _kimi_inputs(length).to("cuda")
        entry: dict[str, Any] = {"input_shape": list(ids.shape)}
        record["forwards"][str(length)] = entry
        with torch.no_grad():
            logits, entry["first_call_seconds"] = _timed(lambda: model(input_ids=ids).logits)
            _, entry["second_call_seconds"] = _timed(lambda: model(input_ids=ids).logits)
            try:
                entry["cuda_kernels"] = cuda_kernels(lambda: model(input_ids=ids))
            except Exception as exc:  # the profiler is evidence, not the check
                entry["cuda_kernels_error"] = _error(exc)
        torch.save(logits.float().cpu(), work / f"fla-served-{dtype}-{length}.pt")
        entry["logits_dtype"] = str(logits.dtype).removeprefix("torch.")


def part_fla_reference(work: Path, dtype: str, record: dict[str, Any], device: str) -> None:
    """The pure-torch path of the same plan and weights: fla hidden, twins + references."""
    import torch

    record["fla_importable"] = importlib.util.find_spec("fla") is not None
    if record["fla_importable"]:
        raise RuntimeError("fla is importable in the reference process; the parent must hide it")
    import hybridload

    from pure_torch import references_bound

    plan = _kimi_plan(dtype)
    record["plan"] = _plan_facts(plan)
    model, record["dispatch_seconds"] = _timed(
        lambda: hybridload.dispatch(plan, device_map=device, low_memory=True, strict=False)
    )
    record["kernel_report"] = _report(model)
    record["forwards"] = {}
    with torch.no_grad(), references_bound(model) as bound:
        record["references_bound"] = bound
        for length in KIMI_LENGTHS:
            ids = _kimi_inputs(length).to(device)
            logits, seconds = _timed(lambda: model(input_ids=ids).logits)
            record["forwards"][str(length)] = {"seconds": seconds, "logits_dtype": str(logits.dtype).removeprefix("torch.")}
            torch.save(logits.float().cpu(), work / f"fla-reference-{dtype}-{length}.pt")


def _example_inputs(tokenizer: Any) -> tuple[Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(7)
    batch = torch.randint(3, tokenizer.vocab_size, EXAMPLE_BATCH, generator=generator)
    prompt = tokenizer(EXAMPLE_PROMPT, return_tensors="pt").input_ids
    return batch, prompt


def _example_run(model: Any, tokenizer: Any, device: str, work: Path, label: str, record: dict[str, Any]) -> None:
    import torch

    batch, prompt = _example_inputs(tokenizer)
    batch, prompt = batch.to(device), prompt.to(device)
    with torch.no_grad():
        logits, record["forward_seconds"] = _timed(lambda: model(input_ids=batch).logits)
        generated, record["generate_seconds"] = _timed(
            lambda: model.generate(prompt, max_new_tokens=EXAMPLE_NEW_TOKENS, do_sample=False, min_new_tokens=EXAMPLE_NEW_TOKENS)
        )
    torch.save(logits.float().cpu(), work / f"{label}.pt")
    record["prompt_tokens"] = prompt.shape[1]
    record["generated_ids"] = generated[0, prompt.shape[1]:].tolist()
    record["generated_text"] = tokenizer.decode(generated[0, prompt.shape[1]:])
    record["logits_shape"] = list(logits.shape)
    record["logits_std"] = float(logits.float().std())
    from pure_torch import remote_namespaces  # the module may be evicted from sys.modules: read its globals

    namespace = next(ns for name, ns in remote_namespaces(model).items() if name.endswith(".modeling_nemotron_h"))
    record["is_fast_path_available"] = bool(namespace.get("is_fast_path_available"))
    bound = {name: namespace.get(name) for name in ("rmsnorm_fn", "causal_conv1d_fn", "causal_conv1d_update",
                                                     "selective_state_update", "mamba_chunk_scan_combined")}
    record["bound"] = {k: (None if v is None else f"{getattr(v, '__module__', '?')}.{getattr(v, '__qualname__', '?')}")
                       for k, v in bound.items()}


def part_example_served(work: Path, record: dict[str, Any]) -> None:
    """hybrid_tiny with neither mamba_ssm nor causal_conv1d: fallback 'none' fails, 'triton' + strict serves."""
    import torch

    record["absent"] = {p: importlib.util.find_spec(p) is None for p in ("mamba_ssm", "causal_conv1d")}
    if not all(record["absent"].values()):
        raise RuntimeError(f"kernel packages must be absent here: {record['absent']}")
    limit_autotuning()
    import hybridload
    import hybridload.examples

    plan = hybridload.resolve(hybridload.examples.path("hybrid_tiny"), trust_remote_code=True)
    record["plan"] = _plan_facts(plan)
    try:
        hybridload.dispatch(plan, device_map="cuda", strict=True, kernel_fallback="none")
        record["without_fallback"] = {"raised": None}
    except Exception as exc:
        record["without_fallback"] = {"raised": type(exc).__name__, "message": str(exc).splitlines()[0][:500]}
    model, record["dispatch_seconds"] = _timed(
        lambda: hybridload.dispatch(plan, device_map="cuda", strict=True, kernel_fallback="triton")
    )
    record["dispatch"] = {"device_map": "cuda", "strict": True, "kernel_fallback": "triton"}
    record["strict_accepted"] = True  # dispatch(strict=True) returned
    record["devices"] = sorted({str(p.device) for p in model.parameters()})
    record["kernel_report"] = _report(model)
    tokenizer = hybridload.load_tokenizer(plan)
    _example_run(model, tokenizer, "cuda", work, "example-served", record)
    batch, _ = _example_inputs(tokenizer)
    try:
        with torch.no_grad():
            record["cuda_kernels"] = cuda_kernels(lambda: model(input_ids=batch.to("cuda")))
    except Exception as exc:
        record["cuda_kernels_error"] = _error(exc)


def part_example_reference(work: Path, record: dict[str, Any], device: str) -> None:
    """Same weights through plain transformers with tests/fakekernels (pure-torch mamba_ssm/causal_conv1d)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hybridload.examples  # HYBRIDLOAD_DISABLE=1 here: nothing installed into transformers

    spec = importlib.util.find_spec("mamba_ssm")
    record["mamba_ssm_origin"] = spec.origin if spec else None
    if spec is None or not str(spec.origin).startswith(str(FAKEKERNELS)):
        raise RuntimeError("the reference needs tests/fakekernels' mamba_ssm on sys.path")
    path = hybridload.examples.path("hybrid_tiny")
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=torch.float32).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    record["device"] = device
    _example_run(model, tokenizer, device, work, f"example-reference-{device}", record)


PARTS = {
    "fla-served": lambda work, args, rec: part_fla_served(work, args.dtype, rec),
    "fla-reference": lambda work, args, rec: part_fla_reference(work, args.dtype, rec, args.device),
    "example-served": lambda work, args, rec: part_example_served(work, rec),
    "example-reference": lambda work, args, rec: part_example_reference(work, rec, args.device),
}


def run_part(args: argparse.Namespace) -> int:
    work = Path(args.work)
    name = f"{args.part}-{args.dtype or args.device}"
    record: dict[str, Any] = {"part": args.part, "dtype": args.dtype, "device": args.device}
    started = time.time()
    try:
        PARTS[args.part](work, args, record)
        record["ok"] = True
    except BaseException as exc:  # recorded: the parent reports it and goes on with the other parts
        record["ok"] = False
        record["error"] = _error(exc)
    record["seconds"] = round(time.time() - started, 2)
    _save(work / f"{name}.json", record)
    print(f"[{'ok' if record['ok'] else 'FAIL'}] {name} ({record['seconds']}s)", flush=True)
    if not record["ok"]:
        print(record["error"]["traceback"], flush=True)
    return 0 if record["ok"] else 1


# ---------------------------------------------------------------------------------------------- parent
class Parent:
    def __init__(self, out: Path, work: Path, deadline: float) -> None:
        self.out, self.work, self.deadline = out, work, deadline
        self.data: dict[str, Any] = {"environment": {}, "parts": {}, "runs": {}}
        self.fla_site = self._fla_site()

    @staticmethod
    def _fla_site() -> str | None:
        spec = importlib.util.find_spec("fla")
        return str(Path(spec.origin).parents[1]) if spec and spec.origin else None

    def save(self) -> None:
        _save(self.out / "gpu_runs.json", self.data)

    def env(self, hide_fla: bool = False, fakekernels: bool = False, cuda: bool = True) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "HYBRIDLOAD_DISABLE"}
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if hide_fla and self.fla_site:
            paths = [p for p in paths if Path(p).resolve() != Path(self.fla_site).resolve()]
        if str(REPO / "src") not in paths:
            paths.append(str(REPO / "src"))
        if fakekernels:
            paths.insert(0, str(FAKEKERNELS))
            env["HYBRIDLOAD_DISABLE"] = "1"  # plain transformers with (pure-torch) kernel packages
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["HF_MODULES_CACHE"] = str(self.work / "hf_modules")
        env["HF_HUB_OFFLINE"] = "1"
        env["TOKENIZERS_PARALLELISM"] = "false"
        env["PYTHONUNBUFFERED"] = "1"
        if not cuda:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def part(self, part: str, *, dtype: str | None = None, device: str | None = None, cap: float = 300, **env_kw: Any) -> dict[str, Any]:
        name = f"{part}-{dtype or device}"
        left = self.deadline - time.time()
        if left < 20:
            record = {"ok": False, "skipped": f"no time left ({left:.0f}s)"}
            self.data["parts"][name] = record
            self.save()
            return record
        command = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--work", str(self.work)]
        command += ["--dtype", dtype] if dtype else []
        command += ["--device", device] if device else []
        try:
            proc = subprocess.run(command, env=self.env(**env_kw), text=True, capture_output=True, timeout=min(cap, left))
            print(proc.stdout[-6000:], end="", flush=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], end="", flush=True)
            path = self.work / f"{name}.json"
            record = json.loads(path.read_text()) if path.exists() else {"ok": False, "stderr": proc.stderr[-4000:]}
        except subprocess.TimeoutExpired as exc:
            record = {"ok": False, "timeout_s": exc.timeout}
            print(f"[TIMEOUT] {name} after {exc.timeout:.0f}s", flush=True)
        self.data["parts"][name] = record
        self.save()
        self.bring_back()
        return record

    def bring_back(self) -> None:
        """Copy what the parts left in the work folder into --out now (a later timeout loses nothing)."""
        import torch

        tensors = {path.stem: torch.load(path) for path in sorted(self.work.glob("*.pt"))}
        if tensors:
            torch.save(tensors, self.out / "logits.pt")
        served = self.work / "kimi_gpu_served_signature.json"
        if served.exists():
            shutil.copy(served, self.out / served.name)

    def logits(self, name: str) -> Any:
        import torch

        path = self.work / f"{name}.pt"
        return torch.load(path) if path.exists() else None


def fla_run(parent: Parent, dtype: str, dry_run: bool) -> dict[str, Any]:
    served = parent.part("fla-served", dtype=dtype, cap=360) if not dry_run else {"ok": False, "skipped": "dry run"}
    device = "cpu" if dry_run else "cuda"
    reference = parent.part("fla-reference", dtype=dtype, device=device, cap=240, hide_fla=True, cuda=not dry_run)
    run: dict[str, Any] = {"dtype": dtype, "tolerance": FLA_TOLERANCE[dtype], "forwards": {}}
    for length in KIMI_LENGTHS:
        real = parent.logits(f"fla-served-{dtype}-{length}")
        ref = parent.logits(f"fla-reference-{dtype}-{length}")
        if real is not None and ref is not None:
            run["forwards"][str(length)] = compare_logits(real, ref, rel_tolerance=FLA_TOLERANCE[dtype])
    run["passed"] = bool(served.get("ok") and reference.get("ok") and len(run["forwards"]) == len(KIMI_LENGTHS)
                         and all(f["passed"] for f in run["forwards"].values()))
    return run


def example_run(parent: Parent, dry_run: bool) -> dict[str, Any]:
    served = parent.part("example-served", device="cuda", cap=240) if not dry_run else {"ok": False, "skipped": "dry run"}
    run: dict[str, Any] = {"tolerance": EXAMPLE_TOLERANCE, "references": {}}
    for device in ("cpu", "cuda") if not dry_run else ("cpu",):
        reference = parent.part("example-reference", device=device, cap=180, fakekernels=True, cuda=device == "cuda")
        real, ref = parent.logits("example-served"), parent.logits(f"example-reference-{device}")
        entry: dict[str, Any] = {"ok": bool(reference.get("ok"))}
        if real is not None and ref is not None:
            entry["logits"] = compare_logits(real, ref, **EXAMPLE_TOLERANCE)
            entry["generated_equal"] = served.get("generated_ids") == reference.get("generated_ids")
            entry["passed"] = bool(entry["logits"]["passed"] and entry["generated_equal"])
        run["references"][device] = entry
    run["passed"] = bool(served.get("ok") and run["references"]
                         and all(r.get("passed") for r in run["references"].values()))
    return run


def environment() -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    for dist in ("triton", "fla-core", "flash-linear-attention", "accelerate", "safetensors"):
        try:
            env[dist] = __import__("importlib.metadata").metadata.version(dist)
        except Exception:
            env[dist] = None
    env["autotune_configs_kept"] = AUTOTUNE_KEEP
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-out"))
    parser.add_argument("--budget-s", type=float, default=480, help="stop starting parts after this many seconds")
    parser.add_argument("--dry-run", action="store_true", help="no CUDA: run only the pure-torch parts, on CPU")
    parser.add_argument("--skip-fp32", action="store_true", help="only the bf16 fla run")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        return run_part(args)

    import torch

    if not torch.cuda.is_available() and not args.dry_run:
        print("run_all.py needs a CUDA device (it records GPU runs); use --dry-run on a CPU machine to check the "
              "plumbing with the pure-torch parts only.", file=sys.stderr)
        return 2
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    import kimi_gpu_model

    shutil.rmtree(kimi_gpu_model.FOLDER, ignore_errors=True)  # fresh folder and weights for this run
    with tempfile.TemporaryDirectory(prefix="hl-gpu-") as tmp:
        parent = Parent(args.out, Path(tmp), started + args.budget_s)
        parent.data["environment"] = environment()
        parent.data["environment"]["fla_site"] = parent.fla_site
        parent.data["command"] = " ".join([Path(sys.executable).name, *sys.argv])
        parent.data["dry_run"] = args.dry_run
        parent.save()
        _prepare_kimi_folder()  # config, code and seeded weights, shared by the served and reference parts
        parent.data["runs"]["fla_bfloat16"] = fla_run(parent, "bfloat16", args.dry_run)
        parent.save()
        sig = parent.data["parts"].get("fla-served-bfloat16", {}).get("signature")
        parent.data["runs"]["kimi_signature"] = {
            "identical": bool(sig and sig["diff"]["identical"]),
            "meta_digest": sig and sig["meta_digest"], "served_digest": sig and sig["served_digest"],
        }
        parent.save()
        parent.data["runs"]["example_triton_fallback"] = example_run(parent, args.dry_run)
        parent.save()
        if not args.skip_fp32 and parent.deadline - time.time() > 150:
            parent.data["runs"]["fla_float32"] = fla_run(parent, "float32", args.dry_run)
        parent.data["seconds"] = round(time.time() - started, 1)
        parent.save()
    summary = {name: run.get("passed", run.get("identical")) for name, run in parent.data["runs"].items()}
    print(json.dumps({"summary": summary, "seconds": parent.data["seconds"]}), flush=True)
    return 0 if all(summary.values()) else 1


def _prepare_kimi_folder() -> None:
    import hybridload

    import kimi_gpu_model

    folder = kimi_gpu_model.write_folder()
    plan = hybridload.resolve(folder, trust_remote_code=True, lock=LOCK)
    kimi_gpu_model.write_weights(folder, hybridload.load_meta(plan).state_dict())


if __name__ == "__main__":
    sys.exit(main())
