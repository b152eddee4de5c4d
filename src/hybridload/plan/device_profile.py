"""The device a tree is built for: what ``torch.cuda`` answers there, recorded in the plan.

Real remote code reads the device while it is imported and constructed: Qwen-7B's ``modeling_qwen.py`` sets
``SUPPORT_BF16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()`` at import and, with it, adds a
``FlashSelfAttention`` submodule to every attention layer; other code picks classes from
``get_device_capability()`` in ``__init__``. A CPU client then builds another tree than the GPU server serves.

* :class:`DeviceProfile` -- the answers those queries get on a machine (CUDA or not, device count, compute
  capability, bf16 support, device name and memory), frozen and JSON-serialisable; :meth:`DeviceProfile.current`
  reads this machine truthfully, :meth:`DeviceProfile.served_default` is the documented "as served" device.
* :func:`choose_profile` -- the profile a plan records (argument, ``$HYBRIDLOAD_DEVICE_PROFILE``, or the default).
* :func:`check_device_matches` -- on the server: which answers of the real device differ from a profile.

The window that makes a meta build see a profile is :func:`hybridload.build.device_window.device_profile_window`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import DeviceProfileError

SCHEMA = "hybridload.device-profile/1"


@dataclass(frozen=True)
class DeviceProfile:
    """What ``torch.cuda`` answers on one machine (device 0 stands for every device: servers are homogeneous).

    ``bf16`` is ``is_bf16_supported()`` (emulation included, torch's default), ``bf16_native`` the same with
    ``including_emulation=False``. ``device_name``, ``total_memory`` (bytes) and ``multi_processor_count``
    describe device 0; None leaves an answer unpinned: no difference is reported for it, and code that asks for
    it inside a window gets a DeviceProfileError saying to record the server's profile.
    """

    cuda: bool
    device_count: int = 0
    capability: tuple[int, int] | None = None
    bf16: bool = False
    bf16_native: bool = False
    device_name: str | None = None
    total_memory: int | None = None
    multi_processor_count: int | None = None

    def __post_init__(self) -> None:
        if self.capability is not None:
            object.__setattr__(self, "capability", tuple(self.capability))
        _validate(self)

    # -- the two profiles hybridload knows --------------------------------------------------------------------
    @classmethod
    def current(cls) -> "DeviceProfile":
        """This machine's answers, read from torch (never from an open window: this module is a framework)."""
        import torch

        cuda = torch.cuda
        if not cuda.is_available():
            return cls(cuda=False)
        props = cuda.get_device_properties(0)
        return cls(
            cuda=True,
            device_count=cuda.device_count(),
            capability=(props.major, props.minor),
            bf16=bool(cuda.is_bf16_supported()),
            bf16_native=bool(cuda.is_bf16_supported(including_emulation=False)),
            device_name=props.name,
            total_memory=int(props.total_memory),
            multi_processor_count=int(props.multi_processor_count),
        )

    @classmethod
    def served_default(cls) -> "DeviceProfile":
        """The "as served" device when nothing else is known: one NVIDIA H100 80GB HBM3 (Hopper, sm_90).

        Why Hopper: hybridload's served side is a Hopper-class CUDA server (the project's dispatch and kernel
        runs are on H100s), and every answer remote code branches on -- CUDA present, bf16 supported,
        capability >= 8.0 (flash-attention 2), >= 9.0 (FP8, flash-attention 3) -- is yes there, so the client
        builds every GPU-only submodule the server builds. One device, as ``dispatch(device_map="cuda")``
        uses. Total memory is left unpinned: what a device reports depends on its driver and ECC setting, not
        only on its model, so no single number is "the" answer. A lock written on the server
        (``DeviceProfile.current()``) replaces all of it with the real answers.
        """
        return cls(
            cuda=True,
            device_count=1,
            capability=(9, 0),
            bf16=True,
            bf16_native=True,
            device_name="NVIDIA H100 80GB HBM3",
            total_memory=None,
            multi_processor_count=132,
        )

    def describe(self) -> str:
        """A short name for messages: ``NVIDIA H100 80GB HBM3 (sm_90, bf16)`` or ``no CUDA``."""
        if not self.cuda:
            return "no CUDA"
        major, minor = self.capability or (0, 0)
        count = f"{self.device_count}x " if self.device_count != 1 else ""
        return f"{count}{self.device_name or 'CUDA device'} (sm_{major}{minor}{', bf16' if self.bf16 else ''})"

    # -- comparing -------------------------------------------------------------------------------------------
    def differences(self, other: "DeviceProfile", labels: tuple[str, str] = ("profile", "this machine")) -> list[str]:
        """One line per answer that differs (answers this profile leaves None are not compared)."""
        lines = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine is None or mine == theirs:
                continue
            lines.append(f"{LABELS[f.name]}: {_show(mine)} ({labels[0]}) != {_show(theirs)} ({labels[1]})")
        return lines

    @property
    def key(self) -> str:
        """A stable text naming these answers (what module executions are tagged with)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    # -- serialisation ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema": SCHEMA}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "device profile") -> "DeviceProfile":
        if not isinstance(data, Mapping):
            raise DeviceProfileError(f"{origin}: a device profile is a JSON object, got {type(data).__name__}.")
        if data.get("schema", SCHEMA) != SCHEMA:
            raise DeviceProfileError(
                f"{origin}: device profile schema {data.get('schema')!r} is not {SCHEMA!r}; write it again with "
                "DeviceProfile.current().to_json() on the server."
            )
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"schema"})
        if unknown or "cuda" not in data:
            raise DeviceProfileError(
                f"{origin}: not a device profile (unknown keys: {unknown or 'none'}; 'cuda' "
                f"{'present' if 'cuda' in data else 'missing'}). Known keys: {', '.join(sorted(names))}."
            )
        values = {k: v for k, v in data.items() if k in names}
        if isinstance(values.get("capability"), list):
            values["capability"] = tuple(values["capability"])
        try:
            return cls(**values)
        except DeviceProfileError as exc:
            raise DeviceProfileError(f"{origin}: {exc}") from None

    @classmethod
    def from_json(cls, text: str, *, origin: str = "device profile") -> "DeviceProfile":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DeviceProfileError(f"{origin}: invalid JSON ({exc.msg} at line {exc.lineno}).") from None
        return cls.from_dict(data, origin=origin)

    @classmethod
    def read(cls, path: str | Path) -> "DeviceProfile":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise DeviceProfileError(f"cannot read device profile {path}: {exc}") from None
        return cls.from_json(text, origin=f"device profile {path}")


LABELS = {
    "cuda": "CUDA available",
    "device_count": "device count",
    "capability": "compute capability",
    "bf16": "bf16 supported",
    "bf16_native": "bf16 supported natively",
    "device_name": "device name",
    "total_memory": "total memory",
    "multi_processor_count": "multiprocessor count",
}


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ".".join(map(str, value))
    return repr(value) if isinstance(value, str) else str(value)


def _validate(profile: DeviceProfile) -> None:
    checks: list[tuple[str, Callable[[Any], bool], str]] = [
        ("cuda", lambda v: isinstance(v, bool), "a bool"),
        ("device_count", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0"),
        ("capability", lambda v: v is None or (len(v) == 2 and all(isinstance(x, int) and x >= 0 for x in v)),
         "[major, minor] or null"),
        ("bf16", lambda v: isinstance(v, bool), "a bool"),
        ("bf16_native", lambda v: isinstance(v, bool), "a bool"),
        ("device_name", lambda v: v is None or isinstance(v, str), "a string or null"),
        ("total_memory", lambda v: v is None or (isinstance(v, int) and v > 0), "bytes (int > 0) or null"),
        ("multi_processor_count", lambda v: v is None or (isinstance(v, int) and v > 0), "an int > 0 or null"),
    ]
    for name, ok, what in checks:
        if not ok(getattr(profile, name)):
            raise DeviceProfileError(f"device profile field {name!r} must be {what}, got {getattr(profile, name)!r}.")
    if profile.cuda and (profile.device_count < 1 or profile.capability is None):
        raise DeviceProfileError("a CUDA device profile needs device_count >= 1 and a capability [major, minor].")
    if not profile.cuda and (profile.device_count or profile.bf16 or profile.bf16_native or profile.capability):
        raise DeviceProfileError("a device profile without CUDA has no devices, no capability and no bf16 support.")


#: the labels of answers remote code builds different trees from (the rest only describe the device)
BRANCHING = frozenset(LABELS[name] for name in ("cuda", "capability", "bf16", "bf16_native"))


def check_device_matches(profile: DeviceProfile) -> list[str]:
    """The server side: which answers of this machine's device differ from ``profile`` ([] when none do)."""
    return profile.differences(DeviceProfile.current(), labels=("plan's device profile", "this machine"))


# -- which profile a plan records ------------------------------------------------------------------------------

ENV = "HYBRIDLOAD_DEVICE_PROFILE"
CHOICES = ("served", "current", "none")

#: what ``resolve(device_profile=...)`` accepts: a profile, its dict, one of CHOICES, a profile/lock JSON path
ProfileChoice = Any


def profile_from_lock(document: Mapping[str, Any], *, origin: str = "lock file") -> DeviceProfile | None:
    """The device profile a lock file's plan records (``plan.device_profile``), or None."""
    plan = document.get("plan") if isinstance(document, Mapping) else None
    data = plan.get("device_profile") if isinstance(plan, Mapping) else None
    return None if data is None else DeviceProfile.from_dict(data, origin=f"{origin} device_profile")


def choose_profile(choice: ProfileChoice = None) -> DeviceProfile | None:
    """The profile a plan is built for. ``choice`` (an argument) wins; None means ``$HYBRIDLOAD_DEVICE_PROFILE``,
    and without it the documented "as served" default. ``"none"``: no profile (this machine's own answers)."""
    if isinstance(choice, DeviceProfile):
        return choice
    if isinstance(choice, Mapping):
        return DeviceProfile.from_dict(choice, origin="device_profile argument")
    where = "device_profile argument"
    if choice is None:
        choice, where = os.environ.get(ENV, "").strip() or "served", ENV
    if not isinstance(choice, (str, os.PathLike)):
        raise DeviceProfileError(
            f"{where}: a DeviceProfile, its dict, {', '.join(map(repr, CHOICES))} or a profile/lock JSON file; "
            f"got {type(choice).__name__}."
        )
    choice = os.fspath(choice)
    if choice == "served":
        return DeviceProfile.served_default()
    if choice == "current":
        return DeviceProfile.current()
    if choice == "none":
        return None
    try:
        data = json.loads(Path(choice).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeviceProfileError(
            f"{where}={choice!r} is not {', '.join(map(repr, CHOICES))} or a readable profile/lock JSON file ({exc})."
        ) from None
    if isinstance(data, Mapping) and "plan" in data:
        profile = profile_from_lock(data, origin=choice)
        if profile is None:
            raise DeviceProfileError(f"{where}={choice!r}: this lock file records no device profile.")
        return profile
    return DeviceProfile.from_dict(data, origin=choice)
