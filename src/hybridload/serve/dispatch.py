"""``hybridload.dispatch``: the served-side real load of a plan, which binds real kernels and proves it.

Order of work (each step exists because of a failure seen in practice):
1. evict remote-code modules that hold stand-ins, so the real load re-executes them and binds real kernels
   (transformers reuses a cached dynamic module whose source hash did not change);
2. load, inside the transformers-4.x compatibility window (the same entries the meta build applied) and the
   optional Triton-fallback window: ``from_pretrained`` with the plan's commit, trust, dtype
   and attention implementation, or with ``low_memory=True`` a meta build of the same plan streamed from the
   checkpoint with transformers' own checkpoint conversions;
3. ``kernel_report``; in strict mode refuse a model that can reach a stand-in (or a pure-torch twin);
4. with ``verify_tree=True`` compare the served tree's signature with the plan's meta build.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .._env import flag
from ..errors import CheckpointError, StandInReachableError, TreeMismatchError
from .fallback import fallback_window, policy
from .report import KernelReport, kernel_report


def _as_plan(model_or_plan: Any, **resolve_kwargs: Any) -> Any:
    from ..plan.model import LoadPlan

    if isinstance(model_or_plan, LoadPlan):
        return model_or_plan
    from ..plan.resolve import resolve

    return resolve(model_or_plan, **resolve_kwargs)


def checkpoint_dir(plan: Any) -> Path:
    """The local folder holding the plan's weights (the Hub snapshot of the plan's commit)."""
    if plan.is_local:
        return Path(plan.repo)
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                plan.repo,
                revision=plan.commit or plan.revision,
                allow_patterns=["*.safetensors", "*.safetensors.index.json", "*.json"],
            )
        )
    except Exception as exc:  # offline with no cached snapshot, gated repo, network down ...
        raise CheckpointError(
            f"cannot get the weights of {plan.repo}@{plan.commit}: {type(exc).__name__}: {exc}. Download them "
            "once while online (huggingface-cli download), or point the plan at a local folder."
        ) from exc


def _strict_check(report: KernelReport) -> None:
    bad = report.unacceptable()
    if not bad:
        return
    lines = "\n".join(f"  {e.symbol}: {e.status} for {e.target} ({e.note})" for e in bad)
    raise StandInReachableError(
        f"strict mode: this model can still reach {len(bad)} kernel stand-in(s)/twin(s) instead of real kernels:\n"
        f"{lines}\nInstall the kernel packages on this server (or opt in to hybridload's Triton kernels with "
        "kernel_fallback='triton' where they cover these symbols), or pass strict=False to accept it."
    )


def verify_against_meta(plan: Any, model: Any) -> Any:
    """Raise TreeMismatchError when the served tree differs from the meta build of the same plan."""
    from ..plan.load import load_meta
    from ..tree.diff import compare
    from ..tree.signature import signature

    meta = load_meta(plan)
    diff = compare(signature(meta), signature(model, plan))
    if not diff.identical:
        raise TreeMismatchError(
            "the served model's tree differs from the meta build of the same plan:\n" + diff.report(), diff
        )
    expected = list(getattr(meta, "hybridload_compat_entries", []))
    served = list(getattr(model, "hybridload_compat_entries", expected))
    if expected != served:
        missing, extra = sorted(set(expected) - set(served)), sorted(set(served) - set(expected))
        raise TreeMismatchError(
            "the served load applied other transformers-compatibility entries than the meta build "
            f"(missing {missing}, extra {extra}); both sides must run the same hybridload version",
            diff,
        )
    return diff


def dispatch(
    model: Any,
    *,
    device_map: Any = None,
    dtype: Any = None,
    strict: bool | None = None,
    verify_tree: bool = False,
    low_memory: bool = False,
    kernel_fallback: str | None = None,
    **kw: Any,
) -> Any:
    """Real load of ``model`` (a LoadPlan, Hub repo id or local folder) on the served side."""
    from ..plan.load import load_meta, load_real
    from ..shim.eviction import evict_tainted

    resolve_keys = (
        "revision", "trust_remote_code", "code_revision", "attn_implementation", "auto_class", "lock", "update_lock"
    )
    plan = _as_plan(model, dtype=dtype, **{k: kw.pop(k) for k in resolve_keys if k in kw})
    if dtype is not None and str(dtype).replace("torch.", "") != plan.dtype:
        plan = dataclasses.replace(plan, dtype=str(dtype).replace("torch.", ""), dtype_source="dispatch(dtype=...)")
    strict = flag("HYBRIDLOAD_STRICT") if strict is None else strict
    chosen = policy(kernel_fallback)

    from ..compat.state import observe
    from ..compat.window import real_load_window

    evict_tainted()
    # the server applies the same transformers-4.x compatibility entries the client's meta build applied
    with observe() as compat_record, fallback_window(chosen), real_load_window():
        if low_memory:
            from .streaming import stream_load

            loaded = stream_load(load_meta(plan), checkpoint_dir(plan), device_map=device_map, dtype=plan.dtype)
        else:
            loaded = load_real(plan, device_map=device_map, **kw)
    loaded.hybridload_compat_entries = compat_record.header()
    report = kernel_report(loaded)
    if strict:
        _strict_check(report)
    if verify_tree:
        verify_against_meta(plan, loaded)
    loaded.hybridload_plan = plan
    loaded.hybridload_kernel_report = report
    return loaded
