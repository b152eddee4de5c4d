"""Tree signatures, diffs and layer-kind maps: make client/server tree equivalence a CI check.

``signature(model)`` describes a module tree canonically, ``compare(a, b)`` says how two trees differ,
``layer_kinds(model)`` maps decoder layers to their mixers. Attributes load lazily so that importing
hybridload (and this package) does not import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# ``signature`` and ``layer_kinds`` are public as ``hybridload.signature`` / ``hybridload.layer_kinds``:
# here those names are the submodules that define them (Python binds a submodule to its package on import).

_LAZY: dict[str, str] = {
    "TreeSignature": "hybridload.tree.signature",
    "ParamSpec": "hybridload.tree.specs",
    "BufferSpec": "hybridload.tree.specs",
    "SignatureInputError": "hybridload.tree.header",
    "compare": "hybridload.tree.diff",
    "TreeDiff": "hybridload.tree.diff",
    "Difference": "hybridload.tree.diff",
    "LayerKinds": "hybridload.tree.layer_kinds",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)


if TYPE_CHECKING:  # pragma: no cover
    from .diff import Difference, TreeDiff, compare
    from .header import SignatureInputError
    from .layer_kinds import LayerKinds
    from .signature import TreeSignature
    from .specs import BufferSpec, ParamSpec
