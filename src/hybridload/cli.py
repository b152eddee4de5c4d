"""The ``hybridload`` command line: check / signature / diff / lock / doctor.

Every command builds through the same path as the API (``resolve`` then ``load_meta``: one build session).
``--trust-remote-code`` is the explicit trust argument here; a lock file never grants trust.
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
EXIT_CODES = "exit codes: 0 ok, 1 the trees (or the checkpoint) differ, 2 usage or load error"
TRUST_FLAG = "--trust-remote-code"


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


def _trust(args: argparse.Namespace) -> bool | None:
    return True if getattr(args, "trust_remote_code", False) else None


def _resolve(args: argparse.Namespace, lock: str | None = None) -> tuple[Any, Path | None]:
    """The plan for MODEL (or the bundled example, which ships inside hybridload and is trusted)."""
    from .load.resolve import resolve

    reference = None
    model = args.model
    trust = _trust(args)
    if model is None and lock is not None:
        from .plan.lockfile import read_lock

        locked = read_lock(lock)
        if locked is None:
            raise _usage(f"lock file {lock} does not exist")
        model = locked.plan.repo
    if model is None:
        folder = _bundled_path()
        model, trust = str(folder), True
        reference = folder / "reference_signature.json"
    kwargs: dict[str, Any] = {"revision": args.revision, "trust_remote_code": trust}
    if getattr(args, "auto_class", None):
        kwargs["auto_class"] = args.auto_class
    if getattr(args, "dtype", None):
        kwargs["dtype"] = args.dtype
    if lock is not None:
        kwargs["lock"] = lock
    profile = _device_profile_choice(args, lock)
    if profile is not None:
        kwargs["device_profile"] = profile
    return resolve(model, **kwargs), reference


def _device_profile_choice(args: argparse.Namespace, lock: str | None) -> str | None:
    """``--device-profile``; without it, ``hybridload lock`` on a CUDA machine (the server) records this
    machine's device unless ``$HYBRIDLOAD_DEVICE_PROFILE`` says otherwise, and everything else takes the
    lock's, ``$HYBRIDLOAD_DEVICE_PROFILE`` or "as served"."""
    from .plan.device_profile import ENV

    chosen = getattr(args, "device_profile", None)
    if chosen is not None or lock is not None or args.command != "lock" or os.environ.get(ENV, "").strip():
        return chosen
    import torch

    return "current" if torch.cuda.is_available() else None


class _UsageError(Exception):
    pass


def _usage(message: str) -> _UsageError:
    return _UsageError(message)


def _build(plan: Any, progress: _Progress) -> tuple[Any, Any]:
    from .load.meta import load_meta
    from .tree.signature import signature

    with progress.step(f"building the meta tree of {plan.repo}"):
        model = load_meta(plan)
    with progress.step("signing the tree"):
        sig = signature(model, plan)
    return model, sig


def _read_expected(path: str) -> tuple[Any, Any]:
    """A signature file, or a lock file: (expected signature or None, the lock or None)."""
    from .errors import SignatureFormatError
    from .plan.lockfile import LOCK_SCHEMA, parse_lock
    from .tree.signature import TreeSignature

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SignatureFormatError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SignatureFormatError(f"{path} is not JSON ({exc}); pass a file written by `hybridload signature` or `hybridload lock`") from exc
    if isinstance(data, dict) and data.get("schema") == LOCK_SCHEMA:
        lock = parse_lock(text, path)
        return lock.signature, lock
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


def human(n: float, unit: str = "") -> str:
    """1234 -> '1.2K', 7.2e9 -> '7.2B' (counts use B for billions; bytes get 'GB' via ``unit='B'``)."""
    suffixes = ("", "K", "M", "G", "T") if unit == "B" else ("", "K", "M", "B", "T")
    for suffix in suffixes:
        if abs(n) < 1000:
            return f"{n:.1f}{suffix}{unit}" if suffix else f"{int(n)}{unit}"
        n /= 1000.0
    return f"{n:.1f}P{unit}"


def fold_runs(items: Sequence[str], *, limit: int = 12) -> str:
    """Run-length text of a long layer list: 'mamba moe mamba attention x3 ...' stays short for deep models."""
    if len(items) <= limit:
        return " ".join(items)
    parts = []
    for value, group in itertools.groupby(items):
        count = len(list(group))
        parts.append(value if count == 1 else f"{value} x{count}")
    return f"{' '.join(parts)}  ({len(items)} layers)"


def _kinds(model_or_signature: Any) -> list[Any]:
    from .tree.layer_kinds import layer_kinds

    return layer_kinds(model_or_signature)


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


def cmd_check(args: argparse.Namespace, progress: _Progress) -> int:
    from .tree.diff import compare

    against = args.against
    lock_file = None
    expected = None
    if against:
        expected, lock = _read_expected(against)
        lock_file = against if lock is not None else None
    plan, bundled_reference = _resolve(args, lock=lock_file)  # a lock: plan and code hashes checked first
    model, sig = _build(plan, progress)
    if not against and bundled_reference is not None and bundled_reference.exists():
        against = str(bundled_reference)
        expected, _ = _read_expected(against)
    diff = None
    if expected is not None:
        diff = compare(expected, sig, labels=(Path(against).name, "this meta build"))
    coverage = None
    if args.checkpoint is not None:
        from .serve.coverage import checkpoint_coverage

        with progress.step("reading the checkpoint's tensor index"):
            coverage = checkpoint_coverage(model, args.checkpoint or None)
    record = model.hybridload_build_report
    kinds = [_kind_text(k) for k in _kinds(sig)]  # the signature just made: the tree is walked once
    summary = {
        "model": plan.repo,
        "commit": plan.commit or plan.fingerprint,
        "class": type(model).__module__.rpartition(".")[2] + "." + type(model).__qualname__,
        "trust_remote_code": plan.trust_remote_code,
        "attn_implementation": plan.attn_implementation_built,
        "dtype": plan.dtype,
        "parameters": _dtype_summary(sig),
        "layer_kinds": kinds,
        "stood_in": record.shim.to_dict() if record.shim is not None else None,
        "build": record.to_dict(),
        "digest": sig.digest,
        "against": against,
        "plan_checked_against_lock": lock_file is not None,
        "identical": None if diff is None else diff.identical,
        "diff": None if diff is None else diff.to_dict(),
        "device_profile": None if plan.device_profile is None else dict(plan.device_profile),
        "checkpoint": None if coverage is None else coverage.to_dict(),
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        total = sum(v["parameters"] for v in summary["parameters"].values())
        size = sum(v["bytes"] for v in summary["parameters"].values())
        print(f"model      {plan.repo}")
        print(f"revision   {summary['commit']}  (trust_remote_code={plan.trust_remote_code}: {plan.trust_reason})")
        print(f"class      {summary['class']}  attn={summary['attn_implementation']}  dtype={plan.dtype}")
        by_dtype = ", ".join(f"{d}: {human(v['parameters'])} ({human(v['bytes'], 'B')})" for d, v in summary["parameters"].items())
        print(f"parameters {human(total)} = {human(size, 'B')}  [{by_dtype}]")
        print(f"layers     {fold_runs(kinds)}")
        print(f"kernels    {record.shim.summary() if record.shim is not None else 'no kernel shim'}")
        built_for = f"{plan.profile.describe()} (the plan's device profile)" if plan.profile is not None else "this machine"
        print(f"built for  {built_for}")
        for line in record.cuda_redirects:
            print(f"cuda->meta {line}")
        if record.messages:
            print(f"messages   {len(record.messages)} from the model's code captured (--json lists them)")
        print(f"digest     {sig.digest}")
        if lock_file is not None:
            print(f"lock       {lock_file}: plan and remote-code hashes match")
        if diff is not None:
            if diff.identical:
                print(f"against    {against}: identical tree")
            else:
                print(f"against    {against}: TREES DIFFER")
                print(diff.report())
        if coverage is not None:
            print(coverage.summary() if coverage.ok else coverage.format())
    trees_match = diff is None or diff.identical
    return EXIT_OK if trees_match and (coverage is None or coverage.ok) else EXIT_DIFF


def _output(path: str) -> Path:
    from .plan.lockfile import check_writable

    return check_writable(path)


def cmd_signature(args: argparse.Namespace, progress: _Progress) -> int:
    from .plan.lockfile import write_atomically

    output = _output(args.output)
    plan, _ = _resolve(args)
    _, sig = _build(plan, progress)
    write_atomically(output, sig.to_json())
    if args.json:
        print(json.dumps({"output": str(output), "digest": sig.digest}))
    else:
        print(f"wrote {output} (digest {sig.digest})")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace, progress: _Progress) -> int:
    from .tree.diff import compare

    a, _ = _read_expected(args.a)
    b, _ = _read_expected(args.b)
    if a is None or b is None:
        raise _usage(f"{args.a if a is None else args.b} is a lock file without a recorded tree; re-lock it")
    diff = compare(a, b, labels=(args.a, args.b))
    if args.json:
        print(json.dumps(diff.to_dict(), indent=2, default=str))
    else:
        print(diff.report(max_items=args.max_items))
    return EXIT_OK if diff.identical else EXIT_DIFF


def cmd_lock(args: argparse.Namespace, progress: _Progress) -> int:
    from .plan.lockfile import write_lock

    output = _output(args.output)
    plan, _ = _resolve(args)
    _, sig = _build(plan, progress)
    write_lock(output, plan, sig)
    if args.json:
        print(json.dumps({"output": str(output), "digest": sig.digest, "commit": plan.commit or plan.fingerprint}))
    else:
        print(f"wrote {output}: {plan.repo}@{plan.commit or plan.fingerprint} (digest {sig.digest})")
    return EXIT_OK


def _environment() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    from ._version import __version__
    from .shim.packages import kernel_packages
    from .shim.probe import probe_kernel_package

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
    return {"versions": versions, "kernel_packages": packages, "cuda": cuda, "nnsight_integration": _nnsight_status()}


def _nnsight_status() -> dict[str, str]:
    """Whether the nnsight integration is on (importing nnsight applies it, or says why it stays off)."""
    import importlib
    import warnings

    from .integrations import nnsight as integration
    from .integrations.install import is_installed

    if not is_installed():
        return {"integration": "off: hybridload is not installed in this process (HYBRIDLOAD_DISABLE=1?)"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(integration.HUGGINGFACE_MODULE)
            importlib.import_module(integration.TRANSFORMERS_MODULE)
    except ImportError as exc:
        return {"integration": f"off: nnsight is not importable ({exc})"}
    return integration.status()


def cmd_doctor(args: argparse.Namespace, progress: _Progress) -> int:
    with progress.step("probing the environment"):
        env = _environment()
    report = None
    if args.model:
        from .serve.dispatch import dispatch

        with progress.step(f"loading {args.model}"):
            model = dispatch(args.model, trust_remote_code=_trust(args), device_map=args.device_map, strict=False)
        report = model.hybridload_kernel_report
        env["kernel_report"] = report.to_dict()
        plan = model.hybridload_plan
        env["model"] = {"repo": plan.repo, "class": plan.model_class, "source": plan.model_class_source,
                        "trust_remote_code": plan.trust_remote_code}
        if plan.model_class_source != "remote" and plan.auto_map_unused:
            env["model"]["note"] = (f"the repository's own code was not used (not trusted: {plan.trust_reason}); "
                                    f"pass {TRUST_FLAG} after reviewing it to load it as the repository intends")
    if args.json:
        print(json.dumps(env, indent=2, default=str))
        return EXIT_OK
    print("versions:  " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v))
    print("cuda:      " + (f"{env['cuda']['device']} (sm {env['cuda']['capability']}, CUDA {env['cuda']['torch_cuda']})" if env["cuda"]["available"] else "not available"))
    print("nnsight:   " + "; ".join(f"{k}: {v}" for k, v in env["nnsight_integration"].items()))
    print("kernel packages:")
    for name, info in env["kernel_packages"].items():
        print(f"  {name:<22} {info['status']:<10} {info['reason']}")
    if "model" in env:
        print(f"model:     {env['model']['repo']} ({env['model']['source']} {env['model']['class']})")
        if "note" in env["model"]:
            print(f"           {env['model']['note']}")
    if report is not None:
        print("kernel report:")
        print(report.format())
    return EXIT_OK


def _version() -> str:
    from ._version import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridload",
        description="Load HuggingFace models the same way everywhere: build meta trees GPU-less, sign them, "
        "compare them with what the server builds.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def model_args(p: argparse.ArgumentParser, optional: bool) -> None:
        if optional:
            p.add_argument("model", nargs="?", help="Hub repo id or local folder (default: the bundled hybrid example)")
        else:
            p.add_argument("model", help="Hub repo id or local folder")
        p.add_argument("--revision", help="branch, tag or 40-hex commit (resolved to a commit and recorded)")
        p.add_argument(TRUST_FLAG, action="store_true",
                       help="allow the repository's own modeling code to run (review it first; a lock never grants this)")
        p.add_argument("--auto-class", help="transformers Auto class to build (default AutoModelForCausalLM)")
        p.add_argument("--dtype", help="dtype the server loads with (default: config.json's, else the checkpoint's)")
        p.add_argument("--device-profile", metavar="PROFILE",
                       help="the device the tree is built for: served (one H100), current (this machine), none, or a "
                       "profile/lock JSON file (default: a lock's; `lock` on a CUDA machine: current; else "
                       "$HYBRIDLOAD_DEVICE_PROFILE or served)")

    def json_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="one JSON document on stdout (errors too), nothing else")

    p = sub.add_parser(
        "check",
        help="build the meta tree GPU-less, summarise it, compare it with a signature or lock file",
        description="Build MODEL's meta tree without a GPU (kernel packages stood in for), summarise it and compare "
        "it with --against. Without MODEL: the bundled hybrid Mamba/MoE/attention example (its code ships inside "
        "hybridload, so it is trusted), compared with the reference signature of the tree its server load builds.",
        epilog=EXIT_CODES,
    )
    model_args(p, optional=True)
    p.add_argument("--against", metavar="FILE",
                   help="signature file (`hybridload signature`) or lock file (`hybridload lock`: the plan and the "
                   "remote-code hashes are checked too); MODEL defaults to the lock's repository")
    p.add_argument("--checkpoint", nargs="?", const="", default=None, metavar="CKPT",
                   help="also check that a checkpoint fills the tree exactly, reading only tensor headers: the "
                   "model's own (no value), a local folder, an index file or a Hub repo id")
    json_arg(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("signature", help="write the meta tree's signature", epilog=EXIT_CODES,
                       description="Build MODEL's meta tree and write its signature (checked before the build).")
    model_args(p, optional=False)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write (parent folders are created)")
    json_arg(p)
    p.set_defaults(func=cmd_signature)

    p = sub.add_parser("diff", help="compare two signature or lock files", epilog=EXIT_CODES,
                       description="Compare two trees recorded in signature or lock files.")
    p.add_argument("a", help="signature or lock file")
    p.add_argument("b", help="signature or lock file")
    p.add_argument("--max-items", type=int, default=20, help="differences to list (default 20)")
    json_arg(p)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("lock", help="write plan + expected tree into one lock file", epilog=EXIT_CODES,
                       description="Resolve MODEL, build its meta tree and write both into a lock file that "
                       "`check --against`, `resolve(lock=)`, `dispatch(lock=)` and the pytest plugin read.")
    model_args(p, optional=False)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write (parent folders are created)")
    json_arg(p)
    p.set_defaults(func=cmd_lock)

    p = sub.add_parser("doctor", help="environment report; with --model, load it for real and report its kernels",
                       epilog=EXIT_CODES,
                       description="Report versions, CUDA, kernel packages and the nnsight integration; with "
                       "--model, dispatch the model and report which kernels it bound.")
    p.add_argument("--model", help="Hub repo id or local folder to load for real")
    p.add_argument(TRUST_FLAG, action="store_true", help="allow the repository's own modeling code to run")
    p.add_argument("--device-map", default=None, help="placement for the real load (e.g. cuda, auto)")
    json_arg(p)
    p.set_defaults(func=cmd_doctor)
    return parser


def _fail(args: argparse.Namespace, exc: BaseException, *, internal: bool = False) -> int:
    kind = type(exc).__name__
    message = str(exc)
    if internal:
        message = f"{kind}: {message} (unexpected: this may be a hybridload bug)"
    if getattr(args, "json", False):
        print(json.dumps({"error": {"type": kind, "message": message, "command": args.command}}, indent=2))
    print(f"hybridload {args.command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    progress = _Progress(enabled=not getattr(args, "json", False))
    from .errors import HybridloadError
    from .plan.trust import explicit_spelling

    try:
        with explicit_spelling(TRUST_FLAG):
            return args.func(args, progress)
    except (HybridloadError, _UsageError, OSError, ValueError, ImportError) as exc:
        return _fail(args, exc)
    except Exception as exc:  # noqa: BLE001 - documented exit codes, never a traceback
        return _fail(args, exc, internal=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
