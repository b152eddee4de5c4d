"""Map a checkpoint's tensor index onto a meta tree with the real load's own rules, and judge the result.

The mapping is the streaming loader's :func:`~hybridload.serve.streaming.conversion.plan_conversion` -- which
is transformers' conversion mapping (renames, expert fusion) and ``from_pretrained``'s base-model-prefix,
tie and ignore-on-load rules -- run on header shapes. Each converted group is then run on meta tensors of the
header shapes (what transformers' ops really produce), so a missing expert or a wrong hidden size shows as a
shape mismatch of the fused tensor. Every tensor is reported with the rule that mapped it.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping

import torch

from ...errors import HybridloadError, PlanError
from ..streaming.conversion import ConversionPlan, LoadGroup, natural_key, natural_order, plan_conversion
from ..streaming.sources import MetaSource
from ...build.gc_pause import collector_paused
from .hints import expert_layout_hints, prefix_hints
from .index import TORCH_DTYPE_NAMES, TensorIndex
from .quantized_names import FLOAT_FAMILY, describe_method, quant_method, quantization_role
from .report import Allowed, CoverageReport, Mismatch, UnconsumedTensor, UnfilledTensor

_INTEGER_FAMILY = {"I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8"}
# what transformers itself drops from unexpected keys when the model holds such buffers (non-persistent now)
_TRANSFORMERS_UNEXPECTED = (r"rotary_emb\.inv_freq", r"(^|\.)position_ids$")


def assess(model: Any, index: TensorIndex, key_mapping: dict[str, str] | None = None) -> CoverageReport:
    """The coverage report of ``index`` on ``model`` (a transformers PreTrainedModel, usually on meta)."""
    _check_model(model)
    with collector_paused():
        return _assess(model, index, key_mapping)


def _assess(model: Any, index: TensorIndex, key_mapping: dict[str, str] | None) -> CoverageReport:
    conversion = plan_conversion(model, index.tensors, key_mapping)
    state = model.state_dict(keep_vars=True)
    names = _RuleNames(conversion, model.base_model_prefix, len(key_mapping or {}))
    rules: Counter[str] = Counter()
    casts: Counter[str] = Counter()
    mismatches: list[Mismatch] = []
    written: set[str] = set()
    shapes = _ConvertedShapes()
    for group in conversion.groups:
        written.update(group.targets)
        if group.is_conversion:
            mismatches.extend(_check_converted(model, group, index, state, names, rules, casts, shapes))
        else:
            mismatches.extend(_check_plain(group, index, state, names, rules, casts))

    unconsumed, ignored = _unconsumed(model, conversion, index, names)
    unfilled = [
        UnfilledTensor(key, tuple(state[key].shape), _dtype_name(state[key].dtype), "no checkpoint tensor maps to it")
        for key in natural_order(conversion.missing)
    ]
    allowed = ignored + _allowed_in_model(model, conversion, state, written)
    hints = expert_layout_hints(unconsumed, unfilled) + prefix_hints(unconsumed, unfilled)
    hints += _quantization_hints(model, unconsumed, mismatches)
    return CoverageReport(
        model=type(model).__name__,
        checkpoint=index.source,
        checkpoint_tensors=len(index),
        model_tensors=len(state),
        unconsumed=tuple(unconsumed),
        unfilled=tuple(unfilled),
        mismatches=tuple(sorted(mismatches, key=lambda m: natural_key(m.target))),
        allowed=tuple(allowed),
        casts=dict(casts.most_common()),
        rules=dict(rules.most_common()),
        hints=tuple(hints),
    )


def _check_model(model: Any) -> None:
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise PlanError(
            f"checkpoint_coverage needs a transformers PreTrainedModel (a meta build: hybridload.load_meta), got "
            f"{type(model).__name__}."
        )


# -- consumed tensors ------------------------------------------------------------------------------------


def _check_plain(
    group: LoadGroup,
    index: TensorIndex,
    state: Mapping[str, torch.Tensor],
    names: "_RuleNames",
    rules: Counter[str],
    casts: Counter[str],
) -> list[Mismatch]:
    key = group.sources[0][1]
    entry, target = index.tensors[key], state[group.first_target]
    rule = names.plain(key, group.first_target)
    rules[rule] += 1
    found: list[Mismatch] = []
    if entry.shape != tuple(target.shape):
        found.append(Mismatch("shape", group.first_target, (key,), str(list(entry.shape)), str(list(target.shape)), rule))
    verdict = dtype_verdict(entry.dtype, target.dtype)
    if verdict == "cast":
        casts[f"{entry.dtype} -> {_dtype_name(target.dtype)}"] += 1
    elif verdict is not None:
        found.append(Mismatch("dtype", group.first_target, (key,), entry.dtype, _dtype_name(target.dtype), f"{rule}; {verdict}"))
    return found


def _check_converted(
    model: Any,
    group: LoadGroup,
    index: TensorIndex,
    state: Mapping[str, torch.Tensor],
    names: "_RuleNames",
    rules: Counter[str],
    casts: Counter[str],
    shapes: "_ConvertedShapes",
) -> list[Mismatch]:
    rule = names.converter(group)
    keys = tuple(group.source_keys())
    rules[rule] += len(keys)
    dtype = state[group.first_target].dtype
    found: list[Mismatch] = []
    try:
        produced = shapes(model, group, index, dtype)
    except HybridloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported with the keys involved
        return [Mismatch("conversion", group.first_target, keys, f"{_per_pattern(group)}: {type(exc).__name__}: {exc}",
                         f"{list(state[group.first_target].shape)}", rule)]
    for name, shape in produced.items():
        if name not in state:
            found.append(Mismatch("conversion", name, keys, f"{list(shape)} ({_per_pattern(group)})",
                                  "no such tensor", rule))
        elif shape != tuple(state[name].shape):
            found.append(Mismatch("shape", name, keys, f"{list(shape)} ({_per_pattern(group)})",
                                  str(list(state[name].shape)), rule))
    absent = [t for t in group.targets if t not in produced]
    for name in absent:
        found.append(Mismatch("conversion", name, keys, f"nothing ({_per_pattern(group)})",
                              str(list(state[name].shape)) if name in state else "no such tensor", rule))
    by_dtype: dict[str, list[str]] = {}
    for key in keys:
        by_dtype.setdefault(index.tensors[key].dtype, []).append(key)
    for ckpt_dtype, dtype_keys in by_dtype.items():
        verdict = dtype_verdict(ckpt_dtype, dtype)
        if verdict == "cast":
            casts[f"{ckpt_dtype} -> {_dtype_name(dtype)}"] += len(dtype_keys)
        elif verdict is not None:
            found.append(Mismatch("dtype", group.first_target, tuple(dtype_keys), ckpt_dtype, _dtype_name(dtype),
                                  f"{rule}; {verdict}"))
    return found


class _ConvertedShapes:
    """The shapes a converted group produces: transformers' conversion run on meta tensors of the header shapes.

    Groups of different layers are mostly alike (same converter, same source shapes in the same order): when
    every op is a pure function of its input shapes, the result of one is the result of all, so it is computed
    once per distinct group (a 671B MoE has a few hundred groups and a handful of distinct ones). Ops that read
    the config or the layer name are run for every group.
    """

    def __init__(self) -> None:
        self._memo: dict[tuple, Any] = {}

    @staticmethod
    def _shape_only(op: Any) -> bool:
        from transformers.core_model_loading import Chunk, Concatenate, MergeModulelist, Transpose

        kind = type(op)
        if kind in (MergeModulelist, Concatenate):
            return True
        if kind is Chunk:  # with num_shards_attribute it reads the config
            return getattr(op, "num_shards_attribute", None) is None
        if kind is Transpose:  # with check_dims it reads the layer's parameter
            return not getattr(op, "check_dims", False)
        return False

    def __call__(self, model: Any, group: LoadGroup, index: TensorIndex, dtype: torch.dtype) -> dict[str, tuple[int, ...]]:
        template = group.transform
        signature = None
        if all(self._shape_only(op) for op in template.operations):
            signature = (
                tuple(template._original_source_patterns),
                tuple(template._original_target_patterns),
                tuple(repr(op) for op in template.operations),
                dtype,
                tuple((pattern, index.tensors[key].shape) for pattern, key in group.sources),
            )
            cached = self._memo.get(signature)
            if cached is not None:
                if isinstance(cached, BaseException):
                    raise cached
                return {group.targets[position]: shape for position, shape in cached}
        try:
            produced = {name: tuple(t.shape) for name, t in group.convert(MetaSource(index.tensors, dtype), model).items()}
        except Exception as exc:
            if signature is not None:
                self._memo[signature] = exc
            raise
        if signature is not None and all(name in group.targets for name in produced):
            self._memo[signature] = tuple((group.targets.index(name), shape) for name, shape in produced.items())
        return produced


def _per_pattern(group: LoadGroup) -> str:
    counts: Counter[str] = Counter(pattern for pattern, _ in group.sources)
    return ", ".join(f"{pattern} x{n}" for pattern, n in counts.items())


def dtype_verdict(checkpoint_dtype: str, model_dtype: torch.dtype) -> str | None:
    """None: same dtype; "cast": the load converts it losslessly enough (float->float, int->int); else why not."""
    model_name = _dtype_name(model_dtype)
    if TORCH_DTYPE_NAMES.get(checkpoint_dtype) == model_name:
        return None
    model_float = model_dtype.is_floating_point and model_dtype.itemsize >= 2
    if checkpoint_dtype in FLOAT_FAMILY and model_float:
        return "cast"
    if checkpoint_dtype in _INTEGER_FAMILY and not model_dtype.is_floating_point and model_dtype != torch.bool:
        return "cast"
    if model_float and checkpoint_dtype not in FLOAT_FAMILY:
        return f"quantized or packed {checkpoint_dtype} data into a {model_name} tensor: its values need dequantizing"
    return f"{checkpoint_dtype} data into a {model_name} tensor"


# -- unconsumed and allowed --------------------------------------------------------------------------------


def _unconsumed(
    model: Any, conversion: ConversionPlan, index: TensorIndex, names: "_RuleNames"
) -> tuple[list[UnconsumedTensor], list[Allowed]]:
    unconsumed: list[UnconsumedTensor] = []
    ignored: list[Allowed] = []
    ignore = _IgnoreRules(model)
    method = None
    for key in conversion.unmatched:  # in natural order already (plan_conversion walks the keys so)
        renamed, source_pattern = conversion.unmatched[key]
        if not _still_unexpected(renamed, source_pattern, conversion):
            ignored.append(Allowed(key, "checkpoint", ignore.unexpected_rule(renamed)))
            continue
        entry = index.tensors[key]
        role = quantization_role(key, index.tensors)
        if role is not None:
            method = method or describe_method(model.config)
            rule = f"quantization {role[0]} of {role[1]} ({method}): the tree has no place for it"
        elif source_pattern is not None:
            rule = f"{names.converter_for(source_pattern)} -> {renamed}: the tree has no such tensor"
        elif renamed != key:
            rule = f"{names.plain(key, renamed)} -> {renamed}: the tree has no such tensor"
        else:
            rule = "no tensor of this name in the tree"
        unconsumed.append(UnconsumedTensor(key, entry.file, entry.shape, entry.dtype, renamed, rule))
    return unconsumed, ignored


def _still_unexpected(renamed: str, source_pattern: str | None, conversion: ConversionPlan) -> bool:
    if renamed in conversion.unexpected:
        return True
    if source_pattern is None:
        return False
    converter = next(c for c in conversion.transforms if source_pattern in getattr(c, "source_patterns", ()))
    first = converter.target_patterns[0]
    return any(renamed.replace(first, target) in conversion.unexpected for target in converter.target_patterns)


def _allowed_in_model(
    model: Any, conversion: ConversionPlan, state: Mapping[str, torch.Tensor], written: set[str]
) -> list[Allowed]:
    ignore = _IgnoreRules(model)
    allowed = [Allowed(key, "model", ignore.missing_rule(key)) for key in natural_order(conversion.initialized)]
    partners: dict[str, str] = {}
    for target, source in conversion.tied.items():
        partners.setdefault(target, source)
        partners.setdefault(source, target)
    for key in natural_order(set(state) - written - conversion.missing - conversion.initialized):
        partner = partners.get(key)
        rule = f"tied to {partner}" if partner is not None else "filled by tie_weights"
        allowed.append(Allowed(key, "model", rule))
    return allowed


class _IgnoreRules:
    """Which of the class's ignore-on-load patterns let a key through (for the rule text)."""

    def __init__(self, model: Any) -> None:
        self.cls = type(model).__name__
        self.missing = list(getattr(model, "_keys_to_ignore_on_load_missing", None) or ())
        self.unexpected = list(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or ())

    def missing_rule(self, key: str) -> str:
        for pattern in self.missing:
            if re.search(pattern, key):
                return f"allowed missing: {self.cls}._keys_to_ignore_on_load_missing {pattern!r} (initialised on load)"
        return "allowed missing: transformers initialises it on load"

    def unexpected_rule(self, key: str) -> str:
        for pattern in self.unexpected:
            if re.search(pattern, key):
                return f"ignored on load: {self.cls}._keys_to_ignore_on_load_unexpected {pattern!r}"
        for pattern in _TRANSFORMERS_UNEXPECTED:
            if re.search(pattern, key):
                return f"ignored on load: transformers drops stale {pattern!r} (a non-persistent buffer now)"
        return "ignored on load: transformers' own rule"


# -- rule names ----------------------------------------------------------------------------------------------


class _RuleNames:
    """Short, stable names of the rules that mapped keys, shared by all keys a rule maps (so they can be counted)."""

    def __init__(self, conversion: ConversionPlan, prefix: str, key_mapping_count: int) -> None:
        from transformers.core_model_loading import WeightConverter, WeightRenaming

        self.prefix = prefix
        self.renamings = [t for t in conversion.transforms if isinstance(t, WeightRenaming)]
        self._user = set(range(key_mapping_count))  # key_mapping renamings come first
        self._by_pattern = {
            pattern: t for t in conversion.transforms if isinstance(t, WeightConverter) for pattern in t.source_patterns
        }
        self._converter_names: dict[int, str] = {}

    def converter(self, group: LoadGroup) -> str:
        return self._converter_name(group.transform)

    def converter_for(self, source_pattern: str) -> str:
        return self._converter_name(self._by_pattern[source_pattern])

    def _converter_name(self, converter: Any) -> str:
        name = self._converter_names.get(id(converter))
        if name is None:
            ops = " + ".join(repr(op) for op in converter.operations)
            sources = ", ".join(converter._original_source_patterns)
            targets = ", ".join(converter._original_target_patterns)
            name = self._converter_names[id(converter)] = f"conversion {ops}: {sources} -> {targets}"
        return name

    def plain(self, original: str, renamed: str) -> str:
        if original == renamed:
            return "same name"
        steps, key = [], original
        for position, renaming in enumerate(self.renamings):
            new, _ = renaming.rename_source_key(key)
            if new != key:
                sources = ", ".join(renaming._original_source_patterns)
                targets = ", ".join(renaming._original_target_patterns)
                origin = "key_mapping" if position in self._user else "conversion mapping rename"
                steps.append(f"{origin} {sources!r} -> {targets!r}")
                key = new
        if key != renamed:
            if renamed == f"{self.prefix}.{key}":
                steps.append(f"base-model prefix '{self.prefix}.' added")
            elif key.startswith(self.prefix) and renamed == key[len(self.prefix) + 1:]:
                steps.append(f"base-model prefix '{self.prefix}.' removed")
            else:  # transformers keeps a key the model already has
                return "same name"
        return " + ".join(steps) or "same name"


def _quantization_hints(model: Any, unconsumed: list[UnconsumedTensor], mismatches: list[Mismatch]) -> list[str]:
    scales = [t for t in unconsumed if t.rule.startswith("quantization ")]
    quantized = [m for m in mismatches if m.kind == "dtype" and "quantized" in m.rule]
    if not scales and not quantized:
        return []
    method = quant_method(model.config)
    where = (
        f"the config's quantization_config ({method}) makes the server's from_pretrained swap modules for "
        "quantized ones, which this tree does not hold: build the meta tree with the quantizer applied"
        if method
        else "the config declares no quantization_config, so the load would read quantized values as plain "
        "weights: use the dequantized checkpoint or a config with its quantization_config"
    )
    return [
        f"quantized checkpoint: {len(quantized)} quantized weight group(s) and {len(scales)} scale/state tensor(s) "
        f"the tree has no place for; {where}."
    ]


# -- helpers ---------------------------------------------------------------------------------------------------

def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
