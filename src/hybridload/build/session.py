"""``build_session``: the one composition of build layers every entry point enters, once per build.

A *build* is one config load, one remote-class import, one meta build or one real load. Which layers it needs
is a function of its purpose alone, never of what happened to be installed:

============  ===========================================================================================
purpose       layers, outermost first
============  ===========================================================================================
``config``    compat (4.x config code), routing
``import``    device profile, kernel shim, compat
``meta``      device profile, kernel shim, compat, attention rule, routing, meta device, fast init (no weight
              initialisation of meta tensors, collector paused), captured model messages
``real``      compat, routing (the remote class is imported first, under a short kernel-shim window
              that serves hybridload's Triton kernels, when the fallback policy is ``triton``)
``stream``    ``meta`` then weights streamed in (a low-memory real load): the meta layers, on the server, without
              the device profile (the server's ``torch.cuda`` tells the truth; ``dispatch`` checks it matches)
============  ===========================================================================================

The device profile layer makes remote code's ``torch.cuda`` queries answer as the plan's device would
(:mod:`.device_window`); a spec without a profile enters it as a no-op, so the layer count stays one per build.

The session is current for its thread (a ``ContextVar``): a hybridload call or an integration wrapper
reached *inside* a build (``from_config`` called by nnsight's own meta build, ``AutoConfig.from_pretrained``
called by transformers inside ``from_config``) joins it instead of entering the layers again. Each layer keeps
a process-wide count of its entries, so tests can prove "entered exactly once per build".
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator

from ..compat.record import CompatRecord
from ..shim.kernel_shim import ShimReport
from .routing import Origin

PURPOSES: dict[str, tuple[str, ...]] = {
    "config": ("compat", "routing"),
    "import": ("device_profile", "shim", "compat"),
    "meta": ("device_profile", "shim", "compat", "attention", "routing", "meta_device", "fast_init", "messages"),
    "real": ("compat", "routing"),
    "stream": ("shim", "compat", "attention", "routing", "meta_device", "fast_init", "messages"),
}


@dataclass(frozen=True)
class BuildSpec:
    """What one build needs to know to enter its layers (plain values: no plan objects required)."""

    purpose: str
    origin: Origin | None = None  # where config and code come from, and the trust decision (routing)
    config: Any = None  # a config built before the session (compat adapts its remote classes)
    cpu_scalars: bool = False  # compat: answer value reads of small meta tensors from CPU shadows
    kernel_fallback: str = "none"  # real/stream: "triton" binds hybridload's kernels for missing packages
    device_profile: Any = None  # import/meta: the DeviceProfile remote code's torch.cuda queries see (None: truth)
    label: str = ""  # what is being built, for messages

    def __post_init__(self) -> None:
        if self.purpose not in PURPOSES:
            raise ValueError(f"unknown build purpose {self.purpose!r}; one of {', '.join(PURPOSES)}")


@dataclass
class BuildRecord:
    """What one build did: the layers it entered, what the shim served, which compat entries fired, and
    where remote code asked for CUDA during a meta build."""

    spec: BuildSpec
    layers: list[str] = field(default_factory=list)
    shim: ShimReport | None = None
    compat: CompatRecord | None = None
    device: Any = None  # the device-profile window's ProfileReport (which torch.cuda queries remote code made)
    cuda_redirects: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # the model code's warnings, captured during a meta build
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def note_redirect(self, line: str) -> None:
        with self._lock:
            if line not in self.cuda_redirects:
                self.cuda_redirects.append(line)

    def note_message(self, line: str) -> None:
        with self._lock:
            if line not in self.messages:
                self.messages.append(line)

    def __getattr__(self, name: str) -> Any:  # reads like the shim report: record.stand_ins, record.packages
        if name.startswith("_") or name in ("spec", "layers", "shim", "compat", "device"):
            raise AttributeError(name)
        shim = self.__dict__.get("shim")
        if shim is None:
            raise AttributeError(f"{name!r}: this build entered no kernel shim")
        return getattr(shim, name)

    @property
    def compat_entries(self) -> list[str]:
        return self.compat.header() if self.compat is not None else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "purpose": self.spec.purpose,
            "layers": list(self.layers),
            "stood_in": self.shim.to_dict() if self.shim is not None else None,
            "compat": self.compat.to_dict() if self.compat is not None else None,
            "device_profile": self.device.to_dict() if self.device is not None else None,
            "cuda_redirects": list(self.cuda_redirects),
            "messages": list(self.messages),
            "notes": list(self.notes),
        }


class Layer:
    """One build layer: a name, a context-manager factory, and a process-wide entry count."""

    def __init__(self, name: str, enter: Callable[[BuildSpec, BuildRecord], ContextManager[Any]]) -> None:
        self.name = name
        self._enter = enter
        self._lock = threading.Lock()
        self.entries = 0

    def enter(self, stack: contextlib.ExitStack, spec: BuildSpec, record: BuildRecord) -> Any:
        value = stack.enter_context(self._enter(spec, record))
        with self._lock:
            self.entries += 1
        record.layers.append(self.name)
        return value


def _device_profile(spec: BuildSpec, record: BuildRecord) -> ContextManager[Any]:
    from .device_window import device_profile_window, open_profile

    if spec.device_profile is None or record.spec.purpose in ("real", "stream"):
        return contextlib.nullcontext()  # nested in a served load: the server's own answers are the truth
    if open_profile() is not None:
        return contextlib.nullcontext()  # the caller's own device_profile_window decides
    return device_profile_window(spec.device_profile)


def _shim(spec: BuildSpec, record: BuildRecord) -> ContextManager[Any]:
    from ..shim.kernel_shim import kernel_shim

    # served side (real, stream): hybridload's Triton kernels where the policy says so; a real load keeps the
    # remote modules it imported (they bound those kernels on purpose)
    return kernel_shim(triton=spec.kernel_fallback == "triton", evict=spec.purpose != "real")


def _compat(spec: BuildSpec, record: BuildRecord) -> ContextManager[Any]:
    from ..compat.compat_window import compat_window

    return compat_window(spec.config, cpu_scalars=spec.cpu_scalars)


def _attention(spec: BuildSpec, record: BuildRecord) -> ContextManager[Any]:
    from .attention import meta_attention

    return meta_attention()


def _routing(spec: BuildSpec, record: BuildRecord) -> ContextManager[Any]:
    from .routing import routed

    return routed(spec.origin)


def _meta_device(spec: BuildSpec, record: BuildRecord) -> ContextManager[Any]:
    from .meta_device import MetaDeviceMode, empty_weights_only

    return MetaDeviceMode(record.note_redirect, default_to_meta=not empty_weights_only())


def _fast_init(spec: BuildSpec, record: BuildRecord) -> ContextManager[Any]:
    from .fast_build import fast_build

    return fast_build()


def _messages(spec: BuildSpec, record: BuildRecord) -> ContextManager[Any]:
    from .messages import captured_messages

    return captured_messages(record.note_message)


LAYERS: dict[str, Layer] = {
    layer.name: layer
    for layer in (
        Layer("device_profile", _device_profile),
        Layer("shim", _shim),
        Layer("compat", _compat),
        Layer("attention", _attention),
        Layer("routing", _routing),
        Layer("meta_device", _meta_device),
        Layer("fast_init", _fast_init),
        Layer("messages", _messages),
    )
}

_current: contextvars.ContextVar[BuildRecord | None] = contextvars.ContextVar("hybridload_build", default=None)


def current_build() -> BuildRecord | None:
    """The build this thread (context) is inside, if any."""
    return _current.get()


@contextlib.contextmanager
def build_session(spec: BuildSpec) -> Iterator[BuildRecord]:
    """Enter the layers of ``spec.purpose`` once; inside an open build, join it instead.

    A nested session of another purpose enters only the layers the open build lacks (a ``meta`` build inside
    a ``real`` load's session, as the low-memory path runs it, adds the shim, attention and the meta device).
    """
    outer = _current.get()
    wanted = PURPOSES[spec.purpose]
    if outer is not None and all(name in outer.layers for name in wanted):
        yield outer
        return
    record = outer if outer is not None else BuildRecord(spec)
    token = _current.set(record) if outer is None else None
    added: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            for name in wanted:
                if name in record.layers:
                    continue
                value = LAYERS[name].enter(stack, spec, record)
                added.append(name)
                if name == "shim":
                    record.shim = value
                elif name == "compat":
                    record.compat = value
                elif name == "device_profile":
                    record.device = value
            yield record
    finally:
        if outer is not None:  # the layers this nested session added are gone again
            for name in added:
                outer.layers.remove(name)
        if token is not None:
            _current.reset(token)


def layer_entries() -> dict[str, int]:
    """Process-wide entry counts by layer (tests compare them before and after one build)."""
    return {name: layer.entries for name, layer in LAYERS.items()}
