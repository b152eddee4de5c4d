"""Route transformers' own entry points through the plan rule: config, code and trust from one place.

transformers' ``AutoModel*.from_config(config)`` loads remote code from the repo's *default branch*, and
decides trust again (``None`` means native class if there is one), even when the config itself came from
``AutoConfig.from_pretrained(repo, revision=R, trust_remote_code=T)``. So code and config can come from two
commits, and a trusted remote config can meet a native model class. With ``import hybridload``:

* ``AutoConfig.from_pretrained`` resolves ``R`` to a commit once (transformers' own ``resolve_revision``)
  and remembers, for the config object it returns, where it came from (repo, commit, trust);
* every meta-build window whose config has such an origin pins ``from_config``'s remote-code lookup to
  that commit and its trust decision to ``T``; an explicit conflicting ``trust_remote_code`` is a
  TrustError rather than a mixed tree.

The config patch is recorded in the integration's PatchSet (undone by ``hybridload.uninstall()``); the
``from_config`` pins are scoped overrides that exist only while a window is open.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import weakref
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterator

from ..errors import TrustError
from ..hooks.passthrough import passes_through
from ..hooks.patch import Patch
from ..plan.trust import opt_in_instructions


@dataclass(frozen=True)
class Origin:
    """Where a config object came from: the facts ``from_config`` must reuse."""

    repo: str
    revision: str | None  # commit (or the revision transformers used when it could not be resolved)
    code_revision: str | None  # for code living in another repo ("org/repo--module.Class")
    trust_remote_code: bool
    local: bool
    plan: Any = None  # the LoadPlan when the config came from hybridload.load_config


_lock = threading.Lock()
_origins: dict[int, tuple[weakref.ref, Origin]] = {}


def record_origin(config: Any, origin: Origin) -> None:
    """Remember ``origin`` for this config object (not serialized into it; forgotten when it dies)."""
    key = id(config)

    def _forget(_ref: weakref.ref, key: int = key) -> None:
        with _lock:
            entry = _origins.get(key)
            if entry is not None and entry[0] is _ref:
                del _origins[key]

    ref = weakref.ref(config, _forget)
    with _lock:
        _origins[key] = (ref, origin)


def origin_of(config: Any) -> Origin | None:
    with _lock:
        entry = _origins.get(id(config))
    if entry is None or entry[0]() is not config:
        return None
    return entry[1]


# -- configs loaded by plain AutoConfig.from_pretrained: where they came from ----------------------------------
def _commit_of(revision: Any) -> str | None:
    resolved = getattr(revision, "resolved", None)
    return str(resolved) if resolved else (str(revision) if revision is not None else None)


def resolved_revision(name: str, kwargs: dict) -> Any:
    """transformers' own revision -> commit resolution (best effort: failures keep the revision as given)."""
    try:
        from transformers.utils.hub import resolve_revision
    except ImportError:  # transformers without resolve_revision: our resolver, same cache refs
        from ..plan.revision import is_commit, resolve_commit

        revision = kwargs.get("revision")
        if is_commit(revision) or kwargs.get("local_files_only"):
            return revision
        try:
            return resolve_commit(name, revision).commit
        except Exception:  # the load's own error handling reports it
            return revision
    return resolve_revision(
        name,
        kwargs.get("revision"),
        token=kwargs.get("token"),
        local_files_only=kwargs.get("local_files_only", False),
        cache_dir=kwargs.get("cache_dir"),
    )


def origin_from_call(name: str, kwargs: dict, config: Any) -> Origin:
    """The origin of a config ``AutoConfig.from_pretrained(name, **kwargs)`` returned (kwargs after the call)."""
    import os

    local = os.path.exists(name)
    trust = kwargs.get("trust_remote_code")
    remote_config = type(config).__module__.startswith("transformers_modules")
    return Origin(
        repo=name,
        revision=None if local else _commit_of(kwargs.get("revision")),
        code_revision=kwargs.get("code_revision"),
        trust_remote_code=bool(trust) if trust is not None else remote_config,
        local=local,
    )


# -- from_config inside a window: pin code revision and trust -----------------------------------------------
_route: contextvars.ContextVar[Origin | None] = contextvars.ContextVar("hybridload_route", default=None)


def _auto_factory() -> ModuleType:
    from transformers.models.auto import auto_factory

    return auto_factory


def _make_trust(original: Callable) -> Callable:
    @functools.wraps(original)
    @passes_through
    def resolve_trust_remote_code(trust_remote_code: Any, model_name: Any, has_local_code: bool, has_remote_code: bool, *args: Any, **kwargs: Any) -> Any:
        route = _route.get()
        if route is not None and has_remote_code:
            if trust_remote_code is None:
                trust_remote_code = route.trust_remote_code
            elif bool(trust_remote_code) != route.trust_remote_code:
                raise TrustError(
                    f"the config of {route.repo!r} was loaded with trust_remote_code={route.trust_remote_code} "
                    f"but from_config was called with trust_remote_code={trust_remote_code}: that would build a "
                    f"{'native' if route.trust_remote_code else 'remote'} model around a "
                    f"{'remote' if route.trust_remote_code else 'native'} config. Pass the same value to both "
                    "(or use hybridload.resolve/load_meta, which decide it once)"
                )
            if not trust_remote_code and not has_local_code:
                raise TrustError(
                    f"{route.repo!r} needs remote code to build this model and it is not trusted. "
                    + opt_in_instructions(route.repo, [route.repo])
                )
        return original(trust_remote_code, model_name, has_local_code, has_remote_code, *args, **kwargs)

    return resolve_trust_remote_code


def _make_dynamic(original: Callable) -> Callable:
    @functools.wraps(original)
    @passes_through
    def get_class_from_dynamic_module(class_reference: str, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        route = _route.get()
        if route is not None and not route.local and not args:
            if kwargs.get("code_revision") is None and kwargs.get("revision") is None:
                same_repo = str(pretrained_model_name_or_path) == route.repo and "--" not in class_reference
                pinned = route.revision if same_repo else route.code_revision
                if pinned is not None:
                    kwargs["code_revision"] = pinned
        return original(class_reference, pretrained_model_name_or_path, *args, **kwargs)

    return get_class_from_dynamic_module


TRUST_PATCH = Patch(
    _auto_factory, "resolve_trust_remote_code", _make_trust, lazy=True,
    key="transformers.models.auto.auto_factory.resolve_trust_remote_code",
)
DYNAMIC_PATCH = Patch(
    _auto_factory, "get_class_from_dynamic_module", _make_dynamic, lazy=True,
    key="transformers.models.auto.auto_factory.get_class_from_dynamic_module",
)


@contextlib.contextmanager
def routed(origin: Origin | None) -> Iterator[None]:
    """Within this block, ``from_config`` loads code at ``origin``'s commit with its trust decision."""
    if origin is None:
        yield
        return
    TRUST_PATCH.acquire()
    DYNAMIC_PATCH.acquire()
    token = _route.set(origin)
    try:
        yield
    finally:
        _route.reset(token)
        DYNAMIC_PATCH.release()
        TRUST_PATCH.release()
