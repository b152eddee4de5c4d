"""The signature header: facts about how a tree was made, kept next to it but outside its digest.

Two machines may legitimately differ here (library versions, the attention implementation a GPU allows)
while building the same tree, so a header difference is a warning in a diff, never a tree difference.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from ..errors import SignatureInputError
from .naming import class_name
from .patterns import declared_pattern, num_hidden_layers


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if hasattr(value, "__fspath__"):
        return str(value)
    module = type(value).__module__
    if module == "torch" and type(value).__name__ == "dtype":
        return str(value).removeprefix("torch.")
    return str(value)


def json_normalise(header: Mapping[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON so a header reads back exactly as written (tuples become lists, dtypes strings)."""
    return json.loads(json.dumps(dict(header), sort_keys=True, default=_jsonable))


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a tree; read from already-imported modules (cheap)."""
    from .._version import __version__ as hybridload_version

    versions = {"hybridload": hybridload_version}
    for name in ("torch", "transformers"):
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module is not None else None
        if version is not None:
            versions[name] = str(version)
    return versions


def _plan_header(plan: Any) -> dict[str, Any] | None:
    if plan is None:
        return None
    if isinstance(plan, Mapping):
        return dict(plan)
    to_header = getattr(plan, "to_header", None)
    if not callable(to_header):
        raise SignatureInputError(
            f"plan must be a load plan (an object with .to_header() -> dict, e.g. hybridload.resolve(...)) "
            f"or a dict of plan facts; got {type(plan).__name__}"
        )
    facts = to_header()
    if not isinstance(facts, Mapping):
        raise SignatureInputError(f"{type(plan).__name__}.to_header() must return a dict, got {type(facts).__name__}")
    return dict(facts)


def _model_facts(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None)
    facts: dict[str, Any] = {"class": class_name(type(model))}
    if config is None:
        return facts
    dtype = getattr(config, "dtype", None)
    facts.update(
        {
            "model_type": getattr(config, "model_type", None),
            "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
            "attn_implementation": getattr(config, "_attn_implementation", None),
            "num_hidden_layers": num_hidden_layers(config),
            "layer_pattern": declared_pattern(config),
        }
    )
    return facts


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` on top of ``base``; nested dicts merge key by key (``{"versions": {"torch": ...}}`` keeps the rest)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def build_header(model: Any, plan: Any = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Plan facts (``plan.to_header()``), model facts, library versions, then ``extra`` merged on top."""
    if plan is None:
        plan = getattr(model, "hybridload_plan", None)
    header: dict[str, Any] = {
        "plan": _plan_header(plan),
        "model": _model_facts(model),
        "versions": library_versions(),
        # transformers-4.x compatibility entries the build needed (recorded by load_meta / dispatch)
        "compat_entries": sorted(getattr(model, "hybridload_compat_entries", None) or []),
    }
    quant_record = getattr(model, "hybridload_quant_record", None)  # a pre-quantized checkpoint's tree
    if quant_record is not None:
        header.update(quant_record.to_header())
    if extra:
        header = _merge(header, extra)
    return json_normalise(header)
