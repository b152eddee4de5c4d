"""What kind of mixer a module is, judged from a signature alone (class names, child names, parameter names).

Working from the signature, not the live model, means a layer-kind map can be checked from a signature
file in CI, and a model and its signature always give the same answer.

A module is judged by, in order: a keyword in its class name after the family prefix its modeling file's
classes share (the *last* keyword wins, so ``Qwen3MoeMLP`` is an MLP, ``GraniteMoeHybridAttention`` an
attention and ``KimiLinearAttention`` full attention); its structure (``A_log`` -> Mamba, ``experts``
child -> MoE, ``q_proj``+``k_proj`` -> attention, ``up_proj``+``down_proj`` -> MLP); its attribute name
(``self_attn``, ``mamba``, ``experts``...). A module that is judged is not looked into (a MoE's shared
expert is not a second MLP). Classes named ``...Layer`` (decoder layers nested in hybrid layers) and plain
containers are looked into first.
"""
from __future__ import annotations

from .naming import short_class_name
from .patterns import CHANNEL_KINDS, SEQUENCE_KINDS

#: kinds in the order a layer's entry lists them: sequence mixers, then channel mixers
KIND_ORDER = SEQUENCE_KINDS + CHANNEL_KINDS

# (keyword in the lower-cased class name, kind); the match ending last wins, the longer one on a tie
_CLASS_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("gateddeltanet", "linear_attention"),
    ("deltanet", "linear_attention"),
    ("gateddelta", "linear_attention"),
    ("deltaattention", "linear_attention"),
    ("linearattention", "linear_attention"),
    ("linearattn", "linear_attention"),
    ("lightningattention", "linear_attention"),
    ("retention", "linear_attention"),
    ("rwkv", "linear_attention"),
    ("hgrn", "linear_attention"),
    ("mamba", "mamba"),
    ("selectivescan", "mamba"),
    ("ssm", "mamba"),
    ("shortconv", "conv"),
    ("attention", "attention"),
    ("attn", "attention"),
    ("moe", "moe"),
    ("mixtureofexperts", "moe"),
    ("experts", "moe"),
    ("mlp", "mlp"),
    ("feedforward", "mlp"),
    ("ffn", "mlp"),
)

_CONTAINER_CLASSES = frozenset({"ModuleList", "Sequential", "ModuleDict"})

_ATTRIBUTE_NAMES: dict[str, str] = {
    "self_attn": "attention",
    "attn": "attention",
    "attention": "attention",
    "self_attention": "attention",
    "linear_attn": "linear_attention",
    "mamba": "mamba",
    "ssm": "mamba",
    "experts": "moe",
    "moe": "moe",
    "block_sparse_moe": "moe",
    "sparse_moe": "moe",
}

_ATTENTION_CHILDREN = (
    frozenset({"q_proj", "k_proj"}),
    frozenset({"qkv_proj"}),
    frozenset({"c_attn"}),
    frozenset({"query_key_value"}),
    frozenset({"Wqkv"}),
    frozenset({"q_a_proj", "kv_a_proj_with_mqa"}),
    frozenset({"kv_a_proj_with_mqa"}),
)
_MLP_CHILDREN = (
    frozenset({"up_proj", "down_proj"}),
    frozenset({"gate_proj", "down_proj"}),
    frozenset({"gate_up_proj", "down_proj"}),
    frozenset({"c_fc", "c_proj"}),
    frozenset({"fc1", "fc2"}),
    frozenset({"w1", "w2"}),
    frozenset({"dense_h_to_4h"}),
)


# words after the keyword that make the class a part of a mixer, not a mixer (``MambaRMSNormGated``)
_PART_WORDS = ("norm", "embed", "rotary", "router", "gate", "cache", "dropout")


def family_prefix(short_names: set[str]) -> str:
    """The CamelCase-word prefix shared by the classes of one modeling file (``KimiLinear``, ``Qwen3Moe``).

    The family name is not evidence of a kind (``KimiLinearAttention`` is full attention and
    ``GraniteMoeHybridRMSNorm`` a norm), so keywords are looked for after it.
    """
    if len(short_names) < 2:
        return ""
    first, last = min(short_names), max(short_names)
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    while length > 0 and not all(len(name) == length or name[length].isupper() for name in short_names):
        length -= 1
    return first[:length]


def kind_from_class_name(class_name: str, prefix: str = "") -> str | None:
    """Kind named by the class name, ignoring its family ``prefix``; None for parts such as norms."""
    short = short_class_name(class_name)
    if prefix and short.startswith(prefix) and len(short) > len(prefix):
        short = short[len(prefix):]
    lowered = short.lower()
    best: tuple[int, int, str] | None = None
    for keyword, kind in _CLASS_KEYWORDS:
        start = lowered.rfind(keyword)
        if start < 0:
            continue
        candidate = (start + len(keyword), len(keyword), kind)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is None:
        return None
    remainder = lowered[best[0]:]
    if any(word in remainder for word in _PART_WORDS):
        return None
    return best[2]


def kind_from_structure(children: frozenset[str], parameters: frozenset[str]) -> str | None:
    if "A_log" in parameters:
        return "mamba"
    if "experts" in children and ({"gate", "router"} & children):
        return "moe"
    if any(needed <= children for needed in _ATTENTION_CHILDREN):
        return "attention"
    if any(needed <= children for needed in _MLP_CHILDREN):
        return "mlp"
    return None


def is_container(class_name: str) -> bool:
    short = short_class_name(class_name)
    return short in _CONTAINER_CLASSES or short.lower().endswith("layer")


def kind_from_attribute(name: str) -> str | None:
    return _ATTRIBUTE_NAMES.get(name)


def sort_kinds(kinds: set[str]) -> tuple[str, ...]:
    known = [kind for kind in KIND_ORDER if kind in kinds]
    return tuple(known + sorted(kinds - set(KIND_ORDER)))
