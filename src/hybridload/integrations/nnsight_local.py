"""Kernel-aware real loads for local runs on a machine that lacks a kernel package (a laptop, a CI box).

nnsight dispatches (loads real weights) the first time a model runs locally. On a machine without CUDA,
remote code that imports ``mamba_ssm`` or ``causal_conv1d`` at module level cannot even be imported, so the
plain real load fails with whatever the model's code raises. Here, after the plain load
(:func:`hybridload.dispatch`) failed, the load is retried once inside the kernel shim:

* stand-ins are served only for kernel packages that are absent or broken on this machine, and transformers'
  availability checks stay truthful, so the model's own non-kernel code path is taken where the code has one;
* a kernel the model calls anyway raises :class:`~hybridload.errors.KernelUnavailableError` naming it (a
  stand-in called with real tensors never computes anything);
* a kernel *class* the model instantiates would be built as a pure-PyTorch twin, which would run silently, so
  the load is refused with :class:`~hybridload.errors.KernelUnavailableError` naming the class instead.

On a CUDA machine (a server) a missing kernel stays the plain load's error: a served model must bind real
kernels. ``HYBRIDLOAD_STRICT=1`` refuses any stand-in (see :func:`hybridload.dispatch`).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Iterator, Mapping

from ..errors import HybridloadError, KernelUnavailableError

logger = logging.getLogger(__name__)

_DISPATCH_OPTIONS: ContextVar[Mapping[str, Any]] = ContextVar("hybridload_nnsight_dispatch_options", default=MappingProxyType({}))


@contextlib.contextmanager
def dispatch_options(**options: Any) -> Iterator[None]:
    """Extra :func:`hybridload.dispatch` arguments (``strict``, ``verify_tree``, ``low_memory``,
    ``kernel_fallback``) for the nnsight real loads inside this block, in this thread or task only.

    For a server whose loader is nnsight's own (NDIF calls ``from_model_key(key, dispatch=True, ...)``): the
    wrapper's keyword arguments are the model's, so the deployment's dispatch settings travel here instead.
    """
    token = _DISPATCH_OPTIONS.set(MappingProxyType({**_DISPATCH_OPTIONS.get(), **options}))
    try:
        yield
    finally:
        _DISPATCH_OPTIONS.reset(token)


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def real_load(plan: Any, **placement: Any) -> Any:
    """:func:`hybridload.dispatch` of ``plan``; on a CPU-only machine missing a kernel, the retry described above."""
    from ..serve.dispatch import dispatch

    placement = {**_DISPATCH_OPTIONS.get(), **placement}
    try:
        return dispatch(plan, **placement)
    except Exception as first:
        if _cuda():
            raise
        retried = _retry_under_shim(plan, placement, first)
        if retried is None:
            raise
        return retried


def _retry_under_shim(plan: Any, placement: dict[str, Any], first: BaseException) -> Any:
    """The model loaded with stand-ins for missing kernels, or None when no kernel was missing."""
    from ..serve.dispatch import dispatch
    from ..shim.kernel_shim import kernel_shim

    with kernel_shim() as report:
        try:
            model = dispatch(plan, **placement)
        except HybridloadError as second:
            if not report:
                return None
            raise second from first
        except Exception as second:  # noqa: BLE001 - the model's own failure even with stand-ins
            if not report:
                return None
            raise KernelUnavailableError(
                f"{plan.model_class} cannot be loaded on this machine: it needs {_packages(report)}, which "
                f"{'is' if len(report.packages) == 1 else 'are'} not usable here, and loading it with hybridload's "
                f"stand-ins failed too ({type(second).__name__}: {second}). Run it where the kernels work "
                "(remote=True), or install them.",
                name=report.packages[0],
            ) from second
    if not report:
        return model
    _refuse_twins(model, plan, report)
    message = (
        f"{plan.model_class} runs here without {_packages(report)}: its own non-kernel code runs where it has "
        "one, and any call of a missing kernel raises KernelUnavailableError naming it. For the real kernels "
        "run it remotely (remote=True) or where the packages work."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=4)
    logger.info("%s (first load failed with %s: %s)", message, type(first).__name__, first)
    model.hybridload_local_stand_ins = report.to_dict()
    return model


def _packages(report: Any) -> str:
    return ", ".join(f"{package} ({report.reasons.get(package, 'not usable')})" for package in report.packages)


def _refuse_twins(model: Any, plan: Any, report: Any) -> None:
    from ..serve.kernel_report import kernel_report

    twins = kernel_report(model).twins
    if not twins:
        return
    names = ", ".join(sorted({f"{entry.target} (at {entry.symbol})" for entry in twins}))
    raise KernelUnavailableError(
        f"{plan.model_class} builds kernel classes from {_packages(report)}: {names}. hybridload only has "
        "pure-PyTorch twins of them on this machine and does not run those silently in place of the kernels. "
        "Run the model where the kernel packages work (remote=True), or install them.",
        name=twins[0].package,
    )
