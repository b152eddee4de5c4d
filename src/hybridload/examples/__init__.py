"""Example models shipped inside the hybridload wheel (package data), so checks and docs run with no Hub access.

``hybrid_tiny``: a ~1 MB Nemotron-H-style hybrid (Mamba2 + MoE + attention + MLP) remote-code model whose
modeling file imports ``mamba_ssm`` and ``causal_conv1d`` the way Nemotron-H does, with a tokenizer, a
float32 checkpoint and the tree signature a GPU server produces for it (``reference_signature.json``).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import PlanError

_ROOT = Path(__file__).resolve().parent

__all__ = ["names", "path"]


def names() -> list[str]:
    """The bundled examples: folders here that hold a ``config.json``."""
    return sorted(entry.name for entry in _ROOT.iterdir() if (entry / "config.json").is_file())


def path(name: str) -> Path:
    """The folder of the bundled example ``name``, usable wherever a local model path is (from_pretrained, resolve)."""
    available = names()
    if not isinstance(name, str) or name not in available:
        raise PlanError(
            f"hybridload has no bundled example {name!r}; the bundled examples are {available}. "
            f"Use one of those names, e.g. hybridload.examples.path({available[0]!r})."
            if available
            else "hybridload's bundled examples are missing from this installation; reinstall hybridload."
        )
    return _ROOT / name
