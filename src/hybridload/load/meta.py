"""``load_meta``: the plan's module tree with every tensor on ``meta``, in one ``meta`` build session.

The session enters the kernel shim, the transformers-4.x compatibility window, the attention rule, the
commit/trust routing and the meta device once; inside it the plan's config is loaded and
``AutoModel*.from_config`` builds the tree, exactly as transformers and nnsight build it.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

from ..build.session import BuildRecord, build_session
from ..errors import HybridloadError, PlanError
from ..plan.model import REMOTE, LoadPlan
from .config import class_matches, config_in_session, plan_for, ready, session_spec
from .failures import remote_code_failure


def model_kwargs(plan: LoadPlan, extra: dict[str, Any]) -> dict[str, Any]:
    """What every build of the plan passes to transformers: trust, dtype, attention, code revision."""
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


def check_built(model: Any, plan: LoadPlan, what: str) -> None:
    if not class_matches(type(model), plan.model_class, plan.model_class_source):
        raise PlanError(
            f"{what} built {type(model).__module__}.{type(model).__name__} but the plan says {plan.model_class}; "
            "re-resolve the plan (a class registered at run time changed the choice)"
        )


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


def finish_meta(built: Any, plan: LoadPlan, record: BuildRecord, what: str) -> Any:
    """Checks and records every meta build of a plan gets (hybridload's own and nnsight's)."""
    check_built(built, plan, what)
    if any(t.device.type != "meta" for t in [*built.parameters(), *built.buffers()]):
        built.to("meta")  # a constructor that pinned a tensor to a device: the meta tree holds no storage
    if plan.quantization is not None and getattr(built, "hybridload_quant_record", None) is None:
        from ..quant.meta_tree import quantize_meta_tree

        quantize_meta_tree(built, plan.quantization)  # the tree the server holds: packed weights and scales
    check_attention(built, plan, what)
    built.hybridload_plan = plan
    built.hybridload_build_report = record
    built.hybridload_compat_entries = record.compat_entries
    return built


def build_meta_in_session(plan: LoadPlan, record: BuildRecord) -> Any:
    """Load the config and build the tree inside an open ``meta``/``stream`` session."""
    import transformers

    config, unused = config_in_session(plan)
    auto_cls = getattr(transformers, plan.auto_class)
    kwargs = model_kwargs(plan, unused)
    if _registered_for(auto_cls, config):
        # the remote class is already registered for this config class (an earlier import of the same pinned
        # code): transformers builds it directly and would hand ``code_revision`` to its __init__
        kwargs.pop("code_revision", None)
    try:
        built = auto_cls.from_config(config, **kwargs)
    except HybridloadError:
        raise
    except Exception as exc:
        raise remote_code_failure(
            exc, f"the meta build of {plan.model_class} ({plan.repo})", remote=plan.model_class_source == REMOTE
        ) from exc
    return finish_meta(built, plan, record, "the meta build")


def _registered_for(auto_cls: Any, config: Any) -> bool:
    """A remote-code class is registered in ``auto_cls``'s mapping for ``type(config)`` (a config class object
    comes from one module of one pinned code revision, so its registration is that revision's class)."""
    mapping = getattr(auto_cls, "_model_mapping", None)
    extra = getattr(mapping, "_extra_content", {})
    registered = extra.get(type(config))
    return registered is not None and not getattr(registered, "__module__", "").startswith("transformers.")


def load_meta(model: str | os.PathLike | LoadPlan, **resolve_kwargs: Any) -> Any:
    """The plan's module tree with every tensor on ``meta``, built GPU-less the way the server builds it.

    The tree carries ``hybridload_plan``, ``hybridload_build_report`` (layers entered, stand-ins, compat entries,
    CUDA placements redirected to meta) and ``hybridload_compat_entries``.
    """
    plan = plan_for(model, **resolve_kwargs)
    ready(plan)
    with build_session(session_spec(plan, "meta")) as record:
        return build_meta_in_session(plan, record)
