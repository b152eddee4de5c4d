"""The registry of compatibility entries: what transformers 4.x offered remote code, and what we serve on 5.x.

Every entry documents itself (which 4.x API, which release removed or moved it, what hybridload serves) so
``docs/compat.md``, plan records and signature headers can name it by ``id``. Users add entries with
:func:`register_entry`; nothing here imports torch or transformers (providers are called lazily, inside a
window, the first time remote code asks for the name).
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..errors import CompatEntryError

#: serve an importable name that moved to another module (re-exported from its new home)
MOVED = "moved"
#: serve a removed capability probe answering as 4.x answered it on this machine
PROBE = "probe"
#: serve a removed name whose 5.x equivalent behaves the same (e.g. an alias to a renamed class)
ALIAS = "alias"
#: serve a stand-in for a removed class/function that raises RemovedTransformersAPIError when used
REMOVED = "removed"
#: answer a config attribute that 4.x ``PretrainedConfig.__init__`` set by default, with its 4.x default
CONFIG_DEFAULT = "config-default"
#: a built-in behaviour of the layer (documented and recorded like an entry, not user-provided)
BEHAVIOR = "behavior"

NAME_KINDS = frozenset({MOVED, PROBE, ALIAS, REMOVED})
KINDS = NAME_KINDS | {CONFIG_DEFAULT, BEHAVIOR}


@dataclass(frozen=True)
class CompatEntry:
    """One thing 4.x remote code relied on that 5.x no longer provides, and what we serve instead.

    ``id`` is stable and appears in plan records and signature headers. For name entries ``modules`` lists
    every module 4.x code imported the name from, and ``provide()`` builds the served object. For config
    defaults ``name`` is the attribute and ``default`` its 4.x value.
    """

    id: str
    kind: str
    what: str
    removed_in: str
    served: str
    name: str = ""
    modules: tuple[str, ...] = ()
    provide: Callable[[], Any] | None = field(default=None, compare=False, repr=False)
    default: Any = None
    source: str = "hybridload"

    def default_value(self) -> Any:
        """A fresh copy of the 4.x default (mutable defaults such as ``{}`` are never shared)."""
        return copy.deepcopy(self.default)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "what": self.what,
            "removed_in": self.removed_in,
            "served": self.served,
            "source": self.source,
        }
        if self.modules:
            out["modules"] = list(self.modules)
        if self.kind == CONFIG_DEFAULT:
            out["default"] = repr(self.default)
        return out


_lock = threading.Lock()
_user: dict[str, CompatEntry] = {}
_defaults: dict[str, CompatEntry] | None = None
_version = 0  # bumped on every change so cached indices are rebuilt


def _default_entries() -> dict[str, CompatEntry]:
    global _defaults
    if _defaults is None:
        from .defaults import DEFAULT_ENTRIES

        _defaults = {entry.id: entry for entry in DEFAULT_ENTRIES}
    return _defaults


def _validate(entry: CompatEntry) -> None:
    if not isinstance(entry, CompatEntry):
        raise CompatEntryError(f"register_entry takes a CompatEntry, got {type(entry).__name__}")
    if not entry.id or not isinstance(entry.id, str) or any(c.isspace() for c in entry.id):
        raise CompatEntryError(f"a compat entry needs a non-empty id without spaces, got {entry.id!r}")
    if entry.kind not in KINDS - {BEHAVIOR}:
        raise CompatEntryError(
            f"compat entry {entry.id!r}: kind must be one of {sorted(KINDS - {BEHAVIOR})}, got {entry.kind!r}"
        )
    if not entry.name.isidentifier():
        raise CompatEntryError(f"compat entry {entry.id!r}: name must be an identifier, got {entry.name!r}")
    if entry.kind in NAME_KINDS:
        if not entry.modules or not all(isinstance(m, str) and m.split(".")[0] == "transformers" for m in entry.modules):
            raise CompatEntryError(
                f"compat entry {entry.id!r}: modules must list the transformers modules 4.x code imported "
                f"{entry.name!r} from (e.g. ('transformers.utils.import_utils',)), got {entry.modules!r}"
            )
        if not callable(entry.provide):
            raise CompatEntryError(f"compat entry {entry.id!r}: a {entry.kind} entry needs provide=callable")
    for label in ("what", "removed_in", "served"):
        if not getattr(entry, label):
            raise CompatEntryError(f"compat entry {entry.id!r}: {label} must say it (used in docs and reports)")


def register_entry(entry: CompatEntry, *, replace: bool = False) -> CompatEntry:
    """Add a user entry (served in every later window). ``replace=True`` overrides an entry with that id."""
    global _version
    _validate(entry)
    with _lock:
        taken = entry.id in _user or entry.id in _default_entries()
        if taken and not replace:
            raise CompatEntryError(f"a compat entry with id {entry.id!r} exists; pass replace=True to override it")
        _user[entry.id] = entry
        _version += 1
    return entry


def unregister_entry(entry_id: str) -> None:
    """Remove a user entry (built-in entries cannot be removed; override them with ``replace=True``)."""
    global _version
    with _lock:
        if _user.pop(entry_id, None) is not None:
            _version += 1


def entries() -> list[CompatEntry]:
    """Every entry in force: built-ins (overridden by user entries of the same id), then user entries."""
    with _lock:
        merged = dict(_default_entries())
        merged.update(_user)
    return list(merged.values())


def get_entry(entry_id: str) -> CompatEntry | None:
    with _lock:
        return _user.get(entry_id) or _default_entries().get(entry_id)


_index_cache: tuple[int, dict[str, dict[str, CompatEntry]], dict[str, CompatEntry]] | None = None


def _indices() -> tuple[dict[str, dict[str, CompatEntry]], dict[str, CompatEntry]]:
    global _index_cache
    with _lock:
        cached = _index_cache
        version = _version
    if cached is not None and cached[0] == version:
        return cached[1], cached[2]
    by_module: dict[str, dict[str, CompatEntry]] = {}
    config: dict[str, CompatEntry] = {}
    for entry in entries():
        if entry.kind in NAME_KINDS:
            for module in entry.modules:
                by_module.setdefault(module, {})[entry.name] = entry
        elif entry.kind == CONFIG_DEFAULT:
            config[entry.name] = entry
    with _lock:
        _index_cache = (version, by_module, config)
    return by_module, config


def names_by_module() -> dict[str, dict[str, CompatEntry]]:
    """``{module: {name: entry}}`` for every name entry."""
    return _indices()[0]


def config_defaults() -> dict[str, CompatEntry]:
    """``{attribute: entry}`` for every config-default entry."""
    return _indices()[1]


# ---------------------------------------------------------------------------------------------------------
# Constructors for the common kinds (used by defaults.py; handy for users extending the registry)
# ---------------------------------------------------------------------------------------------------------


def _import_attr(target: str) -> Any:
    import importlib

    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _named_entry(
    kind: str, name: str, modules: Iterable[str], removed_in: str, served: str, provide: Callable[[], Any], entry_id: str | None
) -> CompatEntry:
    """An entry for ``name`` served in ``modules`` (the first module names it: id and ``what``)."""
    modules = tuple(modules)
    return CompatEntry(
        id=entry_id or f"{modules[0]}.{name}",
        kind=kind,
        name=name,
        modules=modules,
        what=f"{modules[0]}.{name}",
        removed_in=removed_in,
        served=served,
        provide=provide,
    )


def moved(name: str, modules: Iterable[str], new_home: str, removed_in: str, *, entry_id: str | None = None) -> CompatEntry:
    """``name`` moved to ``new_home`` (``"package.module:attr"``); re-exported from its new home."""
    served = f"re-exported from {new_home.replace(':', '.')}"
    return _named_entry(MOVED, name, modules, removed_in, served, lambda: _import_attr(new_home), entry_id)


def alias(
    name: str, modules: Iterable[str], build: Callable[[], Any], served: str, removed_in: str, *, entry_id: str | None = None
) -> CompatEntry:
    """``name`` was removed but a 5.x object behaves the same; ``build()`` returns it."""
    return _named_entry(ALIAS, name, modules, removed_in, served, build, entry_id)


def probe(
    name: str, modules: Iterable[str], answer: Callable[[], Any], served: str, removed_in: str, *, entry_id: str | None = None
) -> CompatEntry:
    """A removed ``is_*_available``-style probe; the served function calls ``answer()`` (4.x logic)."""
    modules = tuple(modules)

    def build() -> Callable[[], Any]:
        def probe_fn() -> Any:
            return answer()

        probe_fn.__name__ = probe_fn.__qualname__ = name
        probe_fn.__module__ = modules[0]
        probe_fn.__doc__ = f"hybridload compat: {served} (removed from transformers in {removed_in})."
        return probe_fn

    return _named_entry(PROBE, name, modules, removed_in, served, build, entry_id)


def removed(name: str, modules: Iterable[str], removed_in: str, why: str, *, entry_id: str | None = None) -> CompatEntry:
    """A removed run-time class/function; served as a stand-in that raises RemovedTransformersAPIError when used."""
    entry_ref: list[CompatEntry] = []

    def build() -> Any:
        from .removed_api import removed_api_stand_in

        return removed_api_stand_in(entry_ref[0], why)

    served = f"stand-in raising RemovedTransformersAPIError when used ({why})"
    entry = _named_entry(REMOVED, name, modules, removed_in, served, build, entry_id)
    entry_ref.append(entry)
    return entry


def config_default(name: str, default: Any, removed_in: str = "5.0.0", *, note: str = "") -> CompatEntry:
    """A config attribute 4.x ``PretrainedConfig.__init__`` set to ``default`` for every config."""
    return CompatEntry(
        id=f"config.{name}",
        kind=CONFIG_DEFAULT,
        name=name,
        what=f"PretrainedConfig.{name} (set by 4.x PretrainedConfig.__init__ for every config)",
        removed_in=removed_in,
        served=f"{default!r} (the 4.x default) on remote config classes that do not set it" + (f"; {note}" if note else ""),
        default=default,
    )
