"""The device a tree is built for, and a window in which remote code sees that device on a GPU-less client.

Real remote code reads the device while it is imported and constructed: Qwen-7B's ``modeling_qwen.py`` sets
``SUPPORT_BF16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()`` at import and, with it, adds a
``FlashSelfAttention`` submodule to every attention layer; other code picks classes from
``get_device_capability()`` in ``__init__``. A CPU client then builds another tree than the GPU server serves.

* :class:`DeviceProfile` -- the answers those queries get on a machine (CUDA or not, device count, compute
  capability, bf16 support, device name and memory), frozen and JSON-serialisable; :meth:`DeviceProfile.current`
  reads this machine truthfully, :meth:`DeviceProfile.served_default` is the documented "as served" device.
* :func:`device_profile_window` -- while open, ``torch.cuda`` queries made by remote or user code in this thread
  answer as the profile would. torch itself, transformers, accelerate, hybridload (the frameworks of
  :mod:`hybridload.shim.requester`) and every other thread keep the truth. Remote modules are re-executed
  under the profile and evicted again on exit, so no module-level answer outlives the window.
* :func:`check_device_matches` -- on the server: which answers of the real device differ from a profile.
"""
from __future__ import annotations

import contextlib
import json
import sys
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import DeviceProfileError
from ..shim.requester import is_framework, requester_from_stack

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

    # -- comparing -------------------------------------------------------------------------------------------
    def differences(self, other: "DeviceProfile", labels: tuple[str, str] = ("profile", "this machine")) -> list[str]:
        """One line per answer that differs (answers this profile leaves None are not compared)."""
        lines = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine is None or mine == theirs:
                continue
            lines.append(f"{_LABELS[f.name]}: {_show(mine)} ({labels[0]}) != {_show(theirs)} ({labels[1]})")
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


_LABELS = {
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


def check_device_matches(profile: DeviceProfile) -> list[str]:
    """The server side: which answers of this machine's device differ from ``profile`` ([] when none do)."""
    return profile.differences(DeviceProfile.current(), labels=("plan's device profile", "this machine"))


# -- the window ------------------------------------------------------------------------------------------------


class ProfileDeviceProperties:
    """What ``torch.cuda.get_device_properties`` returns inside a window: the attributes code reads, from the
    profile; one the profile leaves unpinned raises DeviceProfileError instead of inventing a value."""

    is_integrated = 0
    is_multi_gpu_board = 0
    warp_size = 32

    def __init__(self, profile: DeviceProfile) -> None:
        assert profile.capability is not None
        self.major, self.minor = profile.capability
        self._profile = profile

    def _pinned(self, field_name: str) -> Any:
        value = getattr(self._profile, field_name)
        if value is None:
            raise DeviceProfileError(_unpinned(field_name))
        return value

    @property
    def name(self) -> str:
        return self._pinned("device_name")

    @property
    def total_memory(self) -> int:
        return self._pinned("total_memory")

    @property
    def multi_processor_count(self) -> int:
        return self._pinned("multi_processor_count")

    def __repr__(self) -> str:
        p = self._profile
        memory = f"{p.total_memory // 2**20}MB" if p.total_memory else "unpinned"
        return (
            f"_CudaDeviceProperties(name={p.device_name!r}, major={self.major}, minor={self.minor}, "
            f"total_memory={memory}, multi_processor_count={p.multi_processor_count}) [device profile]"
        )


def _unpinned(field_name: str) -> str:
    return (
        f"remote code asked for the device's {_LABELS[field_name]}, which the device profile of this build leaves "
        "unpinned; record the server's profile (DeviceProfile.current() on the server, written by hybridload lock) "
        "and build with it."
    )


class _Answers:
    """The profile's answer to each query, with torch's argument handling and errors."""

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile

    def _index(self, device: Any) -> int:
        if not self.profile.cuda:
            raise RuntimeError("No CUDA GPUs are available")
        if device is None:
            index = 0
        elif isinstance(device, int) and not isinstance(device, bool):
            index = device
        else:
            import torch

            parsed = torch.device(device) if isinstance(device, str) else device
            if not isinstance(parsed, torch.device) or parsed.type != "cuda":
                raise ValueError(f"Expected a cuda device, but got: {device}")
            index = 0 if parsed.index is None else parsed.index
        if not 0 <= index < self.profile.device_count:
            raise AssertionError("Invalid device id")
        return index

    def is_available(self) -> bool:
        return self.profile.cuda

    def device_count(self) -> int:
        return self.profile.device_count

    def current_device(self) -> int:
        return self._index(None)

    def is_bf16_supported(self, including_emulation: bool = True) -> bool:
        return self.profile.bf16 if including_emulation else self.profile.bf16_native

    def is_tf32_supported(self) -> bool:
        return self.profile.cuda and self.profile.capability is not None and self.profile.capability >= (8, 0)

    def get_device_capability(self, device: Any = None) -> tuple[int, int]:
        self._index(device)
        assert self.profile.capability is not None
        return self.profile.capability

    def get_device_name(self, device: Any = None) -> str:
        self._index(device)
        if self.profile.device_name is None:
            raise DeviceProfileError(_unpinned("device_name"))
        return self.profile.device_name

    def get_device_properties(self, device: Any = None) -> ProfileDeviceProperties:
        self._index(device)
        return ProfileDeviceProperties(self.profile)


#: the ``torch.cuda`` functions a window answers (torch versions without one simply keep theirs)
QUERIES = (
    "is_available",
    "device_count",
    "current_device",
    "is_bf16_supported",
    "is_tf32_supported",
    "get_device_capability",
    "get_device_name",
    "get_device_properties",
)


@dataclass
class ProfileReport:
    """What one window did: who asked what (requester module, query, answer) and which modules it evicted."""

    profile: DeviceProfile
    lies_possible: bool
    queries: dict[tuple[str, str], Any] = field(default_factory=dict)
    evicted_on_entry: list[str] = field(default_factory=list)
    evicted_on_exit: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _record(self, requester: str, query: str, answer: Any) -> None:
        with self._lock:
            self.queries.setdefault((requester, query), answer)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.to_dict(),
            "lies_possible": self.lies_possible,
            "queries": [{"requester": r, "query": q, "answer": repr(a)} for (r, q), a in sorted(self.queries.items())],
            "evicted_on_entry": list(self.evicted_on_entry),
            "evicted_on_exit": list(self.evicted_on_exit),
        }


class CudaQueryPatches:
    """The ``torch.cuda`` attribute patches of all windows, held while any thread has one open.

    Each patched function asks :func:`_active` for this thread's window; outside one, or when a framework
    asks, it calls the original. The patches themselves are the project's reference-counted attribute
    overrides (``_override``): porting to another patch primitive changes that one line.
    """

    def __init__(self) -> None:
        self._overrides = [_override(_torch_cuda, name, _wrapper_for(name)) for name in QUERIES]

    def acquire(self) -> None:
        acquired = []
        try:
            for override in self._overrides:
                override.acquire()
                acquired.append(override)
        except BaseException:
            for override in reversed(acquired):
                override.release()
            raise

    def release(self) -> None:
        for override in reversed(self._overrides):
            override.release()


def _override(owner: Callable[[], Any], name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Any:
    from ..plan.scoped import ScopedOverride

    return ScopedOverride(owner, name, make)


def _torch_cuda() -> Any:
    import torch

    return torch.cuda


def _wrapper_for(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def query(*args: Any, **kwargs: Any) -> Any:
            window = _active()
            if window is None:
                return original(*args, **kwargs)
            requester = requester_from_stack(sys._getframe(1))
            if is_framework(requester):
                return original(*args, **kwargs)
            answer = getattr(window.answers, name)(*args, **kwargs)
            window.report._record(requester or "?", name, answer)
            return answer

        query.__name__ = getattr(original, "__name__", name)
        query.__qualname__ = getattr(original, "__qualname__", name)
        query.__doc__ = getattr(original, "__doc__", None)
        query.__wrapped__ = original  # type: ignore[attr-defined]
        return query

    return make


class _Window:
    def __init__(self, profile: DeviceProfile, report: ProfileReport) -> None:
        self.profile = profile
        self.answers = _Answers(profile)
        self.report = report


_local = threading.local()
_lock = threading.Lock()
_patches: CudaQueryPatches | None = None
_open: dict[str, int] = {}  # profile key -> windows open (all threads)


def _active() -> _Window | None:
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


@contextlib.contextmanager
def device_profile_window(profile: DeviceProfile) -> Iterator[ProfileReport]:
    """Within this block (this thread only), remote and user code see ``profile``'s ``torch.cuda`` answers.

    Nested windows in a thread must use the same profile; windows of different profiles may not be open in
    two threads at once (module executions are process-wide), which raises DeviceProfileError.
    """
    global _patches
    if not isinstance(profile, DeviceProfile):
        raise DeviceProfileError(f"device_profile_window needs a DeviceProfile, got {type(profile).__name__}.")
    outer = _active()
    if outer is not None:
        if outer.profile != profile:
            raise DeviceProfileError(
                f"a device-profile window for {outer.profile.device_name or outer.profile} is already open in this "
                "thread; a nested window must use the same profile."
            )
        _local.stack.append(outer)
        try:
            yield outer.report
        finally:
            _local.stack.pop()
        return

    from .profile_modules import ModuleTags

    with _lock:
        others = [key for key, count in _open.items() if count and key != profile.key]
        if others:
            raise DeviceProfileError(
                "another thread is building under a different device profile; builds under different profiles "
                "cannot overlap (remote modules are process-wide). Build one after the other."
            )
        if not any(_open.values()):
            _patches = _patches or CudaQueryPatches()
            _patches.acquire()
        _open[profile.key] = _open.get(profile.key, 0) + 1
        try:
            lies_possible = profile != DeviceProfile.current()
            report = ProfileReport(profile, lies_possible)
            tags = ModuleTags(profile.key) if lies_possible else None
            if tags is not None:
                report.evicted_on_entry = tags.evict_stale()
        except BaseException:
            _leave(profile)
            raise
    _local.stack = [_Window(profile, report)]
    try:
        yield report
    finally:
        _local.stack = []
        with _lock:
            try:
                if tags is not None:
                    report.evicted_on_exit = tags.evict_executed()
            finally:
                _leave(profile)


def _leave(profile: DeviceProfile) -> None:
    """One window fewer (call with ``_lock`` held); the last one out releases the patches."""
    _open[profile.key] -= 1
    if not _open[profile.key]:
        del _open[profile.key]
    if not _open and _patches is not None:
        _patches.release()


# -- which profile a build uses ------------------------------------------------------------------------------------

ENV = "HYBRIDLOAD_DEVICE_PROFILE"


def profile_from_lock(document: Mapping[str, Any], *, origin: str = "lock file") -> DeviceProfile | None:
    """The device profile a lock file records (``"device_profile"``, written on the server), or None."""
    data = document.get("device_profile") if isinstance(document, Mapping) else None
    return None if data is None else DeviceProfile.from_dict(data, origin=f"{origin} device_profile")


def resolve_profile(config: Any = None) -> DeviceProfile | None:
    """The profile a meta build runs under: the plan's (a ``device_profile`` it carries), else
    ``$HYBRIDLOAD_DEVICE_PROFILE`` (``served``, ``current``, ``none``, or a profile/lock JSON file), else the
    documented "as served" default. None: no window (this machine's own answers)."""
    plan = None
    if config is not None:
        from ..plan.routing import origin_of

        origin = origin_of(config)
        plan = getattr(origin, "plan", None) if origin is not None else None
    recorded = getattr(plan, "device_profile", None)
    if isinstance(recorded, DeviceProfile):
        return recorded
    if isinstance(recorded, Mapping):
        return DeviceProfile.from_dict(recorded, origin="the plan's device_profile")
    import os

    choice = os.environ.get(ENV, "").strip()
    if choice in ("", "served"):
        return DeviceProfile.served_default()
    if choice == "current":
        return DeviceProfile.current()
    if choice == "none":
        return None
    try:
        data = json.loads(Path(choice).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeviceProfileError(
            f"{ENV}={choice!r} is not 'served', 'current', 'none' or a readable profile/lock JSON file ({exc})."
        ) from None
    if isinstance(data, Mapping) and "device_profile" in data:
        profile = profile_from_lock(data, origin=choice)
        if profile is not None:
            return profile
    return DeviceProfile.from_dict(data, origin=choice)


def build_layer(config: Any, kwargs: dict) -> contextlib.AbstractContextManager[Any]:
    """``hybridload.build`` layer factory: the device-profile window of this build (see :func:`resolve_profile`)."""
    profile = resolve_profile(config)
    return contextlib.nullcontext() if profile is None else device_profile_window(profile)
