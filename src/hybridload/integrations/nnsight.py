"""nnsight drop-in: ``import hybridload`` makes nnsight's HuggingFace models load through one load plan.

What changes once ``nnsight.modeling.huggingface`` / ``nnsight.modeling.transformers`` are imported (before or
after hybridload; every change is recorded in the integration's PatchSet and undone by ``hybridload.uninstall()``):

* the meta build (``_load_meta``) and the real load (``_load``, reached by ``dispatch()`` and ``dispatch=True``)
  resolve the wrapper's arguments into a :class:`~hybridload.LoadPlan` (commit, trust decision, classes, dtype,
  attention) and obey it: the meta build runs inside the meta-build window (kernel shim, attention rule,
  commit routing), the real load is :func:`hybridload.dispatch` of the same plan, the tokenizer comes from the
  plan's commit with its trust decision;
* the server-side placement helpers (``_config``, hence ``describe_checkpoint`` and ``max_tp_size``) read the
  config through the plan of the model key, so placement and load see the same commit and trust decision;
* the model key needs no network for a local folder or in ``HF_HUB_OFFLINE=1`` mode;
* ``_remoteable_get_env`` adds the tree-digest handshake, ``_remoteable_set_env`` checks it (see
  :mod:`.nnsight_handshake`);
* a local run on a CPU-only machine lacking a kernel package is kernel-aware (see :mod:`.nnsight_local`).

Wrappers built around a ready ``torch.nn.Module``, or given a ``config=`` object (which a plan cannot record),
keep nnsight's own behaviour. Importing this module imports neither nnsight, torch nor transformers.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import warnings
from types import ModuleType
from typing import Any, Callable

from ..hooks.passthrough import passes_through

logger = logging.getLogger(__name__)

HUGGINGFACE_MODULE = "nnsight.modeling.huggingface"
TRANSFORMERS_MODULE = "nnsight.modeling.transformers"
REMOTABLE_MODULE = "nnsight.modeling.mixins.remotable"
DEFAULT_TASK_AUTO_CLASS = "AutoModelForCausalLM"


#: the nnsight releases this integration is written and tested for (it replaces private methods)
SUPPORTED_NNSIGHT = ">=0.8.1,<0.9"

#: class -> the private names the integration replaces or reads; all must exist, or the integration stays off
_REQUIRED: dict[str, dict[str, tuple[str, ...]]] = {
    HUGGINGFACE_MODULE: {
        "HuggingFaceModel": ("_load_meta", "_load", "_remoteable_model_key", "_config", "_hub_parameter_count",
                             "_remoteable_get_env", "_remoteable_set_env", "_refuse_impossible_tp", "describe_checkpoint"),
        "": ("_CONFIG_CACHE", "_ID_CACHE", "CheckpointUnreachable"),
    },
    TRANSFORMERS_MODULE: {
        "TransformersModel": ("_load_meta", "_load", "_loaded_preprocessors", "_remoteable_get_env",
                              "_remoteable_set_env", "_wrap"),
    },
    REMOTABLE_MODULE: {"Remotable": ("describe_checkpoint", "max_tp_size")},
}

_status_lock = threading.Lock()
_status: dict[str, str] = {}  # module -> "on" | why the integration is off for it


def status() -> dict[str, str]:
    """Per nnsight module: ``"on"``, or why hybridload's nnsight integration is off (``hybridload doctor``)."""
    with _status_lock:
        return dict(_status)


def register_nnsight(add_target: Callable[[str, Callable[[ModuleType], None]], None]) -> None:
    """Register the nnsight patches as post-import targets (applied now if nnsight is imported)."""
    add_target(HUGGINGFACE_MODULE, patch_huggingface)
    add_target(TRANSFORMERS_MODULE, patch_transformers)
    add_target(REMOTABLE_MODULE, patch_remotable)


def _version_problem() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    try:
        found = version("nnsight")
    except PackageNotFoundError:
        return None  # a source checkout: the names decide
    if Version(found) not in SpecifierSet(SUPPORTED_NNSIGHT):
        return f"nnsight {found} is outside the supported range {SUPPORTED_NNSIGHT}"
    return None


def _missing_names(module: ModuleType) -> list[str]:
    missing = []
    for owner_name, names in _REQUIRED[module.__name__].items():
        owner = getattr(module, owner_name, None) if owner_name else module
        if owner is None:
            missing.append(f"{module.__name__}.{owner_name}")
            continue
        missing += [f"{module.__name__}.{owner_name + '.' if owner_name else ''}{name}" for name in names if not hasattr(owner, name)]
    return missing


def _usable(module: ModuleType) -> bool:
    """All-or-nothing: a missing or changed private name turns the integration off for this module, loudly."""
    problem = _version_problem()
    missing = _missing_names(module)
    if missing:
        problem = (problem + "; " if problem else "") + "it lacks " + ", ".join(missing)
    with _status_lock:
        _status[module.__name__] = "on" if problem is None else problem
    if problem is None:
        return True
    warnings.warn(
        f"hybridload's nnsight integration is off for {module.__name__}: {problem}. nnsight models load as plain "
        f"nnsight does (no load plan, no tree handshake); install nnsight{SUPPORTED_NNSIGHT} or a hybridload release "
        "that supports this nnsight. `hybridload doctor` reports this.",
        RuntimeWarning,
        stacklevel=2,
    )
    return False


def _replace(owner: type, name: str, make: Callable[[Callable], Callable]) -> None:
    """Wrap ``owner.name`` (own or inherited; function, classmethod or staticmethod) for the installation."""
    from .install import hold

    hold(owner, name, make, key=f"{owner.__module__}.{owner.__qualname__}.{name}")


def _applies(repo_id: Any, kwargs: dict[str, Any]) -> bool:
    """Whether a load goes through a plan: a repo id or folder, no ``config=`` object."""
    return isinstance(repo_id, (str, os.PathLike)) and kwargs.get("config") is None


def _typed(exc: Exception, plan: Any, what: str) -> Exception:
    from ..load.failures import remote_code_failure
    from ..plan.model import REMOTE

    return remote_code_failure(exc, f"{what} of {plan.model_class} ({plan.repo})", remote=plan.model_class_source == REMOTE)


# -- nnsight.modeling.mixins.remotable ----------------------------------------------------------------------
def patch_remotable(module: ModuleType) -> None:
    """``describe_checkpoint`` / ``max_tp_size`` take the deployment's trust decision (a server passes it)."""
    if not _usable(module):
        return
    cls = module.Remotable
    _replace(cls, "describe_checkpoint", _takes_trust)
    _replace(cls, "max_tp_size", _takes_trust)


def _takes_trust(original: Callable) -> Callable:
    def with_trust(cls: type, model_key: str, *args: Any, trust_remote_code: bool | None = None, **kwargs: Any) -> Any:
        return original(cls, _key_with_trust(model_key, trust_remote_code), *args, **kwargs)

    return with_trust


def _key_with_trust(model_key: str, trust_remote_code: bool | None) -> str:
    """The key a HuggingFace wrapper sizes with: the caller's trust decision written into its suffix.

    NDIF sizes a deployment with ``trust_remote_code=<the deployment's trust>``; a HuggingFace key carries
    trust in its JSON suffix, which the plan of the key reads (``_config``, the meta build of the sizing
    fallback). An explicit ``False`` is kept as such, so a policy cannot trust what the deployment does not.
    Other wrappers have no remote code to trust: their key is unchanged.
    """
    if trust_remote_code is None:
        return model_key
    from nnsight.util import from_import_path

    import_path, _, suffix = model_key.partition(":")
    try:
        wrapper = from_import_path(import_path)
        data = json.loads(suffix)
    except Exception:  # noqa: BLE001 - not a key this integration reads: nnsight reports it as before
        return model_key
    module = sys.modules.get(HUGGINGFACE_MODULE)
    if module is None or not (isinstance(wrapper, type) and issubclass(wrapper, module.HuggingFaceModel)):
        return model_key
    if not isinstance(data, dict):
        return model_key
    data["trust_remote_code"] = bool(trust_remote_code)
    return f"{import_path}:{json.dumps(data)}"


# -- nnsight.modeling.huggingface ---------------------------------------------------------------------------
def patch_huggingface(module: ModuleType) -> None:
    """Patch ``HuggingFaceModel`` (the base of every nnsight HuggingFace wrapper)."""
    if not _usable(module):
        return
    cls = module.HuggingFaceModel
    _replace(cls, "_load_meta", _hf_load_meta)
    _replace(cls, "_load", _hf_load)
    _replace(cls, "_remoteable_model_key", _model_key)
    _replace(cls, "_config", functools.partial(_config_reader, module))
    _replace(cls, "_hub_parameter_count", _hub_parameter_count)
    _replace(cls, "_remoteable_get_env", _get_env)
    _replace(cls, "_remoteable_set_env", _set_env)


def _hf_load_meta(original: Callable) -> Callable:
    @passes_through
    def _load_meta(self: Any, repo_id: Any, *args: Any, **kwargs: Any) -> Any:
        if not _applies(repo_id, kwargs):
            return original(self, repo_id, *args, **kwargs)
        from ..load.meta import load_meta
        from .nnsight_plan import resolve_plan, split_kwargs

        plan = resolve_plan(os.fspath(repo_id), self.revision, split_kwargs(kwargs), [self.AUTO_CLASS])
        return load_meta(plan)

    return _load_meta


def _placement(kwargs: dict[str, Any], plan: Any) -> dict[str, Any]:
    """What a real load may add to the plan: everything the plan does not own or record.

    nnsight's ``device=`` (how NDIF places a model on one GPU) is a placement: it becomes ``device_map``, as in
    nnsight's own loader, never a model-constructor argument.
    """
    from .nnsight_plan import PLAN_OWNED

    placement: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in PLAN_OWNED or name in plan.load_kwargs:
            continue
        if name == "model_kwargs" and isinstance(value, dict):
            placement.update({k: v for k, v in value.items() if k not in PLAN_OWNED and k not in plan.load_kwargs})
        else:
            placement[name] = value
    return _device_as_device_map(placement)


def _device_as_device_map(placement: dict[str, Any]) -> dict[str, Any]:
    """``device=`` (``transformers.pipeline``'s argument) as the ``device_map`` a real load takes.

    NDIF places a one-GPU replica with ``device=<index>``; ``from_pretrained`` has no such argument and hands
    it to the model's constructor. Read as the pipeline reads it: a non-negative index is that CUDA device, or
    the CPU on a machine without CUDA; a negative index is the CPU; a name or ``torch.device`` is that device.
    An explicit ``device_map`` wins.
    """
    if "device" not in placement:
        return placement
    placement = dict(placement)
    device = placement.pop("device")
    if device is None or placement.get("device_map") is not None:
        return placement
    if isinstance(device, int) and not isinstance(device, bool):
        import torch

        device = f"cuda:{device}" if device >= 0 and torch.cuda.is_available() else "cpu"
    placement["device_map"] = {"": str(device)}
    return placement


def _real_kwargs(self: Any, repo_id: str, kwargs: dict[str, Any], plan: Any) -> dict[str, Any]:
    """nnsight's checks and quantization reading, with the plan's trust decision."""
    self._refuse_impossible_tp(repo_id, {**kwargs, "trust_remote_code": plan.trust_remote_code})
    try:
        from nnsight.modeling.quantization import resolve_load_kwargs
    except ImportError:  # an nnsight without quantization names
        return dict(kwargs)
    return resolve_load_kwargs(dict(kwargs))


def _hf_load(original: Callable) -> Callable:
    @passes_through
    def _load(self: Any, repo_id: Any, *args: Any, **kwargs: Any) -> Any:
        if not _applies(repo_id, kwargs):
            return original(self, repo_id, *args, **kwargs)
        from .nnsight_local import real_load
        from .nnsight_plan import plan_of, resolve_plan, split_kwargs

        repo_id = os.fspath(repo_id)
        plan = plan_of(self) or resolve_plan(repo_id, self.revision, split_kwargs(kwargs), [self.AUTO_CLASS])
        return real_load(plan, **_placement(_real_kwargs(self, repo_id, kwargs, plan), plan))

    return _load


def _model_key(original: Callable) -> Callable:
    def _remoteable_model_key(self: Any) -> str:
        from .nnsight_plan import plan_of

        plan = plan_of(self)
        if plan is None:
            return original(self)
        from ..plan.revision import offline

        if plan.is_local or offline():
            ids = getattr(_huggingface_module(), "_ID_CACHE", {})
            data: dict[str, Any] = {
                "repo_id": plan.repo if plan.is_local else ids.get(self.repo_id, self.repo_id),
                "revision": self.revision,
            }
        else:
            data = json.loads(original(self))  # online: nnsight canonicalizes the id through the Hub (cached)
        if plan.trust_remote_code:
            data["trust_remote_code"] = True  # the plan's decision, whether it came from an argument or the policy
        return json.dumps(data)

    return _remoteable_model_key


def _huggingface_module() -> ModuleType:
    import sys

    return sys.modules[HUGGINGFACE_MODULE]


def _plan_for_key(cls: type, data: dict[str, Any]) -> Any:
    from .nnsight_plan import SplitKwargs, auto_classes_for_task, resolve_plan

    trust = data.get("trust_remote_code")  # omitted by nnsight unless true; an explicit false is a server's decision
    split = SplitKwargs(plan={} if trust is None else {"trust_remote_code": bool(trust)})
    auto = auto_classes_for_task(data.get("task"), getattr(cls, "AUTO_CLASS", DEFAULT_TASK_AUTO_CLASS))
    return resolve_plan(str(data.get("repo_id")), data.get("revision"), split, auto)


def _config_reader(hf_module: ModuleType, original: Callable) -> Callable:
    def _config(cls: type, model_key: str) -> Any:
        cache = hf_module._CONFIG_CACHE
        if model_key in cache:
            return cache[model_key]
        from ..errors import HybridloadError, RevisionResolutionError, TrustError
        from ..load.config import load_config
        from ..plan.revision import offline

        data = json.loads(model_key)
        try:
            config = load_config(_plan_for_key(cls, data))
        except TrustError:
            raise  # a decision, not a missing config: the real load would refuse it the same way
        except RevisionResolutionError as exc:
            if offline() or exc.__cause__ is not None:
                raise hf_module.CheckpointUnreachable(f"could not read a config for {data.get('repo_id')!r}: {exc}") from exc
            logger.warning("hybridload: no config for %r: %s", data.get("repo_id"), exc)
            config = None
        except HybridloadError as exc:
            logger.warning("hybridload: no readable config for %r: %s", data.get("repo_id"), exc)
            config = None
        cache[model_key] = config
        return config

    return _config


def _hub_parameter_count(original: Callable) -> Callable:
    def _hub_parameter_count(repo_id: str, revision: Any) -> Any:
        from ..plan.revision import offline

        if os.path.isdir(str(repo_id)) or offline():
            return None  # no Hub record to ask: nnsight counts the meta build of the plan instead
        return original(repo_id, revision)

    return _hub_parameter_count


def _get_env(original: Callable) -> Callable:
    def _remoteable_get_env(self: Any) -> dict:
        from .nnsight_handshake import ENV_KEY, client_entry

        env = dict(original(self) or {})
        entry = client_entry(self.__dict__.get("_module"))
        if entry is not None:
            env[ENV_KEY] = entry
        return env

    return _remoteable_get_env


def _set_env(original: Callable) -> Callable:
    def _remoteable_set_env(self: Any, env: Any) -> None:
        from .nnsight_handshake import ENV_KEY, check_request

        env = dict(env or {})
        entry = env.pop(ENV_KEY, None)
        original(self, env)  # nnsight's own per-request state first (PEFT adapter, attention): the tree that runs
        if entry is not None:
            check_request(self.__dict__.get("_module"), entry)

    return _remoteable_set_env


# -- nnsight.modeling.transformers --------------------------------------------------------------------------
def patch_transformers(module: ModuleType) -> None:
    """Patch ``TransformersModel`` (``LanguageModel`` and other subclasses inherit the patches)."""
    if not _usable(module):
        return
    cls = module.TransformersModel
    _replace(cls, "_load_meta", _tf_load_meta)
    _replace(cls, "_load", _tf_load)
    _replace(cls, "_loaded_preprocessors", _loaded_preprocessors)
    _replace(cls, "_remoteable_get_env", _get_env)
    _replace(cls, "_remoteable_set_env", _set_env)


def _task_and_plan(self: Any, repo_id: str, kwargs: dict[str, Any]) -> Any:
    from .nnsight_plan import auto_classes_for_task, infer_task, resolve_plan, split_kwargs

    task = self.task or infer_task(repo_id, self.revision)
    plan = resolve_plan(repo_id, self.revision, split_kwargs(kwargs), auto_classes_for_task(task, DEFAULT_TASK_AUTO_CLASS))
    self.task = task
    return plan


def _tokenizer_from_plan(self: Any, plan: Any) -> None:
    """The plan's tokenizer (its commit, its trust decision) when the task's pipeline loads one."""
    if self.tokenizer is not None:
        return
    from ..errors import PlanError, TrustError
    from ..load.tokenizer import load_tokenizer
    from .nnsight_plan import needed_preprocessors

    needed = needed_preprocessors(self.task)
    if needed is None or "tokenizer" not in needed:
        return
    try:
        self.tokenizer = load_tokenizer(plan)
    except TrustError:
        raise
    except PlanError as exc:
        raise PlanError(f"{exc}. The {self.task!r} pipeline needs a tokenizer: pass tokenizer=... to the model") from exc


def _tf_load_meta(original: Callable) -> Callable:
    @passes_through
    def _load_meta(self: Any, repo_id: Any, *args: Any, **kwargs: Any) -> Any:
        if not _applies(repo_id, kwargs):
            return original(self, repo_id, *args, **kwargs)
        import torch

        from ..build.session import build_session
        from ..errors import HybridloadError
        from ..load.config import config_in_session, ready, session_spec
        from ..load.meta import finish_meta

        repo_id = os.fspath(repo_id)
        plan = _task_and_plan(self, repo_id, kwargs)
        ready(plan)
        _tokenizer_from_plan(self, plan)
        # nnsight's own meta build (task classes, PEFT graft, the meta pipeline), fed the plan's decisions, in the
        # plan's meta build session: its from_config joins the session instead of entering the layers again
        with build_session(session_spec(plan, "meta")) as record:
            config, _ = config_in_session(plan)
            call = {
                "config": config,
                "trust_remote_code": plan.trust_remote_code,
                "dtype": getattr(torch, plan.dtype),
                "attn_implementation": plan.attn_implementation_built,
            }
            try:
                model = original(self, repo_id, *args, **call)
            except HybridloadError:
                raise
            except Exception as exc:
                raise _typed(exc, plan, "nnsight's meta build") from exc
            return finish_meta(model, plan, record, "nnsight's meta build")

    return _load_meta


def _split_real(self: Any, kwargs: dict[str, Any], plan: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline arguments, placement) of a real load; the plan owns the rest."""
    from .nnsight_plan import PLAN_OWNED, PLACEMENT, pipeline_parameters

    loading = PLACEMENT | {"revision", "model_kwargs", "model", "task"}
    pipeline_names = pipeline_parameters()
    top = {k: v for k, v in kwargs.items() if k in pipeline_names and k not in loading and k not in PLAN_OWNED}
    top["trust_remote_code"] = plan.trust_remote_code
    placement = _placement({k: v for k, v in kwargs.items() if k not in top}, plan)
    return top, placement


def _tf_load(original: Callable) -> Callable:
    @passes_through
    def _load(self: Any, repo_id: Any, *args: Any, **kwargs: Any) -> Any:
        if not _applies(repo_id, kwargs):
            return original(self, repo_id, *args, **kwargs)
        from .nnsight_local import real_load
        from .nnsight_plan import plan_of

        repo_id = os.fspath(repo_id)
        plan = plan_of(self) or _task_and_plan(self, repo_id, kwargs)
        top, placement = _split_real(self, _real_kwargs(self, repo_id, kwargs, plan), plan)
        _tokenizer_from_plan(self, plan)
        module = real_load(plan, **placement)
        return self._wrap(module, **top)  # nnsight's pipeline around a ready module (PEFT weights, preprocessors)

    return _load


def _loaded_preprocessors(original: Callable) -> Callable:
    def _loaded(self: Any) -> set:
        found = original(self)
        if found:
            return found
        from .nnsight_plan import needed_preprocessors

        better = needed_preprocessors(self.task)
        return found if better is None else better

    return _loaded
