"""``hybridload.signature(model)``: a canonical, deterministic description of a module tree.

The *tree* part (module path -> class, parameter/buffer path -> shape and dtype, buffer persistence, ties)
is what a client meta build and a server load must agree on; its sha256 is :attr:`TreeSignature.digest`.
The *header* (plan facts, model facts, library versions) rides along for humans and for warnings, and is
not hashed, so two machines with different library versions can still prove they built the same tree.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Union

from .canonical import SCHEMA, tree_digest
from .header import SignatureInputError, build_header, json_normalise
from .specs import BufferSpec, ParamSpec
from .ties import apply_declared_ties, group_ties
from .walk import walk

__all__ = ["BufferSpec", "ParamSpec", "SCHEMA", "SignatureInputError", "TreeSignature", "as_signature", "signature"]


class TreeSignature:
    """A signed module tree. Immutable; equal (``==``) when the trees are equal, whatever the headers say."""

    __slots__ = ("_modules", "_parameters", "_buffers", "_ties", "_header", "_digest", "_aliases")

    def __init__(
        self,
        modules: Mapping[str, str],
        parameters: Mapping[str, tuple],
        buffers: Mapping[str, tuple],
        ties: Mapping[str, tuple[str, ...]] | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> None:
        self._set(
            dict(modules),
            {path: spec if type(spec) is ParamSpec else ParamSpec(*spec) for path, spec in parameters.items()},
            {path: spec if type(spec) is BufferSpec else BufferSpec(*spec) for path, spec in buffers.items()},
            {canonical: tuple(aliases) for canonical, aliases in (ties or {}).items()},
            json_normalise(header or {}),
        )

    @classmethod
    def _adopt(cls, modules: dict, parameters: dict, buffers: dict, ties: dict, header: dict) -> "TreeSignature":
        """Wrap dicts the caller built for this signature alone (already specs, header normalised): no copies."""
        sig = cls.__new__(cls)
        sig._set(modules, parameters, buffers, ties, header)
        return sig

    def _set(self, modules: dict, parameters: dict, buffers: dict, ties: dict, header: dict) -> None:
        self._modules = MappingProxyType(modules)
        self._parameters = MappingProxyType(parameters)
        self._buffers = MappingProxyType(buffers)
        self._ties = MappingProxyType(ties)
        self._header = MappingProxyType(header)
        self._digest = tree_digest(modules, parameters, buffers, ties)
        self._aliases: dict[str, str] | None = None

    # -- the tree ---------------------------------------------------------------------------------------
    @property
    def modules(self) -> Mapping[str, str]:
        """Module path -> class name, in tree order; the root is ``""``."""
        return self._modules

    @property
    def parameters(self) -> Mapping[str, ParamSpec]:
        """Parameter path -> (shape, dtype), tree order; a tied parameter appears once, at its first path."""
        return self._parameters

    @property
    def buffers(self) -> Mapping[str, BufferSpec]:
        """Buffer path -> (shape, dtype, persistent), tree order."""
        return self._buffers

    @property
    def ties(self) -> Mapping[str, tuple[str, ...]]:
        """Canonical path -> the other paths of the same parameter, buffer or (shared) module."""
        return self._ties

    @property
    def aliases(self) -> Mapping[str, str]:
        """Alias path -> canonical path (the inverse of :attr:`ties`)."""
        if self._aliases is None:
            self._aliases = {alias: canonical for canonical, group in self._ties.items() for alias in group}
        return MappingProxyType(self._aliases)

    @property
    def header(self) -> Mapping[str, Any]:
        """Plan and model facts and library versions; not part of :attr:`digest`."""
        return self._header

    @property
    def digest(self) -> str:
        """sha256 (hex) of the tree part only."""
        return self._digest

    @property
    def schema(self) -> str:
        return SCHEMA

    def numel(self) -> int:
        """Number of parameter elements, tied parameters counted once."""
        total = 0
        for spec in self._parameters.values():
            count = 1
            for size in spec.shape:
                count *= size
            total += count
        return total

    def with_header(self, header: Mapping[str, Any]) -> "TreeSignature":
        """The same tree with another header (e.g. facts known only after signing)."""
        return TreeSignature(self._modules, self._parameters, self._buffers, self._ties, header)

    # -- JSON -------------------------------------------------------------------------------------------
    def to_json(self) -> str:
        """Deterministic JSON text (same tree and header -> same bytes), one entry per line."""
        from .jsonio import dumps

        return dumps(self)

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "TreeSignature":
        """Parse :meth:`to_json` output; SignatureFormatError if it is corrupt, edited or of another schema."""
        from .jsonio import loads

        return loads(text)

    def write(self, path: Union[str, os.PathLike]) -> None:
        """Write :meth:`to_json` to ``path`` (UTF-8)."""
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(self.to_json())

    @classmethod
    def read(cls, path: Union[str, os.PathLike]) -> "TreeSignature":
        """Read a file written by :meth:`write`."""
        from .jsonio import read

        return read(path)

    # -- identity ---------------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TreeSignature):
            return NotImplemented
        return self._digest == other._digest

    def __hash__(self) -> int:
        return hash(self._digest)

    def __repr__(self) -> str:
        return (
            f"TreeSignature(digest={self._digest[:12]}, modules={len(self._modules)}, "
            f"parameters={len(self._parameters)}, buffers={len(self._buffers)}, "
            f"ties={sum(len(group) for group in self._ties.values())})"
        )


def _unwrap(model: Any) -> Any:
    """The torch module behind an nnsight envoy or a torch.compile wrapper."""
    import torch

    if not isinstance(model, torch.nn.Module):
        inner = getattr(model, "_module", None)  # nnsight Envoy / NNsight / LanguageModel
        if isinstance(inner, torch.nn.Module):
            model = inner
        else:
            raise SignatureInputError(
                f"signature() needs a torch.nn.Module (or an nnsight model wrapping one), got "
                f"{type(model).__module__}.{type(model).__qualname__}"
            )
    if type(model).__name__ == "OptimizedModule":  # torch.compile's wrapper registers the model as _orig_mod
        inner = model.__dict__["_modules"].get("_orig_mod")
        if isinstance(inner, torch.nn.Module):
            model = inner
    return model


def signature(model: Any, plan: Any = None, *, header: Mapping[str, Any] | None = None) -> TreeSignature:
    """Sign ``model``'s module tree.

    ``plan`` is any object with ``.to_header() -> dict`` (a load plan) or a dict; when None,
    ``model.hybridload_plan`` is used if present. ``header`` is merged on top (nested dicts key by key).
    """
    model = _unwrap(model)
    result = walk(model)
    apply_declared_ties(result)
    return TreeSignature._adopt(
        result.modules, result.parameters, result.buffers, group_ties(result.aliases), build_header(model, plan, header)
    )


SignatureLike = Union[TreeSignature, str, "os.PathLike[str]", Any]


def as_signature(value: SignatureLike) -> TreeSignature:
    """A TreeSignature as is, a str/PathLike as a signature file, anything else signed as a model."""
    if isinstance(value, TreeSignature):
        return value
    if isinstance(value, (str, os.PathLike)):
        return TreeSignature.read(value)
    return signature(value)
