"""``LoadPlan``: the immutable, JSON-serializable record of every decision a load depends on.

A plan is resolved once (:func:`hybridload.resolve`) and then obeyed by the config load, the meta build,
the tokenizer load and the real load, on every machine. Two loads of the same plan cannot drift: the
commit, the trust decision, the classes, the code hashes, the dtype and the attention implementation are
all fixed here, not re-decided by each call site.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from ..errors import PlanError

SCHEMA = 3

SOURCE_HUB = "hub"
SOURCE_LOCAL = "local"
NATIVE = "native"
REMOTE = "remote"


@dataclass(frozen=True)
class CodeFile:
    """One remote-code file the plan trusts, pinned by content."""

    repo: str  # Hub repo id or local folder the file comes from
    path: str  # path inside that repo/folder (posix)
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"repo": self.repo, "path": self.path, "sha256": self.sha256}


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(copy.deepcopy(dict(value or {})))


@dataclass(frozen=True)
class LoadPlan:
    """Every decision of one load, resolved once. Build with :func:`hybridload.resolve`; never edit."""

    repo: str  # Hub repo id, or absolute path of a local folder
    source: str  # "hub" | "local"
    revision: str | None  # as requested (branch, tag, sha); None = default branch
    commit: str | None  # the 40-hex commit the revision resolved to (Hub repos)
    fingerprint: str | None  # sha256 over config and code files (local folders)
    revision_note: str  # how the commit was obtained (Hub, offline cache, pinned sha, ...)
    trust_remote_code: bool
    trust_reason: str
    auto_class: str  # e.g. "AutoModelForCausalLM"
    model_type: str | None
    config_class: str  # dotted class path (native) or auto_map reference (remote)
    config_class_source: str  # "native" | "remote"
    model_class: str
    model_class_source: str
    code_repo: str | None  # where remote code comes from (None: no remote code runs)
    code_commit: str | None  # commit of code_repo the code comes from (Hub)
    code_files: tuple[CodeFile, ...]
    dtype: str  # concrete torch dtype name both builds use, e.g. "bfloat16"
    dtype_source: str
    attn_implementation: str | None  # as requested (None: transformers' default)
    attn_implementation_built: str  # what the class builds with on the server, and on meta
    attn_note: str
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)  # extra from_pretrained/from_config kwargs
    versions: Mapping[str, str] = field(default_factory=dict)
    #: auto_map entries this plan does not use (other heads, tokenizers living elsewhere): recorded, not run
    auto_map_unused: Mapping[str, Any] = field(default_factory=dict)
    #: the pre-quantized checkpoint's format (``hybridload.quant.QuantFormat.to_dict()``), None if unquantized
    quantization: Mapping[str, Any] | None = None
    #: the device the tree is built for (``DeviceProfile.to_dict()``): what remote code's ``torch.cuda`` queries
    #: answer during a meta build; None: the building machine's own answers
    device_profile: Mapping[str, Any] | None = None
    schema: int = SCHEMA
    #: how this process confirmed ``trust_remote_code=True`` ("explicit argument"); never serialised: a plan
    #: read from a file (a lock, a request) carries the decision as a record, not as a grant
    trust_confirmation: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "code_files", tuple(self.code_files))
        object.__setattr__(self, "load_kwargs", _frozen_mapping(self.load_kwargs))
        object.__setattr__(self, "versions", _frozen_mapping(self.versions))
        object.__setattr__(self, "auto_map_unused", _frozen_mapping(self.auto_map_unused))
        if self.quantization is not None:
            object.__setattr__(self, "quantization", _frozen_mapping(self.quantization))
        if self.device_profile is not None:
            object.__setattr__(self, "device_profile", _frozen_mapping(self.device_profile))

    def __hash__(self) -> int:
        return hash(self.to_json())

    # -- derived facts ---------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.source == SOURCE_LOCAL

    @property
    def uses_remote_code(self) -> bool:
        return REMOTE in (self.model_class_source, self.config_class_source)

    @property
    def profile(self) -> Any:
        """The :class:`~hybridload.plan.device_profile.DeviceProfile` the tree is built for (None: none)."""
        from .device_profile import DeviceProfile

        return None if self.device_profile is None else DeviceProfile.from_dict(self.device_profile, origin="plan")

    @property
    def load_revision(self) -> str | None:
        """The ``revision=`` every transformers call gets: the commit (Hub) or nothing (local folder)."""
        return None if self.is_local else self.commit

    @property
    def load_code_revision(self) -> str | None:
        """The ``code_revision=`` transformers gets: the code commit, never a moving branch (None when the
        code is the local folder itself, which has no revisions)."""
        if not self.uses_remote_code or self.code_repo is None:
            return None
        if self.is_local and self.code_repo == self.repo:
            return None
        return self.code_commit

    # -- serialization ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in _NOT_SERIALISED:
                continue
            value = getattr(self, f.name)
            if f.name == "code_files":
                value = [c.to_dict() for c in value]
            elif isinstance(value, Mapping):
                value = copy.deepcopy(dict(value))
            data[f.name] = value
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "plan") -> "LoadPlan":
        if not isinstance(data, Mapping):
            raise PlanError(f"{origin}: a load plan is a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if schema != SCHEMA:
            raise PlanError(
                f"{origin}: plan schema {schema!r} is not the one this hybridload writes ({SCHEMA}); "
                "re-resolve the plan with this version (hybridload.resolve(..., lock=path, update_lock=True), or "
                "`hybridload lock MODEL -o FILE`)"
            )
        names = {f.name for f in dataclasses.fields(cls)} - _NOT_SERIALISED
        unknown = sorted(set(data) - names)
        missing = sorted(n for n in names if n not in data)
        if unknown or missing:
            raise PlanError(
                f"{origin}: not a hybridload load plan (unknown keys: {unknown or 'none'}; missing keys: "
                f"{missing or 'none'}); re-resolve it with hybridload.resolve(...)"
            )
        values = dict(data)
        try:
            values["code_files"] = tuple(CodeFile(**c) for c in data["code_files"])
        except TypeError as exc:
            raise PlanError(f"{origin}: malformed code_files entry ({exc}); re-resolve the plan") from None
        plan = cls(**values)
        _check_types(plan, origin)
        return plan

    @classmethod
    def from_json(cls, text: str, *, origin: str = "plan") -> "LoadPlan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"{origin}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        return cls.from_dict(data, origin=origin)

    # -- views -----------------------------------------------------------------------------------------
    def decisions(self) -> dict[str, Any]:
        """The facts a lock file pins: the commit, not how it was asked for (``revision``); versions and
        free-text notes are excluded too, they differ across machines."""
        skip = {"revision", "versions", "revision_note", "trust_reason", "attn_note", "dtype_source", "auto_map_unused"}
        return {k: v for k, v in self.to_dict().items() if k not in skip}

    def to_header(self) -> dict[str, Any]:
        """The facts a tree-signature header carries, so two signatures say which load produced them."""
        return {
            "repo": self.repo,
            "source": self.source,
            "revision": self.revision,
            "commit": self.commit,
            "fingerprint": self.fingerprint,
            "auto_class": self.auto_class,
            "model_class": self.model_class,
            "model_class_source": self.model_class_source,
            "config_class": self.config_class,
            "code_files": {f"{c.repo}:{c.path}": c.sha256 for c in self.code_files},
            "trust_remote_code": self.trust_remote_code,
            "trust_reason": self.trust_reason,
            "dtype": self.dtype,
            "quantization": None if self.quantization is None else dict(self.quantization),
            "device_profile": None if self.device_profile is None else dict(self.device_profile),
            "attn_implementation": {
                "requested": self.attn_implementation,
                "built": self.attn_implementation_built,
            },
            "versions": dict(self.versions),
        }

    def describe(self) -> str:
        where = f"{self.repo}@{self.commit}" if self.commit else f"{self.repo} (fingerprint {self.fingerprint})"
        return (
            f"{where}: {self.model_class_source} {self.model_class} via {self.auto_class}, "
            f"trust_remote_code={self.trust_remote_code} ({self.trust_reason}), dtype={self.dtype}, "
            f"attention={self.attn_implementation_built}"
            + (
                f" (requested {self.attn_implementation})"
                if self.attn_implementation not in (None, self.attn_implementation_built)
                else ""
            )
        )


_NOT_SERIALISED = frozenset({"trust_confirmation"})

_TYPES: dict[str, tuple[type, ...]] = {
    "repo": (str,),
    "source": (str,),
    "revision": (str, type(None)),
    "commit": (str, type(None)),
    "fingerprint": (str, type(None)),
    "revision_note": (str,),
    "trust_remote_code": (bool,),
    "trust_reason": (str,),
    "auto_class": (str,),
    "model_type": (str, type(None)),
    "config_class": (str,),
    "config_class_source": (str,),
    "model_class": (str,),
    "model_class_source": (str,),
    "code_repo": (str, type(None)),
    "code_commit": (str, type(None)),
    "dtype": (str,),
    "dtype_source": (str,),
    "attn_implementation": (str, type(None)),
    "attn_implementation_built": (str,),
    "attn_note": (str,),
    "quantization": (Mapping, type(None)),
    "device_profile": (Mapping, type(None)),
}


def _check_types(plan: LoadPlan, origin: str) -> None:
    for name, types in _TYPES.items():
        value = getattr(plan, name)
        if not isinstance(value, types):
            raise PlanError(f"{origin}: field {name!r} has type {type(value).__name__}; re-resolve the plan")
    if plan.source not in (SOURCE_HUB, SOURCE_LOCAL):
        raise PlanError(f"{origin}: source must be 'hub' or 'local', got {plan.source!r}")
    if plan.source == SOURCE_HUB and not plan.commit:
        raise PlanError(f"{origin}: a Hub plan must name a commit; re-resolve the plan")
    if plan.source == SOURCE_LOCAL and not plan.fingerprint:
        raise PlanError(f"{origin}: a local-folder plan must carry a fingerprint; re-resolve the plan")
    if plan.device_profile is not None:
        from ..errors import DeviceProfileError

        try:
            plan.profile
        except DeviceProfileError as exc:
            raise PlanError(f"{origin}: {exc} Re-resolve the plan.") from None
