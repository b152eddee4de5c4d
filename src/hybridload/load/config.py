"""Config loads of a plan: its commit, its trust decision, checked files, one build session."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..build.routing import Origin, record_origin
from ..build.session import BuildSpec, build_session
from ..errors import ConfigError, HybridloadError, LockMismatchError, PlanError, RemoteCodeError
from ..plan.files import MissingFile, RepoFiles, sha256_file
from ..plan.model import NATIVE, REMOTE, LoadPlan
from ..plan.revision import fingerprint, fingerprint_files
from ..plan.trust import require_trust
from .failures import raised_by_hybridload


def plan_for(model: str | os.PathLike | LoadPlan, **resolve_kwargs: Any) -> LoadPlan:
    """``model`` itself when it is a plan (arguments must agree), else ``resolve(model, **resolve_kwargs)``."""
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


def ready(plan: LoadPlan) -> None:
    """Before any of the plan's code may run: trust granted in this process, files as pinned."""
    require_trust(plan)
    verify_files(plan)


def origin_of_plan(plan: LoadPlan) -> Origin:
    return Origin(
        repo=plan.repo,
        revision=plan.load_revision,
        code_revision=plan.load_code_revision,
        trust_remote_code=plan.trust_remote_code,
        local=plan.is_local,
        plan=plan,
    )


def class_matches(obj_type: type, plan_class: str, source: str) -> bool:
    if source == NATIVE:
        return f"{obj_type.__module__}.{obj_type.__qualname__}" == plan_class
    return obj_type.__name__ == plan_class.rpartition(".")[2] and obj_type.__module__.startswith("transformers_modules")


def config_in_session(plan: LoadPlan) -> tuple[Any, dict[str, Any]]:
    """``AutoConfig.from_pretrained`` of the plan, inside an open build session (no layers of its own)."""
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
        if raised_by_hybridload(exc):
            from .failures import remote_code_failure

            raise remote_code_failure(exc, f"loading the config of {plan.repo}") from exc
        raise ConfigError(
            f"config.json of {plan.repo} could not be loaded with {plan.config_class}: {type(exc).__name__}: {exc}"
        ) from exc
    if not class_matches(type(config), plan.config_class, plan.config_class_source):
        raise PlanError(
            f"transformers built config class {type(config).__module__}.{type(config).__name__} but the plan says "
            f"{plan.config_class}; a class registered at run time changed the choice. Re-resolve the plan"
        )
    record_origin(config, origin_of_plan(plan))
    return config, dict(unused)


def session_spec(plan: LoadPlan, purpose: str, **extra: Any) -> BuildSpec:
    from ..compat.compat_window import cpu_scalars_requested

    return BuildSpec(purpose, origin=origin_of_plan(plan), cpu_scalars=cpu_scalars_requested(),
                     device_profile=plan.profile, label=plan.model_class, **extra)


def load_config(model: str | os.PathLike | LoadPlan, **resolve_kwargs: Any) -> Any:
    """The plan's config (its commit, its trust decision), as ``AutoConfig.from_pretrained`` returns it."""
    plan = plan_for(model, **resolve_kwargs)
    ready(plan)
    with build_session(session_spec(plan, "config")):
        return config_in_session(plan)[0]
