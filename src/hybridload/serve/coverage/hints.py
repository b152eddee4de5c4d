"""Patterns behind a mismatch, read from the unconsumed and unfilled tensors: experts stored per expert where
the tree holds them fused (or the reverse), and a prefix renamed wholesale. Each hint says what to do."""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Sequence

from .report import UnconsumedTensor, UnfilledTensor

_PER_EXPERT = re.compile(r"^(?P<container>.+\.experts)\.(?P<index>\d+)\.(?P<rest>.+)$")
_FUSED = re.compile(r"^(?P<container>.+\.experts)\.(?P<name>[^.]+)$")
_MAX_PREFIX_DEPTH = 3


def expert_layout_hints(unconsumed: Sequence[UnconsumedTensor], unfilled: Sequence[UnfilledTensor]) -> list[str]:
    """Per-expert on one side and fused on the other, under the same ``...experts`` container."""
    hints = []
    ckpt_per_expert, ckpt_fused = _expert_sides((t.mapped_to, t.shape) for t in unconsumed)
    tree_per_expert, tree_fused = _expert_sides((t.key, t.shape) for t in unfilled)
    both = sorted(set(ckpt_per_expert) & set(tree_fused))
    if both:
        experts = max(len(ckpt_per_expert[c]) for c in both)
        hints.append(
            f"experts: the checkpoint stores them per expert ({experts} experts, e.g. "
            f"{both[0]}.{min(ckpt_per_expert[both[0]])}.*), the tree holds them fused ({both[0]}."
            f"{'/'.join(sorted(tree_fused[both[0]]))}) in {len(both)} layer(s), and no conversion rule fuses them "
            "for this class (transformers' conversion mapping does not cover remote or custom code). Build the tree "
            "with per-expert modules, or register a conversion mapping for this model type."
        )
    both = sorted(set(ckpt_fused) & set(tree_per_expert))
    if both:
        experts = max(len(tree_per_expert[c]) for c in both)
        hints.append(
            f"experts: the checkpoint stores them fused ({both[0]}.{'/'.join(sorted(ckpt_fused[both[0]]))}), the "
            f"tree holds them per expert ({experts} experts, e.g. {both[0]}.0.*) in {len(both)} layer(s); no "
            "conversion rule splits them. Build the tree with fused experts (a newer class of this model), or "
            "re-save the checkpoint per expert."
        )
    return hints


def _expert_sides(items: object) -> tuple[dict[str, set[int]], dict[str, set[str]]]:
    per_expert: dict[str, set[int]] = defaultdict(set)
    fused: dict[str, set[str]] = defaultdict(set)
    for key, shape in items:  # type: ignore[attr-defined]
        match = _PER_EXPERT.match(key)
        if match:
            per_expert[match["container"]].add(int(match["index"]))
            continue
        match = _FUSED.match(key)
        if match and len(shape) == 3:
            fused[match["container"]].add(match["name"])
    return per_expert, fused


def prefix_hints(unconsumed: Sequence[UnconsumedTensor], unfilled: Sequence[UnfilledTensor]) -> list[str]:
    """A leading-prefix substitution that turns many unconsumed checkpoint keys into unfilled model keys."""
    if not unconsumed or not unfilled:
        return []
    by_suffix: dict[tuple[int, str], list[str]] = defaultdict(list)
    for tensor in unfilled:
        parts = tensor.key.split(".")
        for depth in range(1, min(_MAX_PREFIX_DEPTH, len(parts) - 1) + 1):
            by_suffix[(depth, ".".join(parts[depth:]))].append(".".join(parts[:depth]))
    votes: Counter[tuple[str, str]] = Counter()
    for tensor in unconsumed:
        parts = tensor.mapped_to.split(".")
        seen = set()
        for own_depth in range(1, min(_MAX_PREFIX_DEPTH, len(parts) - 1) + 1):
            suffix = ".".join(parts[own_depth:])
            own_prefix = ".".join(parts[:own_depth])
            for depth in range(1, _MAX_PREFIX_DEPTH + 1):
                for tree_prefix in by_suffix.get((depth, suffix), ()):
                    pair = (own_prefix, tree_prefix)
                    if pair not in seen and own_prefix != tree_prefix:
                        seen.add(pair)
                        votes[pair] += 1
    if not votes:
        return []
    (old, new), count = votes.most_common(1)[0]
    if count < 2 and len(unfilled) > 1:
        return []
    example = next(t.mapped_to for t in unconsumed if t.mapped_to.startswith(old + "."))
    pattern = "^" + re.escape(old) + r"\."
    return [
        f"renamed prefix: {count} checkpoint tensor(s) under '{old}.' match model tensors under '{new}.' "
        f"(e.g. {example} -> {new}{example[len(old):]}); if the checkpoint belongs to this tree, pass "
        f"key_mapping={{{pattern!r}: {new + '.'!r}}}."
    ]
