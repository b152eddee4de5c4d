"""How an nnsight model wrapper's arguments become one load plan, and where that plan lives afterwards.

nnsight passes every keyword argument of ``TransformersModel(repo, **kwargs)`` to both of its builds (the
lazy meta build and the real load). A load plan owns only some of them: the trust decision, the dtype, the
attention implementation, the code revision and config overrides. Placement (``device_map``, ``max_memory``,
quantization configs, tokens) reaches the real load only, and pipeline arguments reach the pipeline only.

The plan of a built model is stored on its torch module (``module.hybridload_plan``, as every hybridload load
sets it), never on the nnsight wrapper: the wrapper's ``__dict__`` travels with every remote request.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import PlanError
from ..plan import arguments

logger = logging.getLogger(__name__)

#: the wrapper kwargs a plan decides (``revision`` is the wrapper's own attribute; ``torch_dtype`` is nnsight's
#: older spelling of ``dtype``): the shared argument table's plan decisions
PLAN_OWNED = tuple(name for name in arguments.PLAN if name not in ("revision", "auto_class")) + ("torch_dtype",)

#: kwargs that only say where and how weights land, or how files are fetched: never part of a plan (the shared
#: table's placement and pass-through arguments, the ones a plan refuses, and nnsight's ``device``)
PLACEMENT = frozenset(
    arguments.PLACEMENT | arguments.PASS_THROUGH | arguments.SERVING | set(arguments.REJECTED) | {"device"}
)

#: what a pipeline class's ``_load_*`` flag says it loads -> the wrapper attribute holding it
PREPROCESSOR_FLAGS = {
    "tokenizer": "_load_tokenizer",
    "image_processor": "_load_image_processor",
    "feature_extractor": "_load_feature_extractor",
    "processor": "_load_processor",
}

#: architecture-name suffix -> pipeline task, for inferring a task without the Hub (nnsight's table first)
_EXTRA_ARCH_TASKS = {"LMHeadModel": "text-generation"}


def pipeline_parameters() -> frozenset[str]:
    """Names ``transformers.pipeline`` takes itself (they never reach ``from_pretrained`` as config overrides)."""
    from transformers import pipeline

    return frozenset(
        name
        for name, p in inspect.signature(pipeline).parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    )


def _json_value(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class SplitKwargs:
    """A wrapper's load kwargs, by who decides them."""

    plan: dict[str, Any] = field(default_factory=dict)  # resolve() arguments (trust, dtype, attention, code revision)
    overrides: dict[str, Any] = field(default_factory=dict)  # config overrides: recorded in the plan
    rest: dict[str, Any] = field(default_factory=dict)  # placement and pipeline arguments: the real load only


def _meta_dtype(kwargs: dict[str, Any]) -> dict[str, Any]:
    """nnsight's own reading of a quantization name in ``dtype`` (the compute dtype; nothing to quantize on meta)."""
    try:
        from nnsight.modeling.quantization import resolve_load_kwargs
    except ImportError:  # an nnsight without quantization names
        return kwargs
    return resolve_load_kwargs(dict(kwargs), quantize=False)


def split_kwargs(kwargs: Mapping[str, Any]) -> SplitKwargs:
    """Sort ``kwargs`` (as nnsight keeps them in ``wrapper.kwargs``) into plan, overrides and the rest."""
    kwargs = _meta_dtype(dict(kwargs))
    pipeline_names = pipeline_parameters()
    plan: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in PLAN_OWNED:
            plan[name] = value
        elif name in PLACEMENT or name in pipeline_names or not _json_value(value):
            rest[name] = value
        else:
            overrides[name] = value
    dtype = plan.pop("torch_dtype", None)
    dtype = plan.pop("dtype", dtype)
    if dtype is not None and dtype != "auto":
        plan["dtype"] = dtype
    if plan.get("trust_remote_code") is None:
        plan.pop("trust_remote_code", None)
    return SplitKwargs(plan, overrides, rest)


# -- commits: one per (repo, revision) per process ---------------------------------------------------------
_pins_lock = threading.Lock()
_pins: dict[tuple[str, str | None], str] = {}


def forget_pins() -> None:
    """Forget which commit each (repo, revision) resolved to in this process (the next resolve asks again)."""
    with _pins_lock:
        _pins.clear()


def resolve_plan(repo_id: str, revision: str | None, split: SplitKwargs, auto_classes: list[str]) -> Any:
    """``hybridload.resolve`` for a wrapper: the first auto class that can build the repo wins.

    A Hub revision is resolved to a commit once per process, so every later resolve of the same
    (repo, revision) (the server's placement reads, its real load) uses the same commit.
    """
    from ..load.resolve import resolve

    local = os.path.isdir(repo_id)
    with _pins_lock:
        pinned = None if local else _pins.get((repo_id, revision))
    first_error: PlanError | None = None
    for auto_class in auto_classes or [None]:
        try:
            plan = resolve(
                repo_id,
                revision=pinned or revision,
                auto_class=auto_class,
                **split.plan,
                **split.overrides,
            )
        except PlanError as exc:
            if type(exc) is not PlanError:  # trust, revision, config, code, lock errors: decisive
                raise
            first_error = first_error or exc
            continue
        if not plan.is_local and plan.commit:
            with _pins_lock:
                _pins.setdefault((repo_id, revision), plan.commit)
        return plan
    assert first_error is not None
    raise first_error


def plan_of(wrapper: Any) -> Any:
    """The plan the wrapper's current module was built from (None for a module hybridload did not build)."""
    module = wrapper.__dict__.get("_module")
    return getattr(module, "hybridload_plan", None) if module is not None else None


# -- tasks and preprocessors --------------------------------------------------------------------------------
def auto_classes_for_task(task: str | None, default: str) -> list[str]:
    """The transformers auto classes a pipeline task builds (what nnsight's meta build tries, in order)."""
    if task is None:
        return [default]
    from transformers.pipelines import check_task

    try:
        _, targeted, _ = check_task(task)
    except Exception as exc:  # noqa: BLE001 - an unknown task: transformers' own message, typed
        raise PlanError(f"unknown pipeline task {task!r}: {exc}") from None
    names = [getattr(cls, "__name__", str(cls)) for cls in targeted.get("pt") or ()]
    return names or [default]


def _read_config_json(repo_id: str, revision: str | None) -> dict[str, Any]:
    if os.path.isdir(repo_id):
        path = Path(repo_id) / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(repo_id, "config.json", revision=revision))
        except Exception as exc:  # noqa: BLE001 - offline without a cache entry, unknown repo
            raise PlanError(
                f"cannot read config.json of {repo_id!r} to infer the pipeline task ({type(exc).__name__}: {exc}); "
                "pass task=..., e.g. TransformersModel(repo, task='text-generation')"
            ) from None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot read {path} to infer the pipeline task ({exc}); pass task=...") from None
    return data if isinstance(data, dict) else {}


def _arch_tasks() -> dict[str, str]:
    try:
        from nnsight.modeling.transformers import _ARCH_TASK as table
    except ImportError:  # pragma: no cover - a future nnsight without the table
        table = {}
    return {**dict(table), **_EXTRA_ARCH_TASKS}


def infer_task(repo_id: str, revision: str | None) -> str:
    """The pipeline task nnsight would infer, without the Hub for local folders and in offline mode.

    Online, for a Hub repo, this is nnsight's own answer (``transformers.pipelines.get_task``, the Hub's
    ``pipeline_tag``). Otherwise the config's ``architectures`` decide, by the same suffix table nnsight
    uses for a pre-loaded module.
    """
    from ..plan.revision import offline

    if not os.path.isdir(repo_id) and not offline():
        from transformers.pipelines import get_task

        return get_task(repo_id)
    architectures = _read_config_json(repo_id, revision).get("architectures") or []
    for name in architectures:
        for suffix, task in _arch_tasks().items():
            if str(name).endswith(suffix):
                return task
    raise PlanError(
        f"cannot infer the pipeline task of {repo_id!r} without the Hub (architectures {architectures}); "
        "pass task=..., e.g. TransformersModel(repo, task='text-generation')"
    )


def needed_preprocessors(task: str | None) -> set[str] | None:
    """Which preprocessors the task's pipeline class loads (None when that cannot be told).

    transformers 5 names the pipeline class as a dotted string in ``check_task(task)[1]["impl"]``; nnsight
    0.8.1 reads the ``_load_*`` flags off that value as if it were the class, so it sources nothing (the
    "Impossible to guess which tokenizer to use" failure). The string is imported here.
    """
    if task is None:
        return None
    from transformers.pipelines import check_task

    try:
        _, targeted, _ = check_task(task)
        impl = targeted["impl"]
        if isinstance(impl, str):
            import importlib

            module_name, _, class_name = impl.rpartition(".")
            impl = getattr(importlib.import_module(module_name), class_name)
    except Exception:  # noqa: BLE001 - unknown task or layout: let nnsight decide
        return None
    return {attr for attr, flag in PREPROCESSOR_FLAGS.items() if getattr(impl, flag, False)}
