"""``resolve()``: decide everything a load depends on, once, and return it as a :class:`LoadPlan`.

Order matters for safety: the commit, config.json, the class choice and the remote-code hashes are
settled by reading files only. Remote code is imported (to read the model class's attention support)
only after the trust decision allows it and, under a lock file, only after its hashes matched the lock.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError, HybridloadError, PlanError, RemoteCodeError
from . import lockfile
from .classes import check_native_config, choose_classes
from .code import CodeRef, collect_code_files, parse_ref
from .dtype import resolve_dtype
from .files import MissingFile, RepoFiles
from .model import NATIVE, REMOTE, SOURCE_HUB, SOURCE_LOCAL, CodeFile, LoadPlan
from .revision import fingerprint, fingerprint_files, is_commit, resolve_commit
from .trust import TrustDecision, decide_trust
from .validate import read_config_json, require_model_type, validate_layer_patterns

DEFAULT_AUTO_CLASS = "AutoModelForCausalLM"

#: kwargs a plan decides itself, or that belong elsewhere: name -> what to do instead.
_REJECTED_KWARGS = {
    "torch_dtype": "use dtype=",
    "config": "load_config(plan) builds the config from the plan; pass config overrides as keyword arguments",
    "token": "tokens are never stored in plans; log in with `hf auth login` or set HF_TOKEN",
    "cache_dir": "set HF_HUB_CACHE instead (plans read the same cache as transformers)",
    "local_files_only": "set HF_HUB_OFFLINE=1 instead",
    "force_download": "not part of a load plan",
    "proxies": "configure proxies in the environment",
    "subfolder": "load plans do not support subfolders yet",
    "state_dict": "not part of a load plan",
}
_PLACEMENT_KWARGS = {
    "device_map", "max_memory", "offload_folder", "offload_buffers", "tp_plan", "tp_size", "device_mesh",
    "distributed_config", "low_cpu_mem_usage", "offload_state_dict",
}


def resolve(
    model: str | os.PathLike | LoadPlan,
    *,
    revision: str | None = None,
    trust_remote_code: bool | None = None,
    code_revision: str | None = None,
    dtype: Any = None,
    attn_implementation: str | None = None,
    auto_class: str | None = None,
    lock: str | os.PathLike | None = None,
    update_lock: bool = False,
    **load_kwargs: Any,
) -> LoadPlan:
    """Resolve ``model`` (Hub repo id or local folder) into a :class:`LoadPlan`.

    ``auto_class`` picks the task head (default ``AutoModelForCausalLM``). Extra keyword arguments are
    config overrides / model kwargs recorded in the plan and applied identically by every load.
    ``lock=path`` writes the plan there, or checks it against the file when it exists (decisions not passed
    here are taken from the lock); ``update_lock=True`` rewrites the file with the fresh resolution.
    """
    if isinstance(model, LoadPlan):
        arguments = {
            "revision": revision, "trust_remote_code": trust_remote_code, "code_revision": code_revision,
            "dtype": dtype, "attn_implementation": attn_implementation, "auto_class": auto_class, "lock": lock,
        }
        given = [name for name, value in arguments.items() if value is not None] + sorted(load_kwargs)
        if given:
            raise PlanError(f"a LoadPlan is already resolved; {', '.join(given)} cannot change it. Re-resolve from the repo id")
        return model
    load_kwargs = _checked_load_kwargs(load_kwargs)
    lock_path = Path(lock) if lock is not None else None
    locked = lockfile.read_lock(lock_path) if lock_path is not None and not update_lock else None
    trust_override = None
    if locked is not None:
        revision = revision if revision is not None else locked.revision
        auto_class = auto_class or locked.auto_class
        dtype = dtype if dtype is not None else locked.dtype
        attn_implementation = attn_implementation if attn_implementation is not None else locked.attn_implementation
        load_kwargs = load_kwargs or dict(locked.load_kwargs)
        if code_revision is None and locked.code_repo not in (None, locked.repo):
            code_revision = locked.code_commit
        if trust_remote_code is None:
            trust_override = TrustDecision(locked.trust_remote_code, f"lock file {lock_path}: {locked.trust_reason}")
    plan = _resolve(
        model, revision=revision, trust_remote_code=trust_remote_code, trust_override=trust_override,
        code_revision=code_revision, dtype=dtype, attn_implementation=attn_implementation,
        auto_class=auto_class or DEFAULT_AUTO_CLASS, load_kwargs=load_kwargs, locked=locked, lock_path=lock_path,
    )
    if locked is not None:
        lockfile.check_full(lock_path, locked, plan)  # type: ignore[arg-type]
    elif lock_path is not None:
        lockfile.write_lock(lock_path, plan)
    return plan


def _checked_load_kwargs(load_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    for name in load_kwargs:
        if name in _REJECTED_KWARGS:
            raise PlanError(f"resolve() does not take {name}=: {_REJECTED_KWARGS[name]}")
        if name in _PLACEMENT_KWARGS:
            raise PlanError(f"{name}= is placement, not a plan decision: pass it to load_real(plan, ...) / hybridload.dispatch(plan, ...)")
    try:
        json.dumps(dict(load_kwargs))
    except (TypeError, ValueError) as exc:
        raise PlanError(f"load plan kwargs must be JSON-serializable (they are written to lock files): {exc}") from None
    return dict(load_kwargs)


def _source(model: str | os.PathLike, revision: str | None) -> tuple[str, bool]:
    text = os.fspath(model)
    if os.path.isdir(text):
        if revision is not None:
            raise PlanError(f"{text} is a local folder; it has no revisions (revision={revision!r}). Remove revision=")
        return str(Path(text).resolve()), True
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path or os.path.exists(text):
        raise PlanError(f"{text!r} is neither an existing local folder nor a Hub repo id ('org/name'); check the path")
    from huggingface_hub.utils import validate_repo_id
    from huggingface_hub.errors import HFValidationError

    try:
        validate_repo_id(text)
    except HFValidationError as exc:
        raise PlanError(f"{text!r} is not a valid Hub repo id ({exc}); use 'org/name' or a local folder") from None
    return text, False


def _code_source(repo: str, local: bool, commit: str | None, refs: tuple[CodeRef, ...], code_revision: str | None) -> tuple[str | None, str | None, bool]:
    """(code repo, code commit, code is local) for the references that will run."""
    if not refs:
        if code_revision is not None:
            raise PlanError(f"code_revision={code_revision!r} given but {repo} runs no remote code in this plan")
        return None, None, local
    upstream = {ref.repo for ref in refs if ref.repo is not None and ref.repo != repo}
    if len(upstream) > 1 or (upstream and any(ref.repo in (None, repo) for ref in refs)):
        raise PlanError(f"{repo}: auto_map mixes code from several repositories ({sorted(upstream | {repo})}); not supported")
    if not upstream:
        if code_revision is not None and not local:
            code_commit = resolve_commit(repo, code_revision).commit
            if code_commit != commit:
                raise PlanError(
                    f"code_revision={code_revision!r} resolves to {code_commit} but the config comes from {commit}: "
                    "config and code must come from one commit. Drop code_revision (the code is in the same repo)"
                )
        if code_revision is not None and local:
            raise PlanError(f"{repo} is a local folder; its code has no revisions. Remove code_revision=")
        return repo, commit, local
    code_repo = upstream.pop()
    return code_repo, resolve_commit(code_repo, code_revision).commit, False


def _import_remote_class(plan_repo: str, local: bool, revision: str | None, code_commit: str | None, ref: CodeRef) -> type:
    """Import the trusted model class under the kernel shim (CUDA-only imports get stand-ins)."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    from ..shim.window import kernel_shim

    kwargs: dict[str, Any] = {} if local else {"revision": revision, "code_revision": code_commit}
    try:
        with kernel_shim():
            return get_class_from_dynamic_module(ref.raw, plan_repo, **kwargs)
    except HybridloadError:
        raise
    except Exception as exc:  # the repo's own code failed to import: typed, with the file named
        raise RemoteCodeError(
            f"importing the remote model class {ref.raw} of {plan_repo} failed: {type(exc).__name__}: {exc}. "
            "If it names a missing package, install it (CUDA-only kernel packages are stood in for automatically; "
            "register others with hybridload.register_kernel_package)"
        ) from exc


def _versions() -> dict[str, str]:
    import huggingface_hub
    import torch
    import transformers

    from .. import __version__

    return {
        "hybridload": __version__,
        "torch": str(torch.__version__),
        "transformers": transformers.__version__,
        "huggingface_hub": huggingface_hub.__version__,
    }


def _resolve(
    model: str | os.PathLike, *, revision: str | None, trust_remote_code: bool | None, trust_override: TrustDecision | None,
    code_revision: str | None, dtype: Any, attn_implementation: str | None, auto_class: str,
    load_kwargs: dict[str, Any], locked: LoadPlan | None, lock_path: Path | None,
) -> LoadPlan:
    repo, local = _source(model, revision)
    if local:
        commit, note = None, "local folder (content fingerprint)"
    else:
        resolved = resolve_commit(repo, revision)
        commit, note = resolved.commit, resolved.note
    files = RepoFiles(repo, commit, local)
    where = files.where("config.json")
    try:
        config_path = files.path("config.json")
    except MissingFile as exc:
        raise ConfigError(f"no config.json for {repo}: {exc}; a model repository needs one") from None
    config = read_config_json(config_path, where)
    model_type = require_model_type(config, where)
    validate_layer_patterns(config, where)

    auto_map = config.get("auto_map") if isinstance(config.get("auto_map"), dict) else {}
    candidate_refs = [parse_ref(k, v, where) for k, v in auto_map.items() if k == "AutoConfig" or k == auto_class]
    code_repos = sorted({ref.repo or repo for ref in candidate_refs}) or [repo]
    trusted = trust_override or decide_trust(trust_remote_code, code_repos)
    choice = choose_classes(repo, where, config, model_type, auto_class, trusted)

    code_repo, code_commit, code_local = _code_source(repo, local, commit, choice.refs, code_revision)
    code_files: list[CodeFile] = []
    if choice.refs:
        code_files = collect_code_files(RepoFiles(code_repo, code_commit, code_local), choice.refs, where)  # type: ignore[arg-type]
    folder_fingerprint = fingerprint(Path(repo), fingerprint_files(Path(repo))) if local else None

    if locked is not None and lock_path is not None:
        lockfile.check_static(
            lock_path, locked,
            {"repo": repo, "commit": commit, "fingerprint": folder_fingerprint, "trust_remote_code": trusted.trusted,
             "model_class": choice.model_class, "config_class": choice.config_class, "code_commit": code_commit},
            code_files,
        )

    # -- only now may code run (native classes, or remote code that is trusted and matched the lock) --
    if choice.config_source == NATIVE:
        remote_config = auto_map.get("AutoConfig") if isinstance(auto_map.get("AutoConfig"), str) else None
        check_native_config(choice.config_class, config, where, remote_config, trusted.trusted, repo)
    if choice.model_source == REMOTE:
        model_cls = _import_remote_class(repo, local, commit, code_commit, choice.model_ref)  # type: ignore[arg-type]
    else:
        model_cls = choice.native_model  # type: ignore[assignment]
    from .attention import choose

    attention = choose(model_cls, attn_implementation)
    dtype_name, dtype_source = resolve_dtype(dtype, config, files)

    return LoadPlan(
        repo=repo,
        source=SOURCE_LOCAL if local else SOURCE_HUB,
        revision=revision,
        commit=commit,
        fingerprint=folder_fingerprint,
        revision_note=note,
        trust_remote_code=trusted.trusted,
        trust_reason=trusted.reason,
        auto_class=auto_class,
        model_type=model_type,
        config_class=choice.config_class,
        config_class_source=choice.config_source,
        model_class=choice.model_class,
        model_class_source=choice.model_source,
        code_repo=code_repo,
        code_commit=code_commit,
        code_files=tuple(code_files),
        dtype=dtype_name,
        dtype_source=dtype_source,
        attn_implementation=attention.requested,
        attn_implementation_built=attention.built,
        attn_note=attention.note,
        load_kwargs=load_kwargs,
        versions=_versions(),
    )


__all__ = ["resolve", "DEFAULT_AUTO_CLASS", "is_commit"]
