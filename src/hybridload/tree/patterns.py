"""Layer patterns that configs declare, read once when a model is signed and interpreted by layer_kinds.

Configs spell the per-layer mixer in several ways: Nemotron-H's ``hybrid_override_pattern`` string
(``M`` Mamba, ``*`` attention, ``E`` MoE, ``-`` MLP), Jamba/Falcon-H1/Zamba2's ``layers_block_type`` and the
``layer_types`` list transformers 5 standardises on (where Mamba layers are spelled ``linear_attention``),
plus ``mlp_layer_types`` (``dense``/``sparse``) for the channel mixer.
"""
from __future__ import annotations

from typing import Any

#: sequence-mixer pattern attributes, most specific first
SEQUENCE_PATTERN_ATTRIBUTES = ("hybrid_override_pattern", "layers_block_type", "layer_types")
CHANNEL_PATTERN_ATTRIBUTE = "mlp_layer_types"

SEQUENCE_KINDS = ("attention", "linear_attention", "mamba", "conv")
CHANNEL_KINDS = ("moe", "mlp")

_HYBRID_OVERRIDE_SYMBOLS: dict[str, tuple[frozenset[str], ...]] = {
    "M": (frozenset({"mamba"}),),
    "*": (frozenset({"attention"}),),
    "E": (frozenset({"moe"}),),
    "-": (frozenset({"mlp"}),),
}

# a declared name -> the kinds the tree must hold for it; each frozenset lists acceptable alternatives
_DECLARED_NAMES: dict[str, tuple[frozenset[str], ...]] = {
    "attention": (frozenset({"attention"}),),
    "full_attention": (frozenset({"attention"}),),
    "sliding_attention": (frozenset({"attention"}),),
    "chunked_attention": (frozenset({"attention"}),),
    "indexed_attention": (frozenset({"attention"}),),
    "deepseek_sparse_attention": (frozenset({"attention"}),),
    # transformers 5 spells Mamba layers "linear_attention" too (configuration_utils._LEGACY_LAYER_TYPE_REMAP)
    "linear_attention": (frozenset({"linear_attention", "mamba"}),),
    "mamba": (frozenset({"mamba"}),),
    "mamba2": (frozenset({"mamba"}),),
    "conv": (frozenset({"conv"}),),
    "hybrid": (frozenset({"attention"}), frozenset({"mamba"})),  # Falcon-H1 / Zamba2: both in one layer
    "moe": (frozenset({"moe"}),),
    "sparse": (frozenset({"moe"}),),
    "mlp": (frozenset({"mlp"}),),
    "dense": (frozenset({"mlp"}),),
}


def _text_config(config: Any) -> Any:
    get_text_config = getattr(config, "get_text_config", None)
    if callable(get_text_config):
        try:
            return get_text_config()
        except Exception:  # a remote config with an unusual layout: the top level is the best guess
            return config
    return config


def _pattern_value(value: Any) -> str | list[str] | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(item, str) for item in value):
        return list(value)
    return None


def declared_pattern(config: Any) -> dict[str, Any] | None:
    """``{attribute: value}`` for the config's sequence pattern (first found) and channel pattern, or None."""
    if config is None:
        return None
    config = _text_config(config)
    declared: dict[str, Any] = {}
    for attribute in SEQUENCE_PATTERN_ATTRIBUTES:
        try:
            value = _pattern_value(getattr(config, attribute, None))
        except Exception:  # a property that cannot be computed for this config
            value = None
        if value is not None:
            declared[attribute] = value
            break
    channel = _pattern_value(getattr(config, CHANNEL_PATTERN_ATTRIBUTE, None))
    if channel is not None:
        declared[CHANNEL_PATTERN_ATTRIBUTE] = channel
    return declared or None


def num_hidden_layers(config: Any) -> int | None:
    if config is None:
        return None
    value = getattr(_text_config(config), "num_hidden_layers", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def category(kind: str) -> str:
    if kind in SEQUENCE_KINDS:
        return "sequence"
    if kind in CHANNEL_KINDS:
        return "channel"
    return "other"


class DeclaredLayer:
    """What a config declares for one layer: requirements (alternatives each) and whether that is all of it."""

    __slots__ = ("names", "requirements", "complete", "unknown")

    def __init__(self, names: tuple[str, ...], requirements: tuple[frozenset[str], ...], complete: bool,
                 unknown: tuple[str, ...]) -> None:
        self.names = names  # the declared spellings, for reports
        self.requirements = requirements
        self.complete = complete  # True: every mixer of the layer is declared (hybrid_override_pattern)
        self.unknown = unknown  # declared spellings this version cannot interpret

    def categories(self) -> set[str]:
        return {category(kind) for requirement in self.requirements for kind in requirement}


def interpret(declared: dict[str, Any] | None) -> tuple[list[DeclaredLayer], str] | None:
    """Per-layer requirements from :func:`declared_pattern`'s dict, and a label naming its source."""
    if not declared:
        return None
    columns: list[list[tuple[str, tuple[frozenset[str], ...] | None]]] = []
    sources: list[str] = []
    complete = False
    for attribute, value in declared.items():
        if attribute == "hybrid_override_pattern" and isinstance(value, str):
            columns.append([(symbol, _HYBRID_OVERRIDE_SYMBOLS.get(symbol)) for symbol in value])
            complete = True
        elif isinstance(value, (list, tuple, str)):
            items = list(value) if not isinstance(value, str) else [value]
            columns.append([(str(item), _DECLARED_NAMES.get(str(item).lower())) for item in items])
        else:
            continue
        sources.append(attribute)
    if not columns:
        return None
    length = max(len(column) for column in columns)
    layers: list[DeclaredLayer] = []
    for index in range(length):
        names: list[str] = []
        requirements: list[frozenset[str]] = []
        unknown: list[str] = []
        for column in columns:
            if index >= len(column):
                continue
            name, needed = column[index]
            names.append(name)
            if needed is None:
                unknown.append(name)
            else:
                requirements.extend(needed)
        layers.append(DeclaredLayer(tuple(names), tuple(requirements), complete, tuple(unknown)))
    return layers, " + ".join(sources)
