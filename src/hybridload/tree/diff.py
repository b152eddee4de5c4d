"""``hybridload.compare(a, b)``: how two module trees differ, in tree order, ready for a CI log.

``a`` is the reference (e.g. the signature the server published), ``b`` the tree under test: *missing*
means in ``a`` only, *extra* in ``b`` only. Header differences (library versions, plan facts) are
warnings, never tree differences: the digest decides :attr:`TreeDiff.identical`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import TreeMismatchError
from .entries import Entry, entry_text, entry_value, ordered_entries, owner
from .signature import SignatureLike, TreeSignature, as_signature

__all__ = ["Difference", "TreeDiff", "compare"]

#: the kinds of change a Difference can record
CHANGES = ("missing", "extra", "class", "shape", "dtype", "persistence", "tie", "kind")


@dataclass(frozen=True)
class Difference:
    """One difference at one path. ``a``/``b`` are JSON-friendly values (None where the side has nothing)."""

    path: str
    change: str  # one of CHANGES
    entry: str  # "module", "parameter", "buffer" or "alias": what the path is (in a, else in b)
    a: Any
    b: Any
    text: str  # one-line human description

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "change": self.change, "entry": self.entry, "a": self.a, "b": self.b,
                "text": self.text}


def _changes(path: str, ea: Entry, eb: Entry) -> list[Difference]:
    kind_a, kind_b = ea[0], eb[0]
    if kind_a != kind_b:
        change = "tie" if "alias" in (kind_a, kind_b) else "kind"
        return [Difference(path, change, kind_a, entry_value(ea), entry_value(eb),
                           f"{entry_text(ea)} -> {entry_text(eb)}")]
    if kind_a == "module":
        return [Difference(path, "class", "module", ea[1], eb[1], f"class {ea[1]} -> {eb[1]}")]
    if kind_a == "alias":
        return [Difference(path, "tie", "alias", ea[1], eb[1], f"tied to {ea[1]} -> tied to {eb[1]}")]
    found: list[Difference] = []
    if ea[1] != eb[1]:
        found.append(Difference(path, "shape", kind_a, list(ea[1]), list(eb[1]),
                                f"{kind_a} shape {list(ea[1])} -> {list(eb[1])}"))
    if ea[2] != eb[2]:
        found.append(Difference(path, "dtype", kind_a, ea[2], eb[2], f"{kind_a} dtype {ea[2]} -> {eb[2]}"))
    if kind_a == "buffer" and ea[3] != eb[3]:
        persistence = {True: "persistent", False: "non-persistent"}
        found.append(Difference(path, "persistence", "buffer", ea[3], eb[3],
                                f"buffer {persistence[ea[3]]} -> {persistence[eb[3]]}"))
    return found


def _order_keys(a_entries: dict[str, Entry], b_entries: dict[str, Entry]) -> dict[str, tuple]:
    """Merged tree order: a's order; an entry only in b sorts just before the next entry both trees share."""
    keys: dict[str, tuple] = {path: (rank, 1, 0) for rank, path in enumerate(a_entries)}
    b_paths = list(b_entries)
    next_shared = len(a_entries)
    for index in range(len(b_paths) - 1, -1, -1):
        path = b_paths[index]
        shared = keys.get(path)
        if shared is not None:
            next_shared = shared[0]
        else:
            keys[path] = (next_shared, 0, index)
    return keys


def _flatten(header: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in header.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _header_differences(a: TreeSignature, b: TreeSignature) -> dict[str, tuple[Any, Any]]:
    flat_a, flat_b = _flatten(a.header), _flatten(b.header)
    return {
        key: (flat_a.get(key), flat_b.get(key))
        for key in sorted(set(flat_a) | set(flat_b))
        if flat_a.get(key) != flat_b.get(key)
    }


def _subtree(entries: dict[str, Entry], root: str) -> dict[str, Entry]:
    prefix = root + "."
    return {path[len(prefix):]: entry for path, entry in entries.items() if path.startswith(prefix)}


def _renames(a_entries: dict[str, Entry], b_entries: dict[str, Entry],
             missing: list[str], extra: list[str]) -> list[tuple[str, str]]:
    """Missing/extra module pairs under one parent with the same class and the same content."""
    missing_set, extra_set = set(missing), set(extra)
    top_missing = [path for path in missing if owner(path) not in missing_set and a_entries[path][0] == "module"]
    top_extra = [path for path in extra if owner(path) not in extra_set and b_entries[path][0] == "module"]
    found: list[tuple[str, str]] = []
    taken: set[str] = set()
    for old in top_missing:
        for new in top_extra:
            if new in taken or owner(new) != owner(old) or a_entries[old] != b_entries[new]:
                continue
            if _subtree(a_entries, old) == _subtree(b_entries, new):
                found.append((old, new))
                taken.add(new)
                break
    return found


def _registration_order_warning(a: TreeSignature, b: TreeSignature) -> str | None:
    for name in ("modules", "parameters", "buffers"):
        order_a, order_b = list(getattr(a, name)), list(getattr(b, name))
        if order_a != order_b:
            first = next((x for x, y in zip(order_a, order_b) if x != y), None)
            return (f"same tree, different registration order of {name} (first at {first!r}): state-dict and "
                    f"named_{name}() order differ between the two builds")
    return None


class TreeDiff:
    """The result of :func:`compare`. ``identical`` is decided by the tree digests alone."""

    def __init__(self, a: TreeSignature, b: TreeSignature, labels: tuple[str, str] = ("a", "b")) -> None:
        self.a, self.b = a, b
        self.labels = (str(labels[0]), str(labels[1]))
        differences: list[Difference] = []
        self._renames: list[tuple[str, str]] = []
        if a.digest != b.digest:
            a_entries, b_entries = ordered_entries(a), ordered_entries(b)
            missing, extra = [], []
            for path, entry in a_entries.items():
                other = b_entries.get(path)
                if other is None:
                    missing.append(path)
                    differences.append(Difference(path, "missing", entry[0], entry_value(entry), None,
                                                  entry_text(entry)))
                elif other != entry:
                    differences.extend(_changes(path, entry, other))
            for path, entry in b_entries.items():
                if path not in a_entries:
                    extra.append(path)
                    differences.append(Difference(path, "extra", entry[0], None, entry_value(entry),
                                                  entry_text(entry)))
            keys = _order_keys(a_entries, b_entries)
            differences.sort(key=lambda d: keys[d.path])
            self._renames = _renames(a_entries, b_entries, missing, extra)
        self.differences: tuple[Difference, ...] = tuple(differences)
        self.header_differences: dict[str, tuple[Any, Any]] = _header_differences(a, b)
        warnings = [
            f"header {key}: {value_a!r} ({self.labels[0]}) != {value_b!r} ({self.labels[1]})"
            for key, (value_a, value_b) in self.header_differences.items()
        ]
        if a.digest == b.digest:
            order = _registration_order_warning(a, b)
            if order:
                warnings.append(order)
        self.warnings: tuple[str, ...] = tuple(warnings)

    # -- verdict ----------------------------------------------------------------------------------------
    @property
    def identical(self) -> bool:
        return self.a.digest == self.b.digest

    @property
    def first_path(self) -> str | None:
        """The first differing path in tree order (None when identical)."""
        return self.differences[0].path if self.differences else None

    @property
    def first_difference(self) -> Difference | None:
        return self.differences[0] if self.differences else None

    # -- by category ------------------------------------------------------------------------------------
    def _paths(self, change: str, entry: str) -> list[str]:
        return [d.path for d in self.differences if d.change == change and d.entry == entry]

    def _pairs(self, change: str) -> dict[str, tuple[Any, Any]]:
        return {d.path: (d.a, d.b) for d in self.differences if d.change == change}

    def _changed(self, entry: str) -> list[str]:
        paths = [d.path for d in self.differences if d.entry == entry and d.change not in ("missing", "extra")]
        return list(dict.fromkeys(paths))

    missing_modules = property(lambda self: self._paths("missing", "module"), doc="Module paths only in a.")
    extra_modules = property(lambda self: self._paths("extra", "module"), doc="Module paths only in b.")
    missing_parameters = property(lambda self: self._paths("missing", "parameter"))
    extra_parameters = property(lambda self: self._paths("extra", "parameter"))
    missing_buffers = property(lambda self: self._paths("missing", "buffer"))
    extra_buffers = property(lambda self: self._paths("extra", "buffer"))
    changed_modules = property(lambda self: self._changed("module"), doc="Module paths whose class changed.")
    changed_parameters = property(lambda self: self._changed("parameter"))
    changed_buffers = property(lambda self: self._changed("buffer"))
    class_changes = property(lambda self: self._pairs("class"), doc="path -> (class in a, class in b).")
    shape_changes = property(lambda self: self._pairs("shape"), doc="path -> (shape in a, shape in b).")
    dtype_changes = property(lambda self: self._pairs("dtype"), doc="path -> (dtype in a, dtype in b).")
    persistence_changes = property(lambda self: self._pairs("persistence"))
    tie_changes = property(lambda self: self._pairs("tie"))

    @property
    def renames(self) -> list[tuple[str, str]]:
        """(path in a, path in b) for modules that look renamed: same parent, class and content."""
        return list(self._renames)

    # -- output -----------------------------------------------------------------------------------------
    def report(self, max_items: int = 20) -> str:
        """Short summary, then the first ``max_items`` differences grouped by parent path, then warnings."""
        from .diff_text import render

        return render(self, max_items)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serialisable (for ``--json`` output)."""
        counts: dict[str, int] = {}
        for difference in self.differences:
            counts[difference.change] = counts.get(difference.change, 0) + 1
        return {
            "identical": self.identical,
            "labels": list(self.labels),
            "digests": [self.a.digest, self.b.digest],
            "first_path": self.first_path,
            "counts": counts,
            "differences": [difference.to_dict() for difference in self.differences],
            "renames": [list(pair) for pair in self._renames],
            "header_differences": {key: list(pair) for key, pair in self.header_differences.items()},
            "warnings": list(self.warnings),
        }

    def raise_if_different(self, max_items: int = 20) -> None:
        """TreeMismatchError (carrying this diff) unless the trees are identical."""
        if not self.identical:
            raise TreeMismatchError(self.report(max_items), diff=self)

    def __str__(self) -> str:
        return self.report()

    def __repr__(self) -> str:
        return (f"TreeDiff(identical={self.identical}, differences={len(self.differences)}, "
                f"first_path={self.first_path!r}, warnings={len(self.warnings)})")


def compare(a: SignatureLike, b: SignatureLike, *, labels: tuple[str, str] = ("a", "b")) -> TreeDiff:
    """Diff two trees; each side is a TreeSignature, a signature file path, or a model (signed here)."""
    return TreeDiff(as_signature(a), as_signature(b), labels)
