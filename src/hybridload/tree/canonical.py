"""The canonical text of a tree, and its sha256: the one definition both signing and reading use.

One line per entry (``M`` module, ``P`` parameter, ``B`` buffer, ``T`` tie alias), fields tab-separated,
lines sorted, so the digest depends on what the tree holds and not on registration order or on how a
file was formatted. The schema id is hashed first, so a future schema can never collide with this one.

    M<TAB>path<TAB>class
    P<TAB>path<TAB>d0,d1,...<TAB>dtype
    B<TAB>path<TAB>d0,d1,...<TAB>dtype<TAB>persistent|non-persistent
    T<TAB>alias path<TAB>canonical path
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping

SCHEMA = "hybridload.tree-signature/1"


def shape_text(shape: tuple, cache: dict) -> str:
    text = cache.get(shape)
    if text is None:
        text = cache[shape] = ",".join(map(str, shape))
    return text


def canonical_text(
    modules: Mapping[str, str],
    parameters: Mapping[str, tuple],
    buffers: Mapping[str, tuple],
    ties: Mapping[str, tuple[str, ...]],
) -> str:
    """The schema id, then every entry line, all lines sorted.

    Built section by section (``B`` < ``M`` < ``P`` < ``T`` sorts the sections; within one, sorting the
    entries by path sorts the lines, since paths are unique and a tab sorts before any path character), so
    module lines need no per-entry formatting.
    """
    shapes: dict[tuple, str] = {}
    sections = []
    if buffers:
        sections.append("\n".join([
            f"B\t{path}\t{shape_text(spec[0], shapes)}\t{spec[1]}\t{'persistent' if spec[2] else 'non-persistent'}"
            for path, spec in sorted(buffers.items())
        ]))
    if modules:
        paths = sorted(modules)  # plain string keys sort faster than (path, value) items
        sections.append("M\t" + "\nM\t".join(map("\t".join, zip(paths, map(modules.__getitem__, paths)))))
    if parameters:
        paths = sorted(parameters)
        # a tree repeats a handful of (shape, dtype) specs: format each once, then one join per line
        texts = {spec: f"{shape_text(spec[0], shapes)}\t{spec[1]}" for spec in set(parameters.values())}
        sections.append("P\t" + "\nP\t".join(map("\t".join, zip(paths, map(texts.__getitem__, map(parameters.__getitem__, paths))))))
    if ties:
        sections.append("\n".join(sorted([f"T\t{alias}\t{canonical}" for canonical, group in ties.items()
                                            for alias in group])))
    return SCHEMA + "\n" + "\n".join(sections) + "\n"


def tree_digest(
    modules: Mapping[str, str],
    parameters: Mapping[str, tuple],
    buffers: Mapping[str, tuple],
    ties: Mapping[str, tuple[str, ...]],
) -> str:
    text = canonical_text(modules, parameters, buffers, ties)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
