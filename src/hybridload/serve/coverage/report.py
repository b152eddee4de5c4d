"""``CoverageReport``: does a checkpoint fill a module tree exactly, and by which rule each tensor got there.

Problems (any one makes ``ok`` false): checkpoint tensors nothing in the tree reads (*unconsumed*), model
tensors no checkpoint tensor fills (*unfilled*: the served model would hold initialised values), and shape,
dtype or conversion mismatches. Not problems, but listed: tensors the load fills otherwise or may skip
(*allowed*: tied weights, the class's ignore-on-load patterns), floating-point casts the load performs, and
the rules that consumed the checkpoint with their counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ...errors import CheckpointCoverageError


@dataclass(frozen=True)
class UnconsumedTensor:
    """A checkpoint tensor nothing in the tree reads."""

    key: str
    file: str
    shape: tuple[int, ...]
    dtype: str
    mapped_to: str  # the model key the load's renames turned it into (== key when nothing renamed it)
    rule: str  # what mapped it, and why nothing reads it

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "file": self.file, "shape": list(self.shape), "dtype": self.dtype,
                "mapped_to": self.mapped_to, "rule": self.rule}


@dataclass(frozen=True)
class UnfilledTensor:
    """A model tensor (parameter or persistent buffer) no checkpoint tensor fills."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "shape": list(self.shape), "dtype": self.dtype, "rule": self.rule}


@dataclass(frozen=True)
class Mismatch:
    """A model tensor the checkpoint fills with the wrong shape or dtype, or through a conversion that fails."""

    kind: str  # "shape" | "dtype" | "conversion"
    target: str  # model key
    sources: tuple[str, ...]  # checkpoint keys
    checkpoint: str  # what the checkpoint gives
    model: str  # what the tree holds
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "sources": list(self.sources),
                "checkpoint": self.checkpoint, "model": self.model, "rule": self.rule}


@dataclass(frozen=True)
class Allowed:
    """A tensor that is not a problem although nothing maps it: tied, or skipped by the class's own rules."""

    key: str
    side: str  # "model" (filled otherwise or allowed missing) | "checkpoint" (ignored on load)
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "side": self.side, "rule": self.rule}


@dataclass(frozen=True)
class CoverageReport:
    """How a checkpoint's tensors map onto a meta tree; see the module docstring."""

    model: str  # class of the tree
    checkpoint: str  # where the index came from
    checkpoint_tensors: int
    model_tensors: int
    unconsumed: tuple[UnconsumedTensor, ...] = ()
    unfilled: tuple[UnfilledTensor, ...] = ()
    mismatches: tuple[Mismatch, ...] = ()
    allowed: tuple[Allowed, ...] = ()
    casts: Mapping[str, int] = field(default_factory=dict)  # "BF16 -> float32": number of checkpoint tensors
    rules: Mapping[str, int] = field(default_factory=dict)  # rule -> checkpoint tensors it consumed
    hints: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.unconsumed or self.unfilled or self.mismatches)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def problems(self) -> int:
        return len(self.unconsumed) + len(self.unfilled) + len(self.mismatches)

    def mismatches_of(self, kind: str) -> list[Mismatch]:
        return [m for m in self.mismatches if m.kind == kind]

    # -- output --------------------------------------------------------------------------------------------
    def _counts(self) -> str:
        parts = []
        if self.unconsumed:
            parts.append(f"{len(self.unconsumed)} unconsumed")
        if self.unfilled:
            parts.append(f"{len(self.unfilled)} unfilled")
        for kind in ("shape", "dtype", "conversion"):
            n = len(self.mismatches_of(kind))
            if n:
                parts.append(f"{n} {kind}")
        return ", ".join(parts)

    def summary(self) -> str:
        if self.ok:
            return (
                f"checkpoint fills the tree: {self.checkpoint_tensors:,} checkpoint tensors -> {self.model_tensors:,} "
                f"model tensors of {self.model} ({self.checkpoint})"
            )
        return (
            f"checkpoint does not fill the tree: {self.problems} problem{'s' if self.problems != 1 else ''} "
            f"({self._counts()}) between {self.checkpoint} ({self.checkpoint_tensors:,} tensors) and "
            f"{self.model} ({self.model_tensors:,} tensors)"
        )

    def format(self, max_items: int = 20) -> str:
        """A human report: verdict, problems (bounded per section), hints, then what was allowed and how."""
        lines = [self.summary()]

        def section(title: str, items: Sequence[Any], render: Any) -> None:
            if not items:
                return
            lines.append(f"{title} ({len(items)}):")
            lines.extend("  " + render(item) for item in items[:max_items])
            if len(items) > max_items:
                lines.append(f"  ... {len(items) - max_items} more (to_dict() lists all)")

        section(
            "checkpoint tensors nothing consumes",
            self.unconsumed,
            lambda t: f"{t.key}  {t.dtype} {list(t.shape)}  [{t.file}]: {t.rule}",
        )
        section(
            "model tensors nothing fills (the served model would hold initialised values)",
            self.unfilled,
            lambda t: f"{t.key}  {t.dtype} {list(t.shape)}: {t.rule}",
        )
        section(
            "mismatches",
            self.mismatches,
            lambda m: f"{m.kind}: {m.target}: checkpoint {m.checkpoint}, model {m.model}  "
            f"(from {_sources(m.sources)}; {m.rule})",
        )
        if self.hints:
            lines.append("hints:")
            lines.extend(f"  {hint}" for hint in self.hints)
        if self.allowed:
            by_kind: dict[tuple[str, str], int] = {}
            for item in self.allowed:
                kind = (item.side, _rule_family(item.rule))
                by_kind[kind] = by_kind.get(kind, 0) + 1
            lines.append(
                "allowed (not problems): "
                + "; ".join(f"{n} {side} tensor{'s' if n != 1 else ''} {family}" for (side, family), n in by_kind.items())
            )
        if self.casts:
            lines.append("casts the load performs: " + ", ".join(f"{pair} x{n}" for pair, n in self.casts.items()))
        if self.rules:
            lines.append("rules that consumed the checkpoint:")
            lines.extend(f"  {n:>8,}  {rule}" for rule, n in self.rules.items())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model": self.model,
            "checkpoint": self.checkpoint,
            "checkpoint_tensors": self.checkpoint_tensors,
            "model_tensors": self.model_tensors,
            "problems": self.problems,
            "unconsumed": [t.to_dict() for t in self.unconsumed],
            "unfilled": [t.to_dict() for t in self.unfilled],
            "mismatches": [m.to_dict() for m in self.mismatches],
            "allowed": [a.to_dict() for a in self.allowed],
            "casts": dict(self.casts),
            "rules": dict(self.rules),
            "hints": list(self.hints),
        }

    def raise_if_incomplete(self) -> "CoverageReport":
        """Raise :class:`CheckpointCoverageError` (carrying this report) unless ``ok``; returns self."""
        if not self.ok:
            raise CheckpointCoverageError(
                self.format(max_items=10) + "\nNothing was read. Use a checkpoint that belongs to this tree (same "
                "architecture, layer and expert counts), pass key_mapping for renamed keys, or build the tree the "
                "checkpoint was saved from.",
                self,
            )
        return self


def _sources(keys: Iterable[str]) -> str:
    keys = list(keys)
    return keys[0] if len(keys) == 1 else f"{keys[0]} (+{len(keys) - 1} more)"


def _rule_family(rule: str) -> str:
    """A rule without its per-tensor details, to count allowed tensors by kind ("tied", "ignored on load"...)."""
    if rule.startswith("tied to "):
        return "tied"
    return rule.split(":")[0]
