"""A signature as one ordered ``path -> entry`` map: what a diff walks.

Entries are tuples whose first item says what the path is: ``("module", cls)``, ``("parameter", shape,
dtype)``, ``("buffer", shape, dtype, persistent)`` or ``("alias", canonical_path)``. Order is tree order:
each module, then the parameters, buffers and aliases it owns, then its children.
"""
from __future__ import annotations

from typing import Any

from .signature import TreeSignature

Entry = tuple


def owner(path: str) -> str:
    return path.rpartition(".")[0]


def ordered_entries(sig: TreeSignature) -> dict[str, Entry]:
    owned: dict[str, list[tuple[str, Entry]]] = {}
    for path, spec in sig.parameters.items():
        owned.setdefault(owner(path), []).append((path, ("parameter", spec.shape, spec.dtype)))
    for path, spec in sig.buffers.items():
        owned.setdefault(owner(path), []).append((path, ("buffer", spec.shape, spec.dtype, spec.persistent)))
    for alias, canonical in sig.aliases.items():
        owned.setdefault(owner(alias), []).append((alias, ("alias", canonical)))
    entries: dict[str, Entry] = {}
    for path, cls in sig.modules.items():
        entries[path] = ("module", cls)
        for item_path, entry in owned.pop(path, ()):
            entries[item_path] = entry
    for leftovers in owned.values():  # owned by no recorded module (a hand-built signature): keep, at the end
        for item_path, entry in leftovers:
            entries.setdefault(item_path, entry)
    return entries


def entry_value(entry: Entry) -> Any:
    """JSON-friendly description of an entry, for TreeDiff.to_dict()."""
    kind = entry[0]
    if kind == "module":
        return {"module": entry[1]}
    if kind == "parameter":
        return {"parameter": {"shape": list(entry[1]), "dtype": entry[2]}}
    if kind == "buffer":
        return {"buffer": {"shape": list(entry[1]), "dtype": entry[2], "persistent": entry[3]}}
    return {"alias_of": entry[1]}


def entry_text(entry: Entry, short: bool = True) -> str:
    """One-line human description of an entry."""
    kind = entry[0]
    if kind == "module":
        name = entry[1]
        return f"module {name.rpartition('.')[2]}" + (f" ({name})" if not short else "")
    if kind == "parameter":
        return f"parameter {list(entry[1])} {entry[2]}"
    if kind == "buffer":
        return f"buffer {list(entry[1])} {entry[2]}{'' if entry[3] else ' non-persistent'}"
    return f"tied to {entry[1]}"
