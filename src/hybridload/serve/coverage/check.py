"""``checkpoint_coverage``: does this checkpoint fill this meta tree exactly? Answered from headers alone.

The entry points the CLI, the pytest plugin and ``dispatch`` call:

* :func:`checkpoint_coverage` -- a meta model and a checkpoint (local folder, index file, Hub repo id + commit,
  or a :class:`TensorIndex`; default: the checkpoint of the plan the model was built from);
* :func:`coverage_for_plan` -- build the plan's meta tree, then check it (``hybridload check --checkpoint``);
* :func:`require_coverage` -- the same, raising :class:`~hybridload.errors.CheckpointCoverageError` unless it
  fits (``dispatch`` before reading a weight).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

from ...errors import CheckpointUnavailableError, PlanError
from .hub import hub_index
from .index import TensorIndex, local_index
from .mapping import assess
from .report import CoverageReport

Checkpoint = Union[str, "os.PathLike[str]", TensorIndex, None]


def resolve_index(checkpoint: Checkpoint, *, revision: str | None = None, plan: Any = None, token: Any = None) -> TensorIndex:
    """The tensor index ``checkpoint`` names; ``None`` means the plan's own checkpoint (its folder or repo@commit)."""
    if isinstance(checkpoint, TensorIndex):
        return checkpoint
    if checkpoint is None:
        if plan is None:
            raise PlanError(
                "no checkpoint given and the model carries no load plan (hybridload_plan); pass checkpoint= a local "
                "folder, an index file or a Hub repo id."
            )
        if plan.is_local:
            return local_index(plan.repo)
        return hub_index(plan.repo, plan.commit or revision, token=token)
    path = Path(checkpoint)
    if path.is_dir():
        return local_index(path)
    if path.is_file():
        if path.name.endswith((".safetensors", ".safetensors.index.json")):
            return local_index(path.parent)
        return TensorIndex.read(path)
    text = os.fspath(checkpoint)
    if text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1):
        raise CheckpointUnavailableError(
            f"checkpoint {text!r} does not exist on this machine; pass an existing folder, an index file or a Hub repo id."
        )
    return hub_index(text, revision, token=token)


def checkpoint_coverage(
    meta_model: Any,
    checkpoint: Checkpoint = None,
    *,
    revision: str | None = None,
    key_mapping: dict[str, str] | None = None,
    token: Any = None,
) -> CoverageReport:
    """How ``checkpoint`` maps onto ``meta_model`` with the real load's rules, without reading a weight.

    ``checkpoint``: a local folder (shard headers and ``model.safetensors.index.json``), a file written by
    :meth:`TensorIndex.write`, a Hub repo id (with ``revision``; headers only, offline-aware), a TensorIndex,
    or None for the checkpoint of the plan ``meta_model`` was built from. ``key_mapping`` as for
    ``from_pretrained`` (default: the plan's, if it has one).
    """
    plan = getattr(meta_model, "hybridload_plan", None)
    if key_mapping is None and plan is not None:
        key_mapping = plan.load_kwargs.get("key_mapping")
    index = resolve_index(checkpoint, revision=revision, plan=plan, token=token)
    return assess(meta_model, index, key_mapping)


def coverage_for_plan(model: Any, checkpoint: Checkpoint = None, **resolve_kwargs: Any) -> tuple[Any, CoverageReport]:
    """Build the meta tree of a plan (or repo id / folder, resolved with ``resolve_kwargs``) and check it.

    Returns (meta model, report): the CLI prints both the tree summary and the report.
    """
    from ...load.config import plan_for
    from ...load.meta import load_meta

    plan = plan_for(model, **resolve_kwargs)
    meta = load_meta(plan)
    return meta, checkpoint_coverage(meta, checkpoint)


def require_coverage(meta_model: Any, checkpoint: Checkpoint = None, **kwargs: Any) -> CoverageReport:
    """:func:`checkpoint_coverage`, raising CheckpointCoverageError (with the report) unless the checkpoint fits."""
    return checkpoint_coverage(meta_model, checkpoint, **kwargs).raise_if_incomplete()
