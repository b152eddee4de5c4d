"""The human report of a TreeDiff: what a CI log should show about two trees, short first.

A summary line (verdict, digests, counts by kind of change), the first differing path, rename hints, then
the first N differences in tree order grouped under their parent path. A missing or extra module is one
line; the entries inside it are folded into a count. Header differences come last, as warnings.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .entries import owner

if TYPE_CHECKING:  # pragma: no cover
    from .diff import Difference, TreeDiff
    from .signature import TreeSignature

_MARK = {"missing": "-", "extra": "+"}
_NAME_WIDTH = 40


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _tree_summary(sig: "TreeSignature") -> str:
    ties = sum(len(group) for group in sig.ties.values())
    return (f"{_plural(len(sig.modules), 'module')}, {_plural(len(sig.parameters), 'parameter')}, "
            f"{_plural(len(sig.buffers), 'buffer')}, {_plural(ties, 'tie')}, {sig.numel():,} parameter elements")


def _fold(differences: tuple["Difference", ...]) -> list[list]:
    """[[difference, entries folded into it], ...]: entries inside a missing/extra module join its line."""
    items: list[list] = []
    open_roots: dict[str, list] = {}
    for difference in differences:
        root = open_roots.get(difference.change)
        if root is not None and difference.path.startswith(root[0].path + "."):
            root[1] += 1
            continue
        item = [difference, 0]
        items.append(item)
        if difference.change in _MARK and difference.entry == "module":
            open_roots[difference.change] = item
    return items


def _item_line(difference: "Difference", folded: int, name: str, width: int) -> str:
    mark = _MARK.get(difference.change, "~")
    inside = f"  (+{folded} inside)" if folded else ""
    return f"    {mark} {name.ljust(width)}  {difference.text}{inside}"


def render(diff: "TreeDiff", max_items: int = 20) -> str:
    label_a, label_b = diff.labels
    lines: list[str] = []
    if diff.identical:
        lines.append(f"trees identical: digest {diff.a.digest[:12]} ({_tree_summary(diff.a)})")
    else:
        counts: dict[str, int] = {}
        for difference in diff.differences:
            counts[difference.change] = counts.get(difference.change, 0) + 1
        by_kind = ", ".join(f"{count} {change}" for change, count in counts.items())
        lines.append(
            f"trees differ: {_plural(len(diff.differences), 'difference')} ({by_kind}) between "
            f"{label_a} {diff.a.digest[:12]} and {label_b} {diff.b.digest[:12]}"
        )
        lines.append(f"  {label_a}: {_tree_summary(diff.a)}")
        lines.append(f"  {label_b}: {_tree_summary(diff.b)}")
        first = diff.differences[0]
        what = (f"{first.change} {first.entry}" if first.change in _MARK
                else "tie changed" if first.change == "tie" else f"{first.entry} {first.change} changed")
        lines.append(f"first difference: {first.path or '<root>'} ({what})")
        for old, new in diff.renames:
            lines.append(f"looks renamed: {old} -> {new} (same class and contents)")
        items = _fold(diff.differences)
        shown = items[: max(0, max_items)]
        lines.append(
            f"differences {min(len(shown), len(items))} of {len(items)} shown, tree order "
            f"(- only in {label_a}, + only in {label_b}, ~ changed):"
        )
        index = 0
        while index < len(shown):
            group = owner(shown[index][0].path)
            end = index
            while end < len(shown) and owner(shown[end][0].path) == group:
                end += 1
            members = shown[index:end]
            names = [item[0].path[len(group) + 1:] if group else (item[0].path or "<root>") for item in members]
            width = min(_NAME_WIDTH, max(len(name) for name in names))
            lines.append(f"  {group or '<root>'}:")
            lines.extend(_item_line(item[0], item[1], name, width) for item, name in zip(members, names))
            index = end
        if len(items) > len(shown):
            lines.append(f"  ... {len(items) - len(shown)} more (TreeDiff.to_dict() lists all)")
    if diff.warnings:
        lines.append("warnings (not tree differences):")
        lines.extend(f"  {warning}" for warning in diff.warnings)
    return "\n".join(lines)
