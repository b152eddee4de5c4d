"""Ties: several paths, one object. A signature records the object once and lists the other paths.

Object identity is not enough. Under accelerate's ``init_empty_weights`` every ``register_parameter`` call
re-creates the parameter on the meta device, so transformers' ``tie_weights`` (``lm_head.weight =
wte.weight``) leaves two distinct objects, while the same build under ``torch.device("meta")`` leaves one.
Both builds load into the same model, so the tie map transformers declares (``all_tied_weights_keys``,
``{target: source}``, kept up to date by ``tie_weights`` after a real load) is merged with identity ties:
the resulting tree is the one the model has once its ties are applied, whichever way it was built.
"""
from __future__ import annotations

from .walk import TreeWalk


def natural_key(path: str) -> tuple:
    """Sort key that orders ``layers.2`` before ``layers.10``; total over all paths."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.split("."))


class _TreeOrder:
    """Tree-order position of a parameter or buffer path, from the walk's module order (built on first use)."""

    def __init__(self, walk: TreeWalk) -> None:
        self._walk = walk
        self._module_rank: dict[str, int] | None = None

    def key(self, path: str) -> tuple[int, int, int]:
        if self._module_rank is None:
            self._module_rank = {module: rank for rank, module in enumerate(self._walk.modules)}
        owner = path.rpartition(".")[0]
        # a module's parameters, then its buffers, come right after it and before its children
        own = self._walk.parameters if path in self._walk.parameters else self._walk.buffers
        within = [p for p in own if p.rpartition(".")[0] == owner].index(path)
        return (self._module_rank.get(owner, len(self._module_rank)), 0 if own is self._walk.parameters else 1, within)


def apply_declared_ties(walk: TreeWalk) -> None:
    """Fold transformers' declared ties into ``walk.aliases`` (in place), keeping the first path in tree order."""
    if not walk.declared_ties:
        return
    aliases, parameters, buffers = walk.aliases, walk.parameters, walk.buffers
    order: _TreeOrder | None = None
    for target, source in walk.declared_ties.items():
        target, source = aliases.get(target, target), aliases.get(source, source)
        if target == source:
            continue
        target_is_tensor = target in parameters or target in buffers
        source_is_tensor = source in parameters or source in buffers
        if not (target_is_tensor and source_is_tensor):
            continue  # names a path this tree does not have (or a module): nothing to tie
        if order is None:
            order = _TreeOrder(walk)
        keep, drop = (source, target) if order.key(source) < order.key(target) else (target, source)
        for alias, canonical in aliases.items():
            if canonical == drop:
                aliases[alias] = keep
        aliases[drop] = keep
        parameters.pop(drop, None)
        buffers.pop(drop, None)


def group_ties(aliases: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """``{alias: canonical}`` -> ``{canonical: (aliases...)}``, both sorted by :func:`natural_key`."""
    groups: dict[str, list[str]] = {}
    for alias, canonical in aliases.items():
        groups.setdefault(canonical, []).append(alias)
    return {
        canonical: tuple(sorted(groups[canonical], key=natural_key))
        for canonical in sorted(groups, key=natural_key)
    }
