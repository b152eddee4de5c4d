"""The device-profile window: ``torch.cuda`` queries of remote and user code answer as a profile would.

The profile is :class:`hybridload.plan.device_profile.DeviceProfile` (see there for why). Each patched ``torch.cuda``
function asks which window this thread is in and who asks: outside a window, or when a framework asks (torch
itself, transformers, accelerate, hybridload: :mod:`hybridload.shim.requester`), it calls the original.
"""
from __future__ import annotations

import contextlib
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import DeviceProfileError
from ..hooks.passthrough import passes_through
from ..shim.requester import is_framework, requester_from_stack
from ..plan.device_profile import LABELS, DeviceProfile, choose_profile


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
        f"remote code asked for the device's {LABELS[field_name]}, which the device profile of this build leaves "
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
    from ..hooks.patch import Patch

    return Patch(owner, name, make, lazy=True, key=f"torch.cuda.{name}")


def _torch_cuda() -> Any:
    import torch

    return torch.cuda


def _wrapper_for(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        @passes_through
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


def open_profile() -> DeviceProfile | None:
    """The profile of the window open in this thread, if any (a build inside it keeps it)."""
    window = _active()
    return None if window is None else window.profile


def profile_for_build(config: Any = None) -> DeviceProfile | None:
    """The profile a build routed from a plain transformers call uses: the one of the plan ``config`` came
    from (``hybridload.load_config``), else :func:`~hybridload.plan.device_profile.choose_profile`'s default
    (``$HYBRIDLOAD_DEVICE_PROFILE``, or "as served")."""
    if config is not None:
        from .routing import origin_of

        origin = origin_of(config)
        plan = getattr(origin, "plan", None) if origin is not None else None
        if plan is not None:
            return plan.profile
    return choose_profile(None)
