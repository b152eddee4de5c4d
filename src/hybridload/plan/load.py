"""The four loads of a plan: config, meta tree, tokenizer, real weights. Same commit, same trust, everywhere.

Each function takes a :class:`LoadPlan` (or a repo id / folder plus ``resolve`` keyword arguments) and
passes the plan's commit as ``revision``, its code commit as ``code_revision``, its trust decision as
``trust_remote_code``, its dtype and its built attention implementation to transformers. Before any
remote code can run, the files on disk are checked against the hashes the plan recorded.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import (
    CheckpointError,
    ConfigError,
    HybridloadError,
    LockMismatchError,
    PlanError,
    RemoteCodeError,
    TrustError,
)
from .files import MissingFile, RepoFiles, sha256_file
from .model import NATIVE, REMOTE, LoadPlan
from .revision import fingerprint, fingerprint_files
from .routing import Origin, origin_of, record_origin, routed
from .trust import opt_in_instructions

#: from_pretrained kwargs the plan owns: placement may not override them.
_PLAN_OWNED = {"revision", "code_revision", "trust_remote_code", "dtype", "torch_dtype", "attn_implementation", "config"}


def plan_for(model: str | os.PathLike | LoadPlan, **resolve_kwargs: Any) -> LoadPlan:
    """``model`` itself when it is a plan, else ``resolve(model, **resolve_kwargs)``."""
    from .resolve import resolve

    return resolve(model, **resolve_kwargs)


def verify_files(plan: LoadPlan) -> None:
    """The folder content / remote-code files on disk are the ones the plan pinned (checked before they run)."""
    if plan.is_local:
        folder = Path(plan.repo)
        if not folder.is_dir():
            raise PlanError(f"the plan's folder {folder} does not exist on this machine; copy it or re-resolve")
        now = fingerprint(folder, fingerprint_files(folder))
        if now != plan.fingerprint:
            raise LockMismatchError(
                f"folder {folder} changed since the plan was resolved (fingerprint {plan.fingerprint[:12]} -> "  # type: ignore[index]
                f"{now[:12]}); review the change and re-resolve the plan"
            )
    for code in plan.code_files:
        local = code.repo == plan.repo and plan.is_local
        files = RepoFiles(code.repo, None if local else plan.code_commit, local)
        try:
            actual = sha256_file(files.path(code.path))
        except MissingFile as exc:
            raise RemoteCodeError(f"remote code file {code.path} pinned by the plan is missing: {exc}") from None
        if actual != code.sha256:
            raise LockMismatchError(
                f"remote code file {files.where(code.path)} does not match the plan (sha256 {code.sha256[:12]} -> "
                f"{actual[:12]}); it will not be run. Review the change and re-resolve the plan"
            )


def _class_matches(obj_type: type, plan_class: str, source: str) -> bool:
    if source == NATIVE:
        return f"{obj_type.__module__}.{obj_type.__qualname__}" == plan_class
    return obj_type.__name__ == plan_class.rpartition(".")[2] and obj_type.__module__.startswith("transformers_modules")


def _load_config(plan: LoadPlan) -> tuple[Any, dict[str, Any]]:
    verify_files(plan)
    from transformers import AutoConfig

    kwargs: dict[str, Any] = dict(plan.load_kwargs)
    if plan.load_revision is not None:
        kwargs["revision"] = plan.load_revision
    if plan.config_class_source == REMOTE and plan.load_code_revision is not None:
        kwargs["code_revision"] = plan.load_code_revision
    try:
        config, unused = AutoConfig.from_pretrained(
            plan.repo, trust_remote_code=plan.trust_remote_code, return_unused_kwargs=True, **kwargs
        )
    except HybridloadError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"config.json of {plan.repo} could not be loaded with {plan.config_class}: {type(exc).__name__}: {exc}"
        ) from exc
    if not _class_matches(type(config), plan.config_class, plan.config_class_source):
        raise PlanError(
            f"transformers built config class {type(config).__module__}.{type(config).__name__} but the plan says "
            f"{plan.config_class}; a class registered at run time changed the choice. Re-resolve the plan"
        )
    record_origin(
        config,
        Origin(
            repo=plan.repo,
            revision=plan.load_revision,
            code_revision=plan.load_code_revision,
            trust_remote_code=plan.trust_remote_code,
            local=plan.is_local,
            plan=plan,
        ),
    )
    return config, dict(unused)


def load_config(model: str | os.PathLike | LoadPlan, **resolve_kwargs: Any) -> Any:
    """The plan's config (its commit, its trust decision), as ``AutoConfig.from_pretrained`` returns it."""
    return _load_config(plan_for(model, **resolve_kwargs))[0]


def _model_kwargs(plan: LoadPlan, extra: dict[str, Any]) -> dict[str, Any]:
    import torch

    kwargs: dict[str, Any] = {
        "trust_remote_code": plan.trust_remote_code,
        "dtype": getattr(torch, plan.dtype),
        "attn_implementation": plan.attn_implementation_built,
        **extra,
    }
    if plan.model_class_source == REMOTE and plan.load_code_revision is not None:
        kwargs["code_revision"] = plan.load_code_revision
    return kwargs


def _check_built(model: Any, plan: LoadPlan, what: str) -> None:
    if not _class_matches(type(model), plan.model_class, plan.model_class_source):
        raise PlanError(
            f"{what} built {type(model).__module__}.{type(model).__name__} but the plan says {plan.model_class}; "
            "re-resolve the plan (a class registered at run time changed the choice)"
        )


def load_meta(model: str | os.PathLike | LoadPlan, **resolve_kwargs: Any) -> Any:
    """The plan's module tree with every tensor on ``meta``, built the way transformers and nnsight build it.

    ``AutoModel*.from_config`` inside :func:`hybridload.build.meta_build_window` (kernel shim and build
    layers) and ``torch.device("meta")``; attention follows the plan rule, not this machine's kernels.
    """
    import torch
    import transformers

    from ..build import meta_build_window
    from .attention import meta_attention

    from ..compat.state import observe

    plan = plan_for(model, **resolve_kwargs)
    with observe() as compat_record:  # entries fired by the config load and the build, for the header
        config, unused = _load_config(plan)
        auto_cls = getattr(transformers, plan.auto_class)
        kwargs = _model_kwargs(plan, unused)
        try:
            with torch.device("meta"), meta_build_window(config, kwargs) as report, meta_attention(), routed(
                origin_of(config)
            ):
                built = auto_cls.from_config(config, **kwargs)
        except HybridloadError:
            raise
        except Exception as exc:
            error = RemoteCodeError if plan.model_class_source == REMOTE else PlanError
            raise error(f"meta build of {plan.model_class} ({plan.repo}) failed: {type(exc).__name__}: {exc}") from exc
    _check_built(built, plan, "the meta build")
    if any(t.device.type != "meta" for t in _tensors(built)):
        built.to("meta")  # a constructor that pinned a buffer to a device: the meta tree holds no storage
    check_attention(built, plan, "the meta build")
    built.hybridload_plan = plan
    built.hybridload_build_report = report
    built.hybridload_compat_entries = compat_record.header()
    return built


def check_attention(built: Any, plan: LoadPlan, what: str) -> None:
    """The built attention implementation must be the plan's, unless the model's own remote code forces one.

    Remote code that sets ``config._attn_implementation`` in ``__init__`` (Kimi-Linear forces
    ``flash_attention_2``) does the same on the server, so both trees agree: warn and record it on the model
    (``hybridload_attn_override``). A native class never overrides transformers' selection: that is an error.
    """
    actual = getattr(built.config, "_attn_implementation", None)
    if actual == plan.attn_implementation_built:
        return
    message = (
        f"{what} of {plan.model_class} chose attention {actual!r} but the plan says "
        f"{plan.attn_implementation_built!r}; the class overrides transformers' attention selection"
    )
    if plan.model_class_source != REMOTE:
        raise PlanError(message)
    warnings.warn(message + " in its own code, which the server runs too", RuntimeWarning, stacklevel=3)
    built.hybridload_attn_override = actual


def _tensors(model: Any) -> list[Any]:
    return [*model.parameters(), *model.buffers()]


def load_tokenizer(model: str | os.PathLike | LoadPlan, **resolve_kwargs: Any) -> Any:
    """The plan's tokenizer, from the plan's commit and with the plan's trust decision."""
    from transformers import AutoTokenizer

    plan = plan_for(model, **resolve_kwargs)
    verify_files(plan)
    kwargs: dict[str, Any] = {"trust_remote_code": plan.trust_remote_code}
    if plan.load_revision is not None:
        kwargs["revision"] = plan.load_revision
    if plan.load_code_revision is not None and plan.code_repo != plan.repo:
        kwargs["code_revision"] = plan.load_code_revision
    try:
        return AutoTokenizer.from_pretrained(plan.repo, **kwargs)
    except HybridloadError:
        raise
    except Exception as exc:
        if not plan.trust_remote_code and "trust_remote_code" in str(exc):
            raise TrustError(
                f"the tokenizer of {plan.repo} needs remote code and the plan does not trust it. "
                + opt_in_instructions(plan.repo, [plan.code_repo or plan.repo])
            ) from None
        raise PlanError(f"tokenizer of {plan.repo} could not be loaded: {type(exc).__name__}: {exc}") from exc


def load_real(model: str | os.PathLike | LoadPlan, /, **placement: Any) -> Any:
    """The real load: ``from_pretrained`` with the plan's commit, trust, dtype and attention, plus placement.

    ``placement`` is what may differ between machines (``device_map``, ``max_memory``, offloading). This is
    what ``hybridload.dispatch`` builds on; it binds real kernels and does not enter the kernel shim.
    """
    import transformers

    if not isinstance(model, LoadPlan):
        raise PlanError("load_real takes a LoadPlan (resolve it first: hybridload.resolve(repo, ...)); keyword "
                        "arguments here are placement only")
    plan = model
    owned = sorted(_PLAN_OWNED & set(placement))
    if owned:
        raise PlanError(
            f"{', '.join(owned)} are decided by the plan and cannot be overridden at load time; re-resolve with "
            "hybridload.resolve(..., <new value>)"
        )
    verify_files(plan)
    auto_cls = getattr(transformers, plan.auto_class)
    kwargs = {**_model_kwargs(plan, dict(plan.load_kwargs)), **placement}
    if plan.load_revision is not None:
        kwargs["revision"] = plan.load_revision
    try:
        built = auto_cls.from_pretrained(plan.repo, **kwargs)
    except HybridloadError:
        raise
    except ImportError as exc:
        raise RemoteCodeError(f"the real load of {plan.model_class} needs a package that is missing: {exc}") from exc
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"the real load of {plan.describe()} failed: {type(exc).__name__}: {exc}") from exc
    _check_built(built, plan, "the real load")
    actual = getattr(built.config, "_attn_implementation", None)
    if actual != plan.attn_implementation_built:
        warnings.warn(
            f"the real load runs attention {actual!r}, the plan (and the meta tree) says "
            f"{plan.attn_implementation_built!r}; install the kernel the plan names on this server",
            RuntimeWarning,
            stacklevel=2,
        )
    built.hybridload_plan = plan
    return built
