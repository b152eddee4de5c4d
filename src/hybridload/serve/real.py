"""``load_real``: the plan's real load (``from_pretrained``), in one ``real`` build session.

The session enters the transformers-4.x compatibility window and the commit/trust routing once; the config
is loaded inside it, the model class is imported (under a short kernel-shim window that binds hybridload's
Triton kernels when the fallback policy says so: the window is never held for the whole load), and
``from_pretrained`` runs with the plan's commit, trust, dtype and attention plus the caller's placement.

A served model never holds weights the checkpoint did not provide: missing and unexpected tensors (after the
class's own ignore rules, tied weights and non-persistent buffers, which transformers' loading info already
honours) are refused with a CheckpointError listing them, unless the caller opts out explicitly
(``allow_incomplete_checkpoint=True``, recorded on the model). A truncated or corrupt shard is named.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..build.session import LAYERS, BuildRecord, build_session
from ..errors import CheckpointError, HybridloadError, InternalError, RemoteCodeError, ValueDependentInitError
from ..load.config import config_in_session, ready, session_spec
from ..load.failures import remote_code_failure
from ..load.meta import check_built, model_kwargs
from ..plan import arguments
from ..plan.model import REMOTE, LoadPlan

_LISTED = 12


@dataclass
class CheckpointCoverage:
    """What the real load read, by the checkpoint's own account (transformers' loading info)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    allowed_incomplete: bool = False

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def to_dict(self) -> dict[str, Any]:
        return {"missing": self.missing, "unexpected": self.unexpected, "mismatched": self.mismatched,
                "allowed_incomplete": self.allowed_incomplete}


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown if len(items) <= _LISTED else f"{shown}, ... ({len(items) - _LISTED} more)"


def refuse_incomplete(coverage: CheckpointCoverage, what: str, where: str) -> None:
    parts = []
    if coverage.missing:
        parts.append(f"{len(coverage.missing)} model tensor(s) the checkpoint does not provide (they would hold "
                     f"freshly initialised values): {_listing(coverage.missing)}")
    if coverage.unexpected:
        parts.append(f"{len(coverage.unexpected)} checkpoint tensor(s) the model never reads: {_listing(coverage.unexpected)}")
    if coverage.mismatched:
        parts.append(f"{len(coverage.mismatched)} tensor(s) with another shape: {_listing(coverage.mismatched)}")
    raise CheckpointError(
        f"the checkpoint {where} does not fit {what}: " + "; ".join(parts) + ". Check that the checkpoint belongs to "
        "this config (same architecture, layer and expert counts). To serve initialised tensors anyway (rarely "
        "right), pass allow_incomplete_checkpoint=True; the served model's report records it. Nothing was returned."
    )


def checkpoint_dir(plan: LoadPlan) -> Path:
    """The local folder holding the plan's weights (the Hub snapshot of the plan's commit; offline, the cached
    snapshot only: older huggingface_hub versions list the repository first even then)."""
    if plan.is_local:
        return Path(plan.repo)
    from huggingface_hub import snapshot_download

    from ..plan.revision import offline

    try:
        return Path(
            snapshot_download(
                plan.repo,
                revision=plan.commit or plan.revision,
                allow_patterns=["*.safetensors", "*.safetensors.index.json", "*.json"],
                local_files_only=offline(),
            )
        )
    except Exception as exc:  # offline with no cached snapshot, gated repo, network down ...
        raise CheckpointError(
            f"cannot get the weights of {plan.repo}@{plan.commit}: {type(exc).__name__}: {exc}. Download them "
            "once while online (hf download), or point the plan at a local folder."
        ) from exc


def check_shards(folder: Path) -> None:
    """Every safetensors shard's header parses and its data is all there (CheckpointError naming the shard)."""
    from .streaming.checkpoint import CheckpointReader

    with CheckpointReader(folder):
        pass


def model_class(plan: LoadPlan, record: BuildRecord, kernel_fallback: str) -> type:
    """The class whose ``from_pretrained`` runs: the Auto class for native plans; for remote code the class
    itself, imported inside the open session (with the Triton fallback, under a short kernel-shim window that
    keeps the module: it bound hybridload's kernels on purpose). Calling the remote class directly keeps
    transformers' ``check_imports`` from importing the kernel packages again outside that window."""
    import transformers

    if plan.model_class_source != REMOTE:
        return getattr(transformers, plan.auto_class)
    from ..load.resolve import import_remote_class

    def load() -> type:
        return import_remote_class(plan.load_revision, plan.load_code_revision, plan.model_class, repo=plan.repo, served=True)

    if kernel_fallback != "triton":
        return load()
    with contextlib.ExitStack() as stack:
        record.shim = LAYERS["shim"].enter(stack, record.spec, record)
        return load()


def load_real(
    plan: LoadPlan, /, *, kernel_fallback: str = "none", allow_incomplete_checkpoint: bool = False, **placement: Any
) -> Any:
    """The real load of ``plan`` (a :class:`LoadPlan`): ``from_pretrained`` with the plan's decisions.

    ``placement`` is what may differ between machines (``device_map``, ``max_memory``, offloading) plus
    ``from_pretrained`` arguments that pass through unchanged (see :mod:`hybridload.plan.arguments`).
    """
    if not isinstance(plan, LoadPlan):
        from ..errors import PlanError

        raise PlanError("load_real takes a LoadPlan (resolve it first: hybridload.resolve(repo, ...)); keyword "
                        "arguments here are placement only")
    given_plan_args = {k: placement.pop(k) for k in list(placement) if k in arguments.PLAN}
    conflicts = arguments.plan_conflicts(plan, given_plan_args)
    if conflicts:
        from ..errors import PlanError

        raise PlanError(
            f"{'; '.join(conflicts)}: decided by the plan, which is never edited at load time; re-resolve with "
            f"hybridload.resolve({plan.repo!r}, <new values>)"
        )
    arguments.check_load_kwargs(placement, "load_real()", allowed=arguments.PLACEMENT | arguments.PASS_THROUGH)
    ready(plan)
    folder = None
    if plan.is_local:
        folder = Path(plan.repo)
        check_shards(folder)
    with build_session(session_spec(plan, "real", kernel_fallback=kernel_fallback)) as record:
        config, unused = config_in_session(plan)
        cls = model_class(plan, record, kernel_fallback)
        kwargs = {**model_kwargs(plan, unused), **placement}  # config overrides were applied by the config load
        kwargs.pop("code_revision", None)
        if plan.model_class_source == REMOTE:
            kwargs.pop("trust_remote_code", None)  # the class itself is called: no Auto trust prompt
        if plan.load_revision is not None:
            kwargs["revision"] = plan.load_revision
        try:
            loaded = cls.from_pretrained(plan.repo, config=config, output_loading_info=True, **kwargs)
        except HybridloadError:
            raise
        except ImportError as exc:
            raise RemoteCodeError(f"the real load of {plan.model_class} needs a package that is missing: {exc}") from exc
        except Exception as exc:
            failure = remote_code_failure(exc, f"the real load of {plan.describe()}", remote=plan.model_class_source == REMOTE)
            if folder is None and "safetensor" in f"{type(exc).__name__} {exc}".lower():
                try:
                    check_shards(checkpoint_dir(plan))
                except CheckpointError as named:
                    raise named from exc
            if isinstance(failure, (InternalError, ValueDependentInitError)):
                raise failure from exc
            raise CheckpointError(f"the real load of {plan.describe()} failed: {type(exc).__name__}: {exc}") from exc
    model, info = loaded
    coverage = CheckpointCoverage(
        missing=sorted(info.get("missing_keys") or ()),
        unexpected=sorted(info.get("unexpected_keys") or ()),
        mismatched=sorted(f"{k} (checkpoint {a}, model {b})" for k, a, b in (info.get("mismatched_keys") or ())),
        allowed_incomplete=allow_incomplete_checkpoint,
    )
    if not coverage.complete and not allow_incomplete_checkpoint:
        del model
        refuse_incomplete(coverage, plan.model_class, plan.repo)
    check_built(model, plan, "the real load")
    actual = getattr(model.config, "_attn_implementation", None)
    if actual != plan.attn_implementation_built:
        warnings.warn(
            f"the real load runs attention {actual!r}, the plan (and the meta tree) says "
            f"{plan.attn_implementation_built!r}; install the kernel the plan names on this server",
            RuntimeWarning,
            stacklevel=2,
        )
    model.hybridload_plan = plan
    model.hybridload_build_report = record
    model.hybridload_compat_entries = record.compat_entries
    model.hybridload_checkpoint = coverage
    return model
