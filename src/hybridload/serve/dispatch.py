"""``hybridload.dispatch``: the served-side real load of a plan, which binds real kernels and proves it.

Order of work (each step exists because of a failure seen in practice):
1. arguments: plan decisions must agree with the plan (never edited at load time), placement must be honoured
   by the chosen path, unknown keywords are a TypeError;
2. the device: the real ``torch.cuda`` answers against the plan's device profile (the device its meta tree is
   built for); differences are named (a warning, or a refusal in strict mode when an answer remote code
   branches on differs);
3. evict remote-code modules that hold stand-ins, so the real load re-executes them and binds real kernels
   (transformers reuses a cached dynamic module whose source hash did not change);
4. the checkpoint's tensor index (shard headers only) against the plan's meta tree, by the real load's rules
   (:mod:`hybridload.serve.coverage`): a checkpoint that cannot fill the tree is refused before a weight is read;
5. load, in one build session: ``from_pretrained`` with the plan's commit, trust, dtype and attention
   (:func:`~hybridload.serve.real.load_real`), or with ``low_memory=True`` the meta tree of the same plan
   streamed from the checkpoint with transformers' own checkpoint conversions; both refuse a checkpoint that
   does not fill the tree exactly. A pre-quantized (packed) checkpoint always streams into its quantized tree;
6. ``kernel_report``; in strict mode refuse a model that can reach a stand-in (or a pure-torch twin);
7. with ``verify_tree=True`` compare the served tree's signature with the plan's meta build (or the lock's).
"""
from __future__ import annotations

import os
from typing import Any

from .._env import flag
from ..errors import PlanError, StandInReachableError, TreeMismatchError
from ..load.config import plan_for
from ..plan import arguments
from ..plan.model import LoadPlan
from .fallback import policy, require_triton_fallback_possible
from .kernel_report import KernelReport, kernel_report
from .preflight import check_device, require_checkpoint_fit, served_meta
from .real import CheckpointCoverage, check_shards, checkpoint_dir, load_real

#: placement a low-memory load honours (the streaming loader places every tensor itself)
_STREAM_PLACEMENT = frozenset({"device_map", "max_memory", "key_mapping"})


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


def verify_against_meta(plan: LoadPlan, model: Any, expected: Any = None) -> Any:
    """Raise TreeMismatchError when the served tree differs from the meta build of the same plan (or from
    ``expected``, a lock's recorded signature)."""
    from ..load.meta import load_meta
    from ..tree.diff import compare
    from ..tree.signature import signature

    entries: list[str] | None = None
    if expected is None:
        meta = load_meta(plan)
        expected = signature(meta)
        entries = list(getattr(meta, "hybridload_compat_entries", []))
    else:
        entries = list(expected.header.get("compat_entries") or [])
    diff = compare(expected, signature(model, plan), labels=("meta build" if entries is None else "expected", "served"))
    if not diff.identical:
        raise TreeMismatchError("the served model's tree differs from the meta build of the same plan:\n" + diff.report(), diff)
    served = list(getattr(model, "hybridload_compat_entries", entries))
    if sorted(entries) != sorted(served):
        missing, extra = sorted(set(entries) - set(served)), sorted(set(served) - set(entries))
        raise TreeMismatchError(
            "the served load applied other transformers-compatibility entries than the meta build "
            f"(missing {missing}, extra {extra}); both sides must run the same hybridload version",
            diff,
        )
    return diff


def _plan(model: Any, lock: Any, plan_args: dict[str, Any]) -> tuple[LoadPlan, Any]:
    """The plan to serve, and the lock's expected tree (or None)."""
    if isinstance(model, LoadPlan):
        if lock is not None:
            raise PlanError("dispatch() got a LoadPlan and lock=; give the repo id with lock=path (the lock is checked "
                            "against a fresh resolution), or the plan alone")
        return plan_for(model, **plan_args), None
    plan = plan_for(model, lock=lock, **plan_args)
    expected = None
    if lock is not None:
        from ..plan.lockfile import read_lock

        locked = read_lock(lock)
        expected = locked.signature if locked is not None else None
    return plan, expected


def _check_stream_placement(placement: dict[str, Any], allow_incomplete: bool) -> None:
    refused = sorted(set(placement) - _STREAM_PLACEMENT)
    if refused:
        raise PlanError(
            f"low_memory=True streams the checkpoint itself and cannot honour {', '.join(refused)}; it takes "
            f"{', '.join(sorted(_STREAM_PLACEMENT))}. Drop them, or use low_memory=False (from_pretrained)."
        )
    if allow_incomplete:
        raise PlanError("allow_incomplete_checkpoint=True needs low_memory=False: the streaming loader never fills "
                        "a model tensor from nothing")


#: a pre-quantized (packed) checkpoint streams into the quantized tree on both paths: placement it honours
_QUANTIZED_PLACEMENT = frozenset({"device_map"})


def _is_packed(plan: LoadPlan) -> bool:
    """A pre-quantized checkpoint (modelopt NVFP4/FP8, compressed-tensors NVFP4) that transformers cannot load
    on Hopper: streamed verbatim into the plan's quantized tree on every path."""
    return plan.quantization is not None and plan.quantization.get("method") != "fp8-block"


def _check_packed_placement(plan: LoadPlan, placement: dict[str, Any], allow_incomplete: bool) -> None:
    refused = sorted(set(placement) - _QUANTIZED_PLACEMENT)
    if refused or allow_incomplete:
        names = refused + (["allow_incomplete_checkpoint"] if allow_incomplete else [])
        raise PlanError(
            f"a pre-quantized {plan.quantization['method']} checkpoint is streamed into its packed tree, which "
            f"cannot honour {', '.join(names)}; it takes device_map"
        )


def dispatch(
    model: Any,
    *,
    device_map: Any = None,
    strict: bool | None = None,
    verify_tree: bool = False,
    low_memory: bool = False,
    kernel_fallback: str | None = None,
    allow_incomplete_checkpoint: bool = False,
    lock: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Any:
    """Real load of ``model`` (a LoadPlan, Hub repo id or local folder) on the served side.

    ``kwargs``: plan decisions (``revision``, ``trust_remote_code``, ``dtype``, ... resolved for a repo id, checked
    against a plan), placement (``max_memory``, ``offload_folder``, ...) and ``from_pretrained`` pass-through
    arguments; see :mod:`hybridload.plan.arguments`. Anything else is a TypeError.
    """
    arguments.refuse_rejected(kwargs, "dispatch()")
    plan_args = {k: kwargs.pop(k) for k in list(kwargs) if k in arguments.PLAN}
    allowed = arguments.PLACEMENT | arguments.PASS_THROUGH
    arguments.check_load_kwargs(kwargs, "dispatch()", allowed=allowed)
    placement = {**kwargs, "device_map": device_map} if device_map is not None else dict(kwargs)
    chosen = policy(kernel_fallback)
    plan, expected = _plan(model, lock, plan_args)
    strict = flag("HYBRIDLOAD_STRICT") if strict is None else strict
    if chosen == "triton":
        require_triton_fallback_possible()
    packed = _is_packed(plan)
    if packed:
        _check_packed_placement(plan, placement, allow_incomplete_checkpoint)
    elif low_memory:
        _check_stream_placement(placement, allow_incomplete_checkpoint)

    from ..shim.eviction import evict_tainted

    evict_tainted()
    folder = checkpoint_dir(plan)
    check_shards(folder)
    device_differences = check_device(plan, strict=strict)
    meta = served_meta(plan, chosen)  # the tree this server builds: checked before a weight is read
    fit = require_checkpoint_fit(meta, folder, allow_incomplete=allow_incomplete_checkpoint,
                                 key_mapping=placement.get("key_mapping"))
    if packed:
        from .quantized import load_quantized

        loaded = load_quantized(meta, folder, device_map=placement.get("device_map"), dtype=plan.dtype, fmt=plan.quantization)
        loaded.hybridload_checkpoint = CheckpointCoverage()
    elif low_memory:
        from .streaming import stream_load

        loaded = stream_load(meta, folder, dtype=plan.dtype, **placement)
        loaded.hybridload_checkpoint = CheckpointCoverage()
    else:
        del meta
        loaded = load_real(plan, kernel_fallback=chosen, allow_incomplete_checkpoint=allow_incomplete_checkpoint, **placement)
    report = kernel_report(loaded)
    if strict:
        _strict_check(report)
    if verify_tree:
        verify_against_meta(plan, loaded, expected)
    loaded.hybridload_plan = plan
    loaded.hybridload_kernel_report = report
    loaded.hybridload_device_differences = device_differences
    loaded.hybridload_checkpoint_fit = fit
    return loaded
