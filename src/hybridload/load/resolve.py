"""``resolve()``: decide everything a load depends on, once, and return it as a :class:`LoadPlan`.

Order matters for safety: argument names (revisions are names, never paths) are checked before the disk is
touched; the commit, config.json, the class choice and the remote-code hashes are settled by reading files
only; the trust decision is made from the explicit argument or the policy (a lock is checked against it, never
consulted for it). Remote code is imported (to read the model class's attention support) only after the trust
decision allows it and, under a lock file, only after its hashes matched the lock, inside the build
composition's ``import`` session (kernel shim and transformers-4.x compatibility).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..build.attention import choose
from ..build.session import BuildSpec, build_session
from ..errors import ConfigError, HybridloadError, PlanError
from ..plan import arguments, lockfile
from ..plan.classes import check_native_config, choose_classes
from ..plan.code import CodeRef, collect_code_files, is_module_ref, parse_ref
from ..plan.device_profile import DeviceProfile, ProfileChoice, choose_profile
from ..plan.dtype import resolve_dtype
from ..plan.files import MissingFile, RepoFiles
from ..plan.model import NATIVE, REMOTE, SOURCE_HUB, SOURCE_LOCAL, CodeFile, LoadPlan
from ..plan.revision import check_revision, fingerprint, fingerprint_files, is_commit, resolve_commit
from ..plan.trust import EXPLICIT, decide_trust
from ..plan.validate import read_config_json, require_model_type, validate_layer_patterns
from .failures import remote_code_failure

DEFAULT_AUTO_CLASS = "AutoModelForCausalLM"


def resolve(
    model: str | os.PathLike | LoadPlan,
    *,
    revision: str | None = None,
    trust_remote_code: bool | None = None,
    code_revision: str | None = None,
    dtype: Any = None,
    attn_implementation: str | None = None,
    auto_class: str | None = None,
    device_profile: ProfileChoice = None,
    lock: str | os.PathLike | None = None,
    update_lock: bool = False,
    **load_kwargs: Any,
) -> LoadPlan:
    """Resolve ``model`` (Hub repo id or local folder) into a :class:`LoadPlan`.

    ``auto_class`` picks the task head (default ``AutoModelForCausalLM``). Extra keyword arguments are config
    overrides recorded in the plan and applied identically by every load. ``lock=path``: when the file exists,
    the fresh resolution must match it (decisions not passed here are taken from it, except trust, which is
    never taken from a file); when it does not, or with ``update_lock=True``, the plan and the tree it builds
    are written there. ``device_profile``: the device the tree is built for (a ``DeviceProfile``, ``"served"``,
    ``"current"``, ``"none"`` or a profile/lock JSON file; default: the lock's, else ``$HYBRIDLOAD_DEVICE_PROFILE``,
    else "as served").

    Given a plan, returns it unchanged; arguments must agree with it, and ``trust_remote_code=True`` confirms a
    plan read from a file for this process.
    """
    if isinstance(model, LoadPlan):
        return _confirm(model, revision=revision, trust_remote_code=trust_remote_code, code_revision=code_revision,
                        dtype=dtype, attn_implementation=attn_implementation, auto_class=auto_class,
                        device_profile=device_profile, lock=lock, load_kwargs=load_kwargs)
    check_revision(revision)
    check_revision(code_revision, what="code_revision")
    load_kwargs = _checked_load_kwargs(load_kwargs)
    lock_path = Path(lock) if lock is not None else None
    if lock_path is not None and (update_lock or not lock_path.exists()):
        lockfile.check_writable(lock_path)
    locked_lock = lockfile.read_lock(lock_path) if lock_path is not None and not update_lock else None
    locked = locked_lock.plan if locked_lock is not None else None
    dtype_from_lock = False
    if locked is not None:
        revision = revision if revision is not None else locked.revision
        auto_class = auto_class or locked.auto_class
        dtype_from_lock = dtype is None
        dtype = dtype if dtype is not None else locked.dtype
        attn_implementation = attn_implementation if attn_implementation is not None else locked.attn_implementation
        load_kwargs = load_kwargs or dict(locked.load_kwargs)
        if code_revision is None and locked.code_repo not in (None, locked.repo):
            code_revision = locked.code_commit
    profile = locked.profile if locked is not None and device_profile is None else choose_profile(device_profile)
    plan = _resolve(
        model, revision=revision, trust_remote_code=trust_remote_code, code_revision=code_revision, dtype=dtype,
        attn_implementation=attn_implementation, auto_class=auto_class or DEFAULT_AUTO_CLASS, load_kwargs=load_kwargs,
        locked=locked, lock_path=lock_path, profile=profile,
    )
    if locked is not None and lock_path is not None:
        if dtype_from_lock:  # the lock's decision, kept with the reason it was made for
            plan = dataclasses.replace(plan, dtype_source=locked.dtype_source)
        lockfile.check_full(lock_path, locked, plan)
    elif lock_path is not None:
        from .meta import load_meta
        from ..tree.signature import signature

        lockfile.write_lock(lock_path, plan, signature(load_meta(plan), plan))
    return plan


def _confirm(plan: LoadPlan, *, trust_remote_code: bool | None, lock: Any, load_kwargs: Mapping[str, Any], **given: Any) -> LoadPlan:
    """A plan given where a model is expected: arguments must agree with it (a plan is never edited)."""
    if lock is not None or load_kwargs:
        names = (["lock"] if lock is not None else []) + sorted(load_kwargs)
        raise PlanError(
            f"a LoadPlan is already resolved; {', '.join(names)} cannot change it. Re-resolve from the repo id: "
            f"hybridload.resolve({plan.repo!r}, ...)"
        )
    if trust_remote_code is not None and trust_remote_code != plan.trust_remote_code:
        from ..plan.trust import require_trust

        require_trust(plan, trust_remote_code)  # raises the TrustError that names the conflict
    conflicts = arguments.plan_conflicts(plan, given)
    if conflicts:
        raise PlanError(
            f"the plan of {plan.repo} is already resolved and disagrees with {'; '.join(conflicts)}. A plan is never "
            f"edited: re-resolve it with hybridload.resolve({plan.repo!r}, <new values>)"
        )
    if trust_remote_code and plan.trust_remote_code and plan.trust_confirmation != EXPLICIT:
        return dataclasses.replace(plan, trust_confirmation=EXPLICIT)
    return plan


def _checked_load_kwargs(load_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    arguments.refuse_rejected(load_kwargs, "resolve()")
    for name in load_kwargs:
        if name in arguments.PLACEMENT or name in arguments.PASS_THROUGH:
            raise PlanError(
                f"{name}= is not a plan decision: pass it to the real load (hybridload.dispatch(plan, {name}=...) "
                "or load_real)"
            )
        if name in arguments.SERVING:
            raise PlanError(f"{name}= is a serving option: pass it to hybridload.dispatch(plan, {name}=...)")
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
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

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


def import_remote_class(
    revision: str | None, code_revision: str | None, ref: str, *, repo: str, served: bool = False
) -> type:
    """Import a trusted remote class inside an open build session (``served``: a real load's, on the server).

    ``revision``/``code_revision`` as a plan gives them to transformers (``load_revision``/``load_code_revision``):
    None for a local folder's own code, the code repository's commit for code that lives in another repository.
    """
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    kwargs: dict[str, Any] = {}
    if revision is not None:
        kwargs["revision"] = revision
    if code_revision is not None:
        kwargs["code_revision"] = code_revision
    try:
        return get_class_from_dynamic_module(ref, repo, **kwargs)
    except HybridloadError:
        raise
    except Exception as exc:  # the repo's own code failed to import: typed, with the real cause
        raise remote_code_failure(exc, f"importing the remote class {ref} of {repo}", served=served) from exc


def _versions() -> dict[str, str]:
    import huggingface_hub
    import torch
    import transformers

    from .._version import __version__

    return {
        "hybridload": __version__,
        "torch": str(torch.__version__),
        "transformers": transformers.__version__,
        "huggingface_hub": huggingface_hub.__version__,
    }


def _quantization(config: Mapping[str, Any], files: RepoFiles) -> dict[str, Any] | None:
    """The pre-quantized checkpoint's format (config.json, plus Model Optimizer's hf_quant_config.json)."""
    from ..quant.formats import HF_QUANT_CONFIG, detect_format

    hf_quant_config = None
    try:
        path = files.path(HF_QUANT_CONFIG)
    except MissingFile:
        path = None
    if path is not None:
        hf_quant_config = read_config_json(path, files.where(HF_QUANT_CONFIG))
    fmt = detect_format(config, hf_quant_config)
    return fmt.to_dict() if fmt is not None else None


def _requested_attention(argument: str | None, config: Mapping[str, Any]) -> tuple[str | None, str]:
    """The attention implementation asked for, and where the request came from."""
    if argument is not None:
        return argument, "argument"
    for key in ("attn_implementation", "_attn_implementation"):
        value = config.get(key)
        if isinstance(value, str) and value:
            return value, "config.json"
    return None, "argument"


def _resolve(
    model: str | os.PathLike, *, revision: str | None, trust_remote_code: bool | None, code_revision: str | None,
    dtype: Any, attn_implementation: str | None, auto_class: str, load_kwargs: dict[str, Any],
    locked: LoadPlan | None, lock_path: Path | None, profile: DeviceProfile | None,
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

    quantization = _quantization(config, files)
    auto_map = config.get("auto_map") if isinstance(config.get("auto_map"), dict) else {}
    candidate_refs = [
        parse_ref(k, v, where) for k, v in auto_map.items() if (k == "AutoConfig" or k == auto_class) and v is not None
    ]
    code_repos = sorted({ref.repo or repo for ref in candidate_refs}) or [repo]
    trusted = decide_trust(trust_remote_code, code_repos)
    if locked is not None and lock_path is not None and locked.trust_remote_code != trusted.trusted:
        # before the class choice: a lock that says "trusted" must not turn into "needs trust" errors instead
        lockfile.check_static(lock_path, locked, {"trust_remote_code": trusted.trusted}, locked.code_files)
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
        assert choice.model_ref is not None
        with build_session(BuildSpec("import", device_profile=profile, label=f"{repo} model class")):
            code_pin = code_commit if (not local or code_repo != repo) else None
            model_cls = import_remote_class(None if local else commit, code_pin, choice.model_ref.raw, repo=repo)
    else:
        model_cls = choice.native_model  # type: ignore[assignment]
    requested, attn_source = _requested_attention(attn_implementation, config)
    attention = choose(model_cls, requested, source=attn_source)
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
        device_profile=profile.to_dict() if profile is not None else None,
        versions=_versions(),
        auto_map_unused=choice.unused,
        quantization=quantization,
        trust_confirmation=EXPLICIT if trust_remote_code is True else None,
    )


__all__ = ["resolve", "DEFAULT_AUTO_CLASS", "is_commit", "import_remote_class", "is_module_ref"]
