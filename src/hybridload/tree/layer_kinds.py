"""``hybridload.layer_kinds(model_or_signature)``: which mixers each decoder layer holds, checked against the config.

The decoder-layer list is found in the tree (a ModuleList of numbered blocks; with several, the one whose
length the config declares, else the one with the most sequence mixers). Each layer's kinds are inferred by
:mod:`.kinds`. When the config declares a pattern (recorded in the signature header when the model was
signed), every layer is checked against it, and a disagreement is a TreeMismatchError with a report, unless
``strict=False``.
"""
from __future__ import annotations

from ..errors import TreeMismatchError
from .kinds import (
    family_prefix,
    is_container,
    kind_from_attribute,
    kind_from_class_name,
    kind_from_structure,
    sort_kinds,
)
from .naming import short_class_name
from .patterns import DeclaredLayer, category, interpret
from .signature import SignatureLike, TreeSignature, as_signature

__all__ = ["LayerKinds", "layer_kinds"]


class _TreeIndex:
    """Children, own parameter names and class of every module of a signature, aliases resolved."""

    def __init__(self, sig: TreeSignature) -> None:
        self.classes = sig.modules
        self.children: dict[str, list[tuple[str, str]]] = {}  # path -> [(name, canonical module path)]
        self.tensors: dict[str, set[str]] = {}
        for path in sig.modules:
            if path:
                parent, _, name = path.rpartition(".")
                self.children.setdefault(parent, []).append((name, path))
        for alias, canonical in sig.aliases.items():
            parent, _, name = alias.rpartition(".")
            if canonical in sig.modules:  # a shared module (one object under several paths)
                self.children.setdefault(parent, []).append((name, canonical))
            else:
                self.tensors.setdefault(parent, set()).add(name)
        for path in list(sig.parameters) + list(sig.buffers):
            parent, _, name = path.rpartition(".")
            self.tensors.setdefault(parent, set()).add(name)
        by_file: dict[str, set[str]] = {}
        for cls in set(sig.modules.values()):
            by_file.setdefault(cls.rpartition(".")[0], set()).add(short_class_name(cls))
        self.prefixes = {file: family_prefix(names) for file, names in by_file.items()}

    def class_kind(self, cls: str) -> str | None:
        return kind_from_class_name(cls, self.prefixes.get(cls.rpartition(".")[0], ""))

    def collect(self, path: str, found: dict[str, list[str]], visiting: frozenset[str]) -> None:
        """Kinds below ``path`` (``path`` itself not judged) into ``found``: kind -> module paths."""
        for name, child in self.children.get(path, ()):
            if child in visiting:
                continue
            cls = self.classes[child]
            attribute_kind = kind_from_attribute(name)
            if not is_container(cls):
                kind = (
                    self.class_kind(cls)
                    or kind_from_structure(
                        frozenset(n for n, _ in self.children.get(child, ())), frozenset(self.tensors.get(child, ()))
                    )
                    or attribute_kind
                )
                if kind:
                    found.setdefault(kind, []).append(child)
                else:
                    self.collect(child, found, visiting | {child})
                continue
            if attribute_kind == "moe":  # a list of experts holds MLPs, but is one MoE
                found.setdefault("moe", []).append(child)
                continue
            if "A_log" in self.tensors.get(child, ()):  # a "...MambaLayer" that is the mixer itself
                found.setdefault("mamba", []).append(child)
                continue
            inside: dict[str, list[str]] = {}
            self.collect(child, inside, visiting | {child})
            if not inside:  # a "...Layer" that is itself the mixer
                kind = self.class_kind(cls) or attribute_kind
                if kind:
                    inside[kind] = [child]
            for kind, paths in inside.items():
                found.setdefault(kind, []).extend(paths)

    def layer(self, path: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        self.collect(path, found, frozenset({path}))
        if not found:  # the layer is itself the mixer
            kind = self.class_kind(self.classes[path])
            if kind:
                found[kind] = [path]
        return found


def _layer_lists(sig: TreeSignature, index: _TreeIndex) -> list[tuple[str, list[str]]]:
    lists = []
    for path, cls in sig.modules.items():
        if short_class_name(cls) not in ("ModuleList", "Sequential"):
            continue
        children = index.children.get(path, [])
        names = [name for name, _ in children]
        if children and names == [str(i) for i in range(len(names))]:
            lists.append((path, [canonical for _, canonical in children]))
    return lists


class LayerKinds(list):
    """One tuple of kinds per decoder layer (e.g. ``("attention", "moe")``), plus where they came from.

    ``container`` is the decoder-layer list's path, ``evidence[i]`` maps each kind of layer ``i`` to the
    module paths that showed it, ``declared``/``source`` are the config's pattern (None if it declares
    none) and ``mismatches`` the layers (and length) that disagree with it.
    """

    def __init__(self, kinds: list[tuple[str, ...]], *, container: str | None,
                 evidence: list[dict[str, list[str]]], declared: list[DeclaredLayer] | None,
                 source: str | None, mismatches: list[str], notes: list[str]) -> None:
        super().__init__(kinds)
        self.container = container
        self.evidence = evidence
        self.declared = declared
        self.source = source
        self.mismatches = mismatches
        self.notes = notes

    @property
    def declared_names(self) -> list[tuple[str, ...]] | None:
        return None if self.declared is None else [layer.names for layer in self.declared]

    def report(self) -> str:
        where = self.container if self.container is not None else "<no decoder layer list found>"
        checked = f"checked against {self.source}" if self.source else "no declared pattern to check against"
        verdict = f"{len(self.mismatches)} mismatch{'es' if len(self.mismatches) != 1 else ''}" if self.source else ""
        lines = [f"layer kinds of {where} ({len(self)} layers), {checked}" + (f": {verdict}" if verdict else "")]
        lines.extend(f"  {mismatch}" for mismatch in self.mismatches)
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"LayerKinds({list.__repr__(self)}, container={self.container!r}, mismatches={len(self.mismatches)})"


def _satisfied(have: list[str], needed: list[frozenset[str]]) -> bool:
    if len(have) != len(needed):
        return False
    remaining = list(have)
    for requirement in sorted(needed, key=len):  # exact requirements first, then alternatives
        match = next((kind for kind in remaining if kind in requirement), None)
        if match is None:
            return False
        remaining.remove(match)
    return True


def _describe(requirements: tuple[frozenset[str], ...]) -> str:
    return " + ".join("/".join(sorted(requirement)) for requirement in requirements) or "nothing"


def _check(kinds: list[tuple[str, ...]], evidence: list[dict[str, list[str]]], container: str | None,
           declared: list[DeclaredLayer], source: str) -> tuple[list[str], list[str]]:
    mismatches: list[str] = []
    notes: list[str] = []
    if len(declared) != len(kinds):
        mismatches.append(f"config ({source}) declares {len(declared)} layers, the tree has {len(kinds)}"
                          + (f" in {container}" if container else " (no decoder layer list found)"))
    for number, (have, layer) in enumerate(zip(kinds, declared)):
        if layer.unknown:
            notes.append(f"layer {number}: declared {', '.join(map(repr, layer.unknown))} is not a kind "
                         f"hybridload knows; not checked")
        categories = {category(kind) for kind in have} | layer.categories() if layer.complete else layer.categories()
        for group in sorted(categories):
            have_here = [kind for kind in have if category(kind) == group]
            needed = [req for req in layer.requirements if category(next(iter(req))) == group]
            if not _satisfied(have_here, needed):
                shown = ", ".join(f"{kind} ({', '.join(evidence[number][kind])})" for kind in have) or "no mixer"
                mismatches.append(
                    f"layer {number}: config ({source}) declares {'/'.join(map(repr, layer.names))} -> needs "
                    f"{_describe(layer.requirements)}; the tree holds {shown}"
                )
                break
    return mismatches, notes


def layer_kinds(model_or_signature: SignatureLike, *, strict: bool = True) -> LayerKinds:
    """Kinds of mixer per decoder layer; TreeMismatchError if the config's declared pattern disagrees.

    Accepts a model (signed first), a TreeSignature or a signature file path. With ``strict=False`` a
    disagreement is returned in ``.mismatches`` instead of raised.
    """
    sig = as_signature(model_or_signature)
    index = _TreeIndex(sig)
    model_facts = sig.header.get("model") or {}
    interpreted = interpret(model_facts.get("layer_pattern"))
    declared, source = interpreted if interpreted else (None, None)
    wanted = len(declared) if declared else model_facts.get("num_hidden_layers")

    best: tuple[tuple, str, list[str], list[dict[str, list[str]]]] | None = None
    for path, layers in _layer_lists(sig, index):
        evidence = [index.layer(layer) for layer in layers]
        with_sequence_mixer = sum(1 for found in evidence if any(category(kind) == "sequence" for kind in found))
        score = (len(layers) == wanted, with_sequence_mixer, len(layers))
        if best is None or score > best[0]:
            best = (score, path, layers, evidence)
    container = best[1] if best else None
    evidence = best[3] if best else []
    kinds = [sort_kinds(set(found)) for found in evidence]

    mismatches: list[str] = []
    notes: list[str] = []
    if declared is not None and source is not None:
        mismatches, notes = _check(kinds, evidence, container, declared, source)
    result = LayerKinds(kinds, container=container, evidence=evidence, declared=declared, source=source,
                        mismatches=mismatches, notes=notes)
    if strict and mismatches:
        raise TreeMismatchError(
            result.report() + "\nThe module tree does not build the layers its config declares: check that "
            "the remote code and config.json come from the same commit (or pass strict=False to inspect).",
            diff=result,
        )
    return result
