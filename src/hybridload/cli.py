"""The ``hybridload`` command line: check / signature / diff / lock / doctor.

Exit codes: 0 ok, 1 the trees differ, 2 usage or load error. ``--json`` prints one JSON document on stdout
and nothing else; progress goes to stderr, only on a terminal.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

EXIT_OK, EXIT_DIFF, EXIT_ERROR = 0, 1, 2
BUNDLED = "hybrid_tiny"


class _Progress:
    """A stderr spinner, shown only when stderr is a terminal and output is not JSON."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        done = threading.Event()

        def spin() -> None:
            for char in itertools.cycle("|/-\\"):
                if done.wait(0.1):
                    break
                sys.stderr.write(f"\r{char} {text}")
                sys.stderr.flush()

        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        start = time.perf_counter()
        try:
            yield
        finally:
            done.set()
            thread.join()
            sys.stderr.write(f"\r  {text} ({time.perf_counter() - start:.1f}s)\n")
            sys.stderr.flush()


def _bundled_path() -> Path:
    from .examples import path

    return path(BUNDLED)


def _resolve(args: argparse.Namespace) -> tuple[Any, Path | None]:
    """The plan for MODEL (or the bundled example, which is trusted: it ships inside hybridload)."""
    from .plan.resolve import resolve

    reference = None
    model = args.model
    trust = True if args.trust_remote_code else None
    if model is None:
        folder = _bundled_path()
        model, trust = str(folder), True
        reference = folder / "reference_signature.json"
    kwargs: dict[str, Any] = {"revision": args.revision, "trust_remote_code": trust}
    if getattr(args, "auto_class", None):
        kwargs["auto_class"] = args.auto_class
    if getattr(args, "dtype", None):
        kwargs["dtype"] = args.dtype
    return resolve(model, **kwargs), reference


def _build(plan: Any, progress: _Progress) -> tuple[Any, Any, Any]:
    from .plan.load import load_meta
    from .shim.window import kernel_shim
    from .tree.signature import signature

    with progress.step(f"building the meta tree of {plan.repo}"):
        with kernel_shim() as report:
            model = load_meta(plan)
    with progress.step("signing the tree"):
        sig = signature(model, plan)
    return model, sig, report


def _read_signature_or_lock(path: str) -> tuple[Any, dict | None]:
    """A signature file, or a lock file (plan + signature); returns (signature, plan dict or None)."""
    from .errors import SignatureFormatError
    from .tree.signature import TreeSignature

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SignatureFormatError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SignatureFormatError(f"{path} is not JSON ({exc}); pass a file written by `hybridload signature` or `hybridload lock`") from exc
    if isinstance(data, dict) and "signature" in data and "plan" in data:
        return TreeSignature.from_json(json.dumps(data["signature"])), data["plan"]
    return TreeSignature.from_json(text), None


def _dtype_summary(sig: Any) -> dict[str, dict[str, int]]:
    import torch

    def _itemsize(name: str) -> int:
        dtype = getattr(torch, name.replace("torch.", ""), None)
        return torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 0

    out: dict[str, dict[str, int]] = {}
    for spec in sig.parameters.values():
        numel = 1
        for dim in spec.shape:
            numel *= int(dim)
        entry = out.setdefault(str(spec.dtype), {"parameters": 0, "bytes": 0})
        entry["parameters"] += numel
        entry["bytes"] += numel * _itemsize(str(spec.dtype))
    return out


def _human(n: float, unit: str = "") -> str:
    for suffix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.1f}{suffix}{unit}" if suffix else f"{int(n)}{unit}"
        n /= 1000.0
    return f"{n:.1f}P{unit}"


def _kinds(model: Any) -> list[Any]:
    from .tree.layer_kinds import layer_kinds

    return layer_kinds(model)


def cmd_check(args: argparse.Namespace, progress: _Progress) -> int:
    from .tree.diff import compare

    plan, bundled_reference = _resolve(args)
    model, sig, report = _build(plan, progress)
    against = args.against or (str(bundled_reference) if bundled_reference and bundled_reference.exists() else None)
    diff = None
    if against:
        expected, _ = _read_signature_or_lock(against)
        diff = compare(expected, sig, labels=(os.path.basename(against), "this meta build"))
    kinds = _kinds(model)
    summary = {
        "model": plan.repo,
        "commit": plan.commit or plan.fingerprint,
        "class": type(model).__module__.rpartition(".")[2] + "." + type(model).__qualname__,
        "trust_remote_code": plan.trust_remote_code,
        "attn_implementation": plan.attn_implementation_built,
        "dtype": plan.dtype,
        "parameters": _dtype_summary(sig),
        "layer_kinds": [_kind_text(k) for k in kinds],
        "stood_in": report.to_dict(),
        "digest": sig.digest,
        "against": against,
        "identical": None if diff is None else diff.identical,
        "diff": None if diff is None else diff.to_dict(),
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        total = sum(v["parameters"] for v in summary["parameters"].values())
        size = sum(v["bytes"] for v in summary["parameters"].values())
        print(f"model      {plan.repo}")
        print(f"revision   {summary['commit']}  (trust_remote_code={plan.trust_remote_code}: {plan.trust_reason})")
        print(f"class      {summary['class']}  attn={summary['attn_implementation']}  dtype={plan.dtype}")
        by_dtype = ", ".join(f"{d}: {_human(v['parameters'])} ({_human(v['bytes'], 'B')})" for d, v in summary["parameters"].items())
        print(f"parameters {_human(total)} = {_human(size, 'B')}  [{by_dtype}]")
        print(f"layers     {' '.join(summary['layer_kinds'])}")
        print(f"kernels    {report.summary()}")
        print(f"digest     {sig.digest}")
        if diff is not None:
            if diff.identical:
                print(f"against    {against}: identical tree")
            else:
                print(f"against    {against}: TREES DIFFER")
                print(diff.report())
    return EXIT_OK if diff is None or diff.identical else EXIT_DIFF


def _kind_text(kind: Any) -> str:
    if isinstance(kind, str):
        return kind
    if isinstance(kind, (list, tuple, frozenset, set)):
        return "+".join(str(k) for k in kind) or "-"
    for attr in ("label", "kinds", "kind"):
        value = getattr(kind, attr, None)
        if value:
            return "+".join(value) if isinstance(value, (list, tuple, frozenset, set)) else str(value)
    return str(kind)


def cmd_signature(args: argparse.Namespace, progress: _Progress) -> int:
    plan, _ = _resolve(args)
    _, sig, _ = _build(plan, progress)
    Path(args.output).write_text(sig.to_json(), encoding="utf-8")
    if args.json:
        print(json.dumps({"output": args.output, "digest": sig.digest}))
    else:
        print(f"wrote {args.output} (digest {sig.digest})")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, progress: _Progress) -> int:
    from .tree.diff import compare

    a, _ = _read_signature_or_lock(args.a)
    b, _ = _read_signature_or_lock(args.b)
    diff = compare(a, b, labels=(args.a, args.b))
    if args.json:
        print(json.dumps(diff.to_dict(), indent=2, default=str))
    else:
        print(diff.report(max_items=args.max_items))
    return EXIT_OK if diff.identical else EXIT_DIFF


def cmd_lock(args: argparse.Namespace, progress: _Progress) -> int:
    plan, _ = _resolve(args)
    _, sig, _ = _build(plan, progress)
    document = {"schema": "hybridload.lock/1", "plan": plan.to_dict(), "signature": json.loads(sig.to_json())}
    Path(args.output).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps({"output": args.output, "digest": sig.digest, "commit": plan.commit or plan.fingerprint}))
    else:
        print(f"wrote {args.output}: {plan.repo}@{plan.commit or plan.fingerprint} (digest {sig.digest})")
    return EXIT_OK


def _environment() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    from . import __version__
    from .shim.probe import probe_kernel_package
    from .shim.registry import kernel_packages

    versions = {"hybridload": __version__, "python": sys.version.split()[0]}
    for dist in ("torch", "transformers", "accelerate", "safetensors", "huggingface_hub", "nnsight", "triton"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    packages = {}
    for name in sorted(kernel_packages()):
        verdict = probe_kernel_package(name)
        packages[name] = {"status": verdict.status, "reason": verdict.reason, "version": verdict.dist_version}
    cuda = {"available": torch.cuda.is_available()}
    if cuda["available"]:
        cuda.update(device=torch.cuda.get_device_name(), capability=".".join(map(str, torch.cuda.get_device_capability())), torch_cuda=torch.version.cuda)
    return {"versions": versions, "kernel_packages": packages, "cuda": cuda}


def cmd_doctor(args: argparse.Namespace, progress: _Progress) -> int:
    with progress.step("probing the environment"):
        env = _environment()
    report = None
    if args.model:
        from .serve.dispatch import dispatch

        with progress.step(f"loading {args.model}"):
            model = dispatch(args.model, trust_remote_code=True if args.trust_remote_code else None, device_map=args.device_map, strict=False)
        report = model.hybridload_kernel_report
        env["kernel_report"] = report.to_dict()
    if args.json:
        print(json.dumps(env, indent=2, default=str))
        return EXIT_OK
    print("versions:  " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v))
    print("cuda:      " + (f"{env['cuda']['device']} (sm {env['cuda']['capability']}, CUDA {env['cuda']['torch_cuda']})" if env["cuda"]["available"] else "not available"))
    print("kernel packages:")
    for name, info in env["kernel_packages"].items():
        print(f"  {name:<22} {info['status']:<7} {info['reason']}")
    if report is not None:
        print("kernel report:")
        print(report.format())
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridload", description="Load HuggingFace models the same way everywhere.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('hybridload').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def model_args(p: argparse.ArgumentParser, optional: bool) -> None:
        if optional:
            p.add_argument("model", nargs="?", help="Hub repo id or local folder (default: the bundled example)")
        else:
            p.add_argument("model", help="Hub repo id or local folder")
        p.add_argument("--revision", help="branch, tag or commit (resolved to a commit and recorded)")
        p.add_argument("--trust-remote-code", action="store_true", help="allow the repository's own modeling code to run")
        p.add_argument("--auto-class", help="Auto class to build (default AutoModelForCausalLM)")
        p.add_argument("--dtype", help="dtype the server loads with (default: the checkpoint's)")

    def json_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="machine-readable output on stdout")

    p = sub.add_parser("check", help="build the meta tree GPU-less, summarise it, optionally compare with a file")
    model_args(p, optional=True)
    p.add_argument("--against", help="signature or lock file to compare with")
    json_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("signature", help="write the meta tree's signature")
    model_args(p, optional=False)
    p.add_argument("-o", "--output", required=True)
    json_arg(p)
    p.set_defaults(func=cmd_signature)

    p = sub.add_parser("diff", help="compare two signature or lock files")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--max-items", type=int, default=20)
    json_arg(p)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("lock", help="write plan + signature into one lock file")
    model_args(p, optional=False)
    p.add_argument("-o", "--output", required=True)
    json_arg(p)
    p.set_defaults(func=cmd_lock)

    p = sub.add_parser("doctor", help="environment report; with --model, load it for real and report its kernels")
    p.add_argument("--model")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--device-map", default=None)
    json_arg(p)
    p.set_defaults(func=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    progress = _Progress(enabled=not getattr(args, "json", False))
    from .errors import HybridloadError

    try:
        return args.func(args, progress)
    except HybridloadError as exc:
        print(f"hybridload {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, ValueError, ImportError) as exc:
        print(f"hybridload {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
