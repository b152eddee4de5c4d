"""Group checkpoint keys by the transformers weight transform that consumes them.

transformers 5 turns checkpoint tensors into model tensors with a per-model-type list of
``WeightRenaming``/``WeightConverter`` transforms (``conversion_mapping.py``); ``from_pretrained`` applies
them in ``convert_and_load_state_dict_in_model``. This module reproduces that function's *first pass*
(rename every key, attach it to the transform instance of its first target) with transformers' own
pieces -- ``get_model_conversion_mapping``, ``rename_source_key``, ``dot_natural_key`` -- but reads no
tensor: the result is a list of :class:`LoadGroup` that the streaming loader materialises one at a time.
Each group is exactly what transformers converts in one ``convert`` call (e.g. all experts of one layer
for ``experts.gate_up_proj``), so host memory never holds more than one converted group.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import (
    Concatenate,
    MergeModulelist,
    WeightConverter,
    WeightRenaming,
    WeightTransform,
    dot_natural_key,
    rename_source_key,
)
from transformers.utils.loading_report import LoadStateDictInfo

from ...errors import CheckpointError, PlanError
from .checkpoint import TensorEntry


class TensorSource(Protocol):
    """Where a group's checkpoint tensors come from: the streaming reader, or meta tensors for shape checks."""

    def deferred(self, key: str) -> Callable[[], torch.Tensor]:
        """A call that returns the tensor, on the group's device and in its dtype (transformers' sync form)."""

    def shape(self, key: str) -> tuple[int, ...]:
        """The tensor's shape, from the shard header."""

    def empty(self, shape: list[int]) -> torch.Tensor:
        """An uninitialised tensor on the group's device, in its dtype."""

    def fill(self, pairs: list[tuple[str, torch.Tensor]]) -> None:
        """Read each key into its destination view (header shape, any strides); return when all are written."""


@dataclass
class LoadGroup:
    """One streaming unit: the checkpoint tensors one transform consumes and the model tensors it writes."""

    first_target: str
    # a fresh template (:meth:`instantiate` copies it per use): the converter, or None for a plain rename of the
    # one source, built on first use (compiling one regex per key costs seconds on a 100k-key checkpoint)
    template: WeightTransform | None = None
    sources: list[tuple[str, str]] = field(default_factory=list)  # (source pattern, checkpoint key), natural order
    targets: tuple[str, ...] = ()

    @property
    def transform(self) -> WeightTransform:
        if self.template is None:
            self.template = WeightRenaming(self.sources[0][1], self.first_target)
        return self.template

    @property
    def is_conversion(self) -> bool:
        return isinstance(self.template, WeightConverter)

    @property
    def force_cpu(self) -> bool:
        return bool(getattr(self.template, "force_cpu", False))

    @property
    def stacks_in_place(self) -> bool:
        """Sources are read straight into their stacked (and concatenated) tensor, not handed out one by one."""
        return self.template is not None and _stacks_first(self.template)

    def source_keys(self) -> list[str]:
        return [key for _, key in self.sources]

    def read_order(self) -> list[str]:
        """Source keys in the order the transform materialises them: pattern by pattern (first seen first)."""
        by_pattern: dict[str, list[str]] = {}
        for pattern, key in self.sources:
            by_pattern.setdefault(pattern, []).append(key)
        return [key for keys in by_pattern.values() for key in keys]

    def instantiate(self, source: TensorSource) -> WeightTransform:
        """A transform instance holding deferred reads of this group's sources (transformers' sync-load form)."""
        transform = _prestacking_copy(self.transform, source) or copy.deepcopy(self.transform)
        for pattern, key in self.sources:
            transform.add_tensor(self.first_target, key, pattern, source.deferred(key))
            if isinstance(transform, _PrestackingConverter):
                transform.keys_by_pattern.setdefault(pattern, []).append(key)
        return transform

    def convert(self, source: TensorSource, model: Any) -> dict[str, torch.Tensor]:
        """Run transformers' conversion for this group; returns {model key: tensor}."""
        transform = self.instantiate(source)
        realized = transform.convert(self.first_target, model=model, config=model.config, hf_quantizer=None)
        return {name: (value[0] if isinstance(value, list) else value) for name, value in realized.items()}


class _PrestackingConverter(WeightConverter):
    """A WeightConverter whose first op is MergeModulelist, reading each source list straight into its
    stacked tensor: no per-expert buffer, no list of them next to their stack. MergeModulelist passes an
    already stacked tensor through (transformers' own contract, used by its expert decompressors), so the
    ops and the result are unchanged; writing into slices is what torch.stack does.

    When the next op is a Concatenate of the stacked lists along another dim (the fused ``gate_up_proj`` of
    Mixtral, Qwen-MoE, DeepSeek...), the sources are read straight into their slices of the concatenated
    tensor and both ops are done: torch.cat's extra copy (a second group-sized tensor) never happens."""

    __slots__ = ("source", "keys_by_pattern")

    def materialize_tensors(self) -> dict[str, Any]:
        keys = {pattern: self.keys_by_pattern[pattern] for pattern in self.collected_tensors}
        self.collected_tensors.clear()  # the deferred reads are never called: fill() reads into place
        dims = self._fusable_dims(keys)
        if dims is not None:
            self.operations = self.operations[2:]  # what MergeModulelist + Concatenate would do is done here
            return {self.target_patterns[0]: self._stack_concatenated(keys, *dims)}
        merge_dim = self.operations[0].dim
        return {pattern: _stack_into(self.source, pattern_keys, merge_dim) for pattern, pattern_keys in keys.items()}

    def _fusable_dims(self, keys: dict[str, list[str]]) -> tuple[int, int] | None:
        """(stack dim, Concatenate's dim), both in the stacked tensor, if the fused read gives exactly what
        the two ops would: every source pattern present, equal expert counts, equal shapes but along the
        concatenated dim."""
        if len(self.operations) < 2 or type(self.operations[1]) is not Concatenate or len(self.target_patterns) != 1:
            return None
        if set(keys) != set(self.source_patterns) or len({len(k) for k in keys.values()}) != 1:
            return None
        shapes = []
        for pattern_keys in keys.values():
            pattern_shapes = {self.source.shape(key) for key in pattern_keys}
            if len(pattern_shapes) != 1:
                return None  # torch.stack's error, raised by the unfused path
            shapes.append(next(iter(pattern_shapes)))
        ndim = len(shapes[0]) + 1
        merge_dim = _normalize_dim(self.operations[0].dim, ndim)
        concat_dim = _normalize_dim(self.operations[1].dim, ndim)
        if merge_dim is None or concat_dim is None or concat_dim == merge_dim or len({len(s) for s in shapes}) != 1:
            return None
        inner = concat_dim if concat_dim < merge_dim else concat_dim - 1  # the dim in one expert's shape
        rest = {tuple(d for i, d in enumerate(shape) if i != inner) for shape in shapes}
        return (merge_dim, concat_dim) if len(rest) == 1 else None

    def _stack_concatenated(self, keys: dict[str, list[str]], merge_dim: int, concat_dim: int) -> torch.Tensor:
        stacked_shapes = {}  # in Concatenate's order: the converter's source patterns, all present
        for pattern in self.source_patterns:
            shape = list(self.source.shape(keys[pattern][0]))
            stacked_shapes[pattern] = shape[:merge_dim] + [len(keys[pattern])] + shape[merge_dim:]
        full_shape = list(next(iter(stacked_shapes.values())))
        full_shape[concat_dim] = sum(shape[concat_dim] for shape in stacked_shapes.values())
        full = self.source.empty(full_shape)
        pairs, offset = [], 0
        for pattern, shape in stacked_shapes.items():
            part = full.narrow(concat_dim, offset, shape[concat_dim])
            pairs.extend((key, part.select(merge_dim, index)) for index, key in enumerate(keys[pattern]))
            offset += shape[concat_dim]
        self.source.fill(pairs)
        return full


def _normalize_dim(dim: int, ndim: int) -> int | None:
    dim = dim + ndim if dim < 0 else dim
    return dim if 0 <= dim < ndim else None


def _stack_into(source: TensorSource, keys: list[str], dim: int) -> torch.Tensor:
    shape = list(source.shape(keys[0]))
    for index, key in enumerate(keys[1:], start=1):
        if list(source.shape(key)) != shape:  # torch.stack's own check, with its wording
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got {shape} at entry 0 and "
                f"{list(source.shape(key))} at entry {index}"
            )
    stack_dim = _normalize_dim(dim, len(shape) + 1)
    if stack_dim is None:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-len(shape) - 1}, {len(shape)}], but got {dim})")
    out = source.empty(shape[:stack_dim] + [len(keys)] + shape[stack_dim:])
    source.fill([(key, out.select(stack_dim, index)) for index, key in enumerate(keys)])
    return out


def _stacks_first(template: WeightTransform) -> bool:
    return type(template) is WeightConverter and type(template.operations[0]) is MergeModulelist


def _prestacking_copy(template: WeightTransform, source: TensorSource) -> WeightConverter | None:
    """A fresh _PrestackingConverter equivalent to ``template``, if its first op is a plain MergeModulelist."""
    if not _stacks_first(template):
        return None
    converter = _PrestackingConverter(
        source_patterns=list(template._original_source_patterns),
        target_patterns=list(template._original_target_patterns),
        operations=copy.deepcopy(template.operations),
        force_cpu=template.force_cpu,
    )
    converter.scope_prefix, converter.base_model_prefix = template.scope_prefix, template.base_model_prefix
    converter.source, converter.keys_by_pattern = source, {}
    return converter


@dataclass
class ConversionPlan:
    """How a checkpoint maps onto a model, decided from names and headers only."""

    groups: list[LoadGroup]
    transforms: list[WeightTransform]  # the model's transforms, with transformers' "was used" marks set
    missing: set[str]  # model keys no group writes and that are neither tied nor allowed missing
    unexpected: set[str]  # checkpoint-derived keys that match no model tensor (after the model's ignore rules)
    initialized: set[str]  # keys the model allows to be missing; transformers' init fills them (as from_pretrained)
    tied: dict[str, str]  # target -> source pairs tied after loading
    # checkpoint key -> (the renamed key no model tensor has, the converter source pattern it matched or None)
    unmatched: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def used_transforms(self) -> list[WeightTransform]:
        return [transform for transform in self.transforms if transform.was_used()]


def plan_conversion(
    model: Any, entries: dict[str, TensorEntry], key_mapping: dict[str, str] | None = None
) -> ConversionPlan:
    """Rename and group every checkpoint key exactly as ``from_pretrained`` would, without reading tensors."""
    transforms = _model_transforms(model, key_mapping)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    pattern_to_converter = {pattern: conv for conv in converters for pattern in conv.source_patterns}
    meta_state = model.state_dict()
    prefix = model.base_model_prefix
    rename = _KeyRenamer(renamings, converters, prefix, meta_state)

    groups: dict[str, LoadGroup] = {}
    unexpected: set[str] = set()
    unmatched: dict[str, tuple[str, str | None]] = {}
    for original_key in natural_order(entries):
        renamed_key, source_pattern = rename(original_key)
        if renamed_key not in meta_state and original_key in meta_state:
            # transformers' fallback: the key was already right, only the base-model prefix may differ
            renamed_key, source_pattern = rename_source_key(original_key, [], [], prefix, meta_state)
        if renamed_key in meta_state:
            group = groups.get(renamed_key)
            if group is None:
                template = copy.deepcopy(pattern_to_converter[source_pattern]) if source_pattern is not None else None
                group = groups[renamed_key] = LoadGroup(renamed_key, template)
            elif source_pattern is None or not group.is_conversion:
                raise CheckpointError(
                    f"checkpoint keys {group.source_keys()[0]!r} and {original_key!r} both map to model tensor "
                    f"{renamed_key!r}; the checkpoint holds the same weight twice (fused and unfused?). "
                    "Remove the duplicate or pass key_mapping to tell them apart."
                )
            group.sources.append((source_pattern if source_pattern is not None else original_key, original_key))
        elif source_pattern is not None:
            converter = pattern_to_converter[source_pattern]
            unexpected.update(renamed_key.replace(converter.target_patterns[0], t) for t in converter.target_patterns)
            unmatched[original_key] = (renamed_key, source_pattern)
        else:
            unexpected.add(renamed_key)
            unmatched[original_key] = (renamed_key, None)

    for group in groups.values():
        group.targets = _group_targets(group)

    written = {target for group in groups.values() for target in group.targets}
    missing = set(meta_state) - written
    tied = dict(getattr(model, "all_tied_weights_keys", {}) or {})
    missing -= _tied_covered(tied, missing)
    info = LoadStateDictInfo(
        missing_keys=set(missing),
        unexpected_keys=set(unexpected),
        mismatched_keys=set(),
        error_msgs=[],
        conversion_errors={},
        skipped_pp_keys=set(),
    )
    model._adjust_missing_and_unexpected_keys(info)  # the model's own ignore-on-load rules
    initialized = missing - info.missing_keys
    return ConversionPlan(
        groups=list(groups.values()),
        transforms=transforms,
        missing=set(info.missing_keys),
        unexpected=set(info.unexpected_keys),
        initialized=initialized,
        tied=tied,
        unmatched=unmatched,
    )


class _KeyRenamer:
    """``rename_source_key(key, renamings, converters, prefix, meta_state)`` for many keys, cheaper.

    transformers applies every renaming in turn, then the first converter that matches, then its base-model
    prefix rule. A transform whose regex cannot match a key leaves it unchanged, and a regex cannot match a key
    that lacks a literal every match contains (:class:`_LiteralGate`): such transforms are skipped. A converter
    renames ``key.replace(match, replacement, 1)`` with a replacement that follows from the match's groups
    alone, so transformers computes it once per distinct match (one per expert index, shared by every layer).
    Same results, same "was used" marks, a fraction of the work (a 100k-key index has a few renamings that each
    match a minority of keys; most keys are experts one converter takes). The prefix rule is transformers'
    (``re.sub(f"^{prefix}.", "", key, count=1)`` and two state-dict lookups), written out for a prefix without
    regex metacharacters; with any other prefix, transformers' function renames every key.
    """

    def __init__(
        self, renamings: list[WeightRenaming], converters: list[WeightConverter], prefix: str, meta_state: dict
    ) -> None:
        self.renamings, self.converters = renamings, converters
        self.prefix, self.meta_state = prefix, meta_state
        self.renaming_gate = _LiteralGate(renamings)
        self.converter_gates = [
            # an unscoped converter with the base rename is asked by its own search (C, cheaper than a gate)
            (converter, _LiteralGate([converter]), converter.scope_prefix is None and _matches_by_regex(converter), {})
            for converter in converters
        ]
        self.fast = isinstance(prefix, str) and prefix != "" and re.escape(prefix) == prefix

    def __call__(self, key: str) -> tuple[str, str | None]:
        if not self.fast:
            return rename_source_key(key, self.renamings, self.converters, self.prefix, self.meta_state)
        if self.renaming_gate.may_match(key):
            key, _ = rename_source_key(key, self.renamings, [])  # renamings only: no converter, no prefix rule
        source_pattern = None
        for converter, gate, by_search, replacements in self.converter_gates:  # apply_converters: first match
            if not by_search:
                if not gate.may_match(key):
                    continue
                renamed, pattern = converter.rename_source_key(key)
                if pattern is not None:
                    key, source_pattern = renamed, pattern
                    break
                continue
            match = converter.compiled_sources.search(key)  # an unscoped base rename matches by this very search
            if match is None:
                continue
            key, source_pattern = self._converted(converter, key, match, replacements)
            break
        return self._prefix_rule(key), source_pattern

    @staticmethod
    def _converted(converter: WeightConverter, key: str, match: "re.Match[str]", replacements: dict) -> tuple[str, str]:
        """transformers' rename of ``key``: ``key.replace(match.group(0), replacement, 1)``, where the replacement
        and source pattern follow from the match's groups alone. transformers computes them for the first key
        with these groups (an expert index shared by every layer); later keys reuse them."""
        matched = match.group(0)
        known = replacements.get(match.groups())
        if known is None:
            renamed, pattern = converter.rename_source_key(key)
            start = key.find(matched)  # replace(..., 1) takes the first occurrence
            tail = len(key) - start - len(matched)
            known = replacements[match.groups()] = (renamed[start:len(renamed) - tail], pattern)
        return key.replace(matched, known[0], 1), known[1]

    def _prefix_rule(self, key: str) -> str:
        prefix, state = self.prefix, self.meta_state
        if key.startswith(prefix):
            cut = len(prefix)
            stripped = key[cut + 1:] if len(key) > cut and key[cut] != "\n" else key  # the regex's "^prefix."
            if state.get(stripped) is not None:
                return stripped
        added = f"{prefix}.{key}"
        return added if state.get(added) is not None else key


class _LiteralGate:
    """Whether any of some transforms' regexes *may* match a key: each alternative of a regex needs the literal
    runs of its top-level sequence, so a key without one of them cannot match it. ``may_match`` is a necessary
    condition (a match is still decided by the regex); an alternative without a literal, a case-insensitive
    regex, or a transform class with its own renaming logic keeps the gate open. Scoped transforms match a
    suffix of the key, which holds the same literals."""

    def __init__(self, transforms: list[WeightTransform]) -> None:
        self.always = False
        self.needs: list[tuple[str, ...]] = []  # per alternative: literals that must all be in the key
        for transform in transforms:
            if not _matches_by_regex(transform):
                self.always = True
                return
            alternatives = _required_literals(transform.compiled_sources.pattern)
            if alternatives is None:
                self.always = True
                return
            self.needs.extend(alternatives)

    def may_match(self, key: str) -> bool:
        if self.always:
            return True
        for needed in self.needs:
            for literal in needed:
                if literal not in key:
                    break
            else:
                return True
        return False


def _matches_by_regex(transform: WeightTransform) -> bool:
    """The transform renames with transformers' base logic: a match of ``compiled_sources``, or nothing."""
    return type(transform).rename_source_key is WeightTransform.rename_source_key


def _required_literals(pattern: str) -> list[tuple[str, ...]] | None:
    """Per top-level alternative of ``pattern``, the literal runs every match contains; None if unknown."""
    try:
        from re import _constants as constants, _parser as parser  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.10
        import sre_constants as constants  # type: ignore[no-redef]
        import sre_parse as parser  # type: ignore[no-redef]
    try:
        parsed = parser.parse(pattern)
    except Exception:  # noqa: BLE001 - any doubt keeps the gate open
        return None
    if parsed.state.flags & re.IGNORECASE:
        return None
    items = list(parsed)
    alternatives = [list(branch) for branch in items[0][1][1]] if len(items) == 1 and items[0][0] is constants.BRANCH else [items]
    found: list[tuple[str, ...]] = []
    for sequence in alternatives:
        while len(sequence) == 1 and sequence[0][0] is constants.SUBPATTERN:  # a group around the whole alternative
            _, add_flags, _, inner = sequence[0][1]
            if add_flags & re.IGNORECASE:
                return None
            sequence = list(inner)
        runs, run = [], []
        for op, value in sequence:
            if op is constants.LITERAL:
                run.append(chr(value))
                continue
            if run:
                runs.append("".join(run))
                run = []
        if run:
            runs.append("".join(run))
        if not runs:
            return None
        found.append(tuple(sorted(runs, key=len, reverse=True)))
    return found


def _model_transforms(model: Any, key_mapping: dict[str, str] | None) -> list[WeightTransform]:
    if key_mapping is not None:
        if not isinstance(key_mapping, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in key_mapping.items()
        ):
            raise PlanError("key_mapping must map regex patterns (str) to replacements (str).")
        for pattern in key_mapping:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise PlanError(f"key_mapping pattern {pattern!r} is not a valid regex: {exc}.") from None
    # a tree the quantizer prepared (from_pretrained sets model.hf_quantizer) reads its scales through the
    # quantizer's own conversions, as from_pretrained does
    return get_model_conversion_mapping(model, key_mapping, hf_quantizer=getattr(model, "hf_quantizer", None))


def _group_targets(group: LoadGroup) -> tuple[str, ...]:
    """Model keys a group writes: the first target, plus its siblings for one-to-many converters."""
    if not group.is_conversion:
        return (group.first_target,)
    patterns = group.transform.target_patterns
    return tuple(group.first_target.replace(patterns[0], pattern) for pattern in patterns)


def _tied_covered(tied: dict[str, str], missing: set[str]) -> set[str]:
    """Missing keys that tie_weights will fill from a loaded partner (transformers ties symmetrically)."""
    covered: set[str] = set()
    for target, source in tied.items():
        if target in missing and source not in missing:
            covered.add(target)
        elif source in missing and target not in missing:
            covered.add(source)
    # chains: several targets tied to one source that is itself only present through another target
    changed = True
    while changed:
        changed = False
        for target, source in tied.items():
            for key, partner in ((target, source), (source, target)):
                if key in missing and key not in covered and partner in covered:
                    covered.add(key)
                    changed = True
    return covered


_PART_KEYS: dict[str, tuple] = {}
_PART_KEYS_LIMIT = 200_000


def natural_key(key: str) -> tuple:
    """transformers' ``dot_natural_key`` order (numbers numerically), each name part's key computed once: name
    parts repeat across a checkpoint's keys (``model``, ``layers``, ``0``..``255``), keys do not."""
    parts = key.split(".")
    try:
        return tuple(map(_PART_KEYS.__getitem__, parts))
    except KeyError:
        return tuple(_part_key(part) for part in parts)


def _part_key(part: str) -> tuple:
    cached = _PART_KEYS.get(part)
    if cached is None:
        cached = tuple(dot_natural_key(part)[0])
        if len(_PART_KEYS) < _PART_KEYS_LIMIT:
            _PART_KEYS[part] = cached
    return cached


def natural_order(keys: Iterable[str]) -> list[str]:
    return sorted(keys, key=natural_key)
