"""Value-dependent ``__init__`` on meta: report where, and (opt-in) answer from CPU shadows.

A meta build has no values, so ``[x.item() for x in torch.linspace(0, rate, depth)]`` (InternViT,
VideoMAEv2 drop-path schedules) or ``float(self.beta.detach().cpu().item())`` (xIELU) fails in ``__init__``.

* Always: a window turns torch's "cannot be called on meta tensors" errors into ValueDependentInitError
  naming the remote file and line (:func:`translate`).
* Opt-in (``cpu_scalars``): a thread-local ``TorchFunctionMode`` computes, next to every *small* meta
  tensor made during the build (at most :data:`SHADOW_LIMIT` elements), a CPU *shadow*: the same op run on
  the shadows of its inputs with the device set to CPU. A value read (``.item()``, ``.tolist()``,
  ``bool()``, ``float()``, ``int()``, ``__index__``, ``.numpy()``) of a meta tensor that has a shadow is
  answered from it, and ``.cpu()``/``.to("cpu")`` of one, which would raise, returns a copy of it. Every
  op's own result is unchanged, so parameters and buffers stay on meta and the tree is the one the
  server builds with the same flag. Random ops on shadows run under a forked RNG (the global RNG is not
  consumed). Only errors change: a build that works without the flag builds identically with it.
"""
from __future__ import annotations

import os
import sys
import traceback
from types import FrameType, TracebackType
from typing import Any, Callable

from ..errors import ValueDependentInitError
from ..hooks.passthrough import passes_through

#: shadows are kept only for tensors of at most this many elements (helper schedules, scalars, small tables)
SHADOW_LIMIT = 1 << 16

_META_MESSAGES = (
    "cannot be called on meta tensors",
    "Cannot copy out of meta tensor",
    "can't convert meta device type tensor",
)
_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGE = os.path.dirname(_HERE)
_RANDOM_HINTS = ("rand", "normal", "bernoulli", "multinomial", "uniform", "exponential", "cauchy", "geometric", "dropout", "random")


def _skip_file(filename: str) -> bool:
    path = os.path.abspath(filename)
    if path.startswith(_PACKAGE + os.sep):
        return True
    parts = path.replace("\\", "/").split("/")
    return "torch" in parts and "site-packages" in parts or filename.startswith("<frozen")


def _describe(filename: str, lineno: int, function: str) -> str:
    return f"{filename}:{lineno} ({function})"


def _pick(frames: list[tuple[str, int, str, str]]) -> str | None:
    """Innermost remote-code frame, else innermost frame outside torch and hybridload."""
    for filename, lineno, function, module in reversed(frames):
        if module.startswith("transformers_modules"):
            return _describe(filename, lineno, function)
    for filename, lineno, function, _module in reversed(frames):
        if not _skip_file(filename):
            return _describe(filename, lineno, function)
    return None


def caller_location(frame: FrameType | None = None) -> str | None:
    frame = frame or sys._getframe(1)
    frames = []
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, frame.f_globals.get("__name__", "")))
        frame = frame.f_back
    frames.reverse()  # outermost first, like a traceback
    return _pick(frames)


def traceback_location(tb: TracebackType | None) -> str | None:
    frames = []
    for frame, lineno in traceback.walk_tb(tb):
        frames.append((frame.f_code.co_filename, lineno, frame.f_code.co_name, frame.f_globals.get("__name__", "")))
    return _pick(frames)


def _message(operation: str, location: str | None) -> str:
    where = location or "remote code"
    return (
        f"{where} reads the value of a meta tensor ({operation}) while the model is built on the meta device, "
        "where tensors have no data (a value-dependent __init__, e.g. a drop-path schedule from "
        "torch.linspace(...).item()). Opt in to building such small helper tensors on CPU: "
        "compat_window(cpu_scalars=True), HYBRIDLOAD_CPU_SCALARS=1, or the plan's cpu_scalars field "
        "(parameters and buffers stay on meta; use the same setting on the server)."
    )


def is_meta_value_error(exc: BaseException) -> bool:
    return isinstance(exc, (RuntimeError, NotImplementedError, TypeError)) and any(
        fragment in str(exc) for fragment in _META_MESSAGES
    )


def translate(exc: BaseException) -> ValueDependentInitError | None:
    """A ValueDependentInitError naming the remote line, for torch's meta value-read errors (else None)."""
    if isinstance(exc, ValueDependentInitError) or not is_meta_value_error(exc):
        return None
    location = traceback_location(exc.__traceback__)
    operation = str(exc).split("\n", 1)[0]
    return ValueDependentInitError(_message(operation, location), location=location, operation=operation)


def _make_mode(on_read: Callable[[str, str | None], None]) -> Any:
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils import _pytree as pytree
    from torch.utils.weak import WeakIdKeyDictionary

    Tensor = torch.Tensor
    value_reads = {
        Tensor.item: "Tensor.item()",
        Tensor.tolist: "Tensor.tolist()",
        Tensor.__bool__: "bool(tensor)",
        Tensor.__float__: "float(tensor)",
        Tensor.__int__: "int(tensor)",
        Tensor.__index__: "tensor.__index__()",
        Tensor.__complex__: "complex(tensor)",
        Tensor.numpy: "Tensor.numpy()",
        Tensor.__format__: "format(tensor)",
    }
    moves = {Tensor.cpu, Tensor.to}
    cpu = torch.device("cpu")

    def is_meta(value: Any) -> bool:
        return isinstance(value, Tensor) and value.device.type == "meta"

    def to_cpu_arg(value: Any) -> Any:
        if isinstance(value, torch.device) and value.type == "meta":
            return cpu
        if isinstance(value, str) and value.startswith("meta"):
            return cpu
        return value

    class ScalarShadowMode(TorchFunctionMode):
        """Keeps CPU shadows of small meta tensors; answers value reads of meta tensors from them."""

        def __init__(self) -> None:
            super().__init__()
            self.shadows: Any = WeakIdKeyDictionary()

        @passes_through
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            operation = value_reads.get(func)
            if operation is not None and args and is_meta(args[0]):
                shadow = self.shadows.get(args[0])
                location = caller_location(sys._getframe(1))
                if shadow is None:
                    raise ValueDependentInitError(
                        _message(operation, location) + " This tensor was not derived from small tensors "
                        "created during the build, so no CPU value exists for it.",
                        location=location,
                        operation=operation,
                    )
                on_read(operation, location)
                with torch._C.DisableTorchFunction():
                    return func(shadow, *args[1:], **kwargs)
            args, kwargs = self._promote_cpu_constants(func, args, kwargs)
            try:
                out = func(*args, **kwargs)
            except NotImplementedError:
                if func in moves and args and is_meta(args[0]) and args[0] in self.shadows:
                    on_read("Tensor.cpu()" if func is Tensor.cpu else "Tensor.to(cpu)", caller_location(sys._getframe(1)))
                    with torch._C.DisableTorchFunction():
                        return func(self.shadows[args[0]].clone(), *args[1:], **kwargs)
                raise
            if out is None or isinstance(out, (Tensor, list, tuple)):
                self._shadow(func, args, kwargs, out)
            return out

        def _promote_cpu_constants(self, func: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            """An op mixing meta tensors with CPU constants made the legacy way (``torch.Tensor([..])``, which
            ignores the default device) runs on meta: each constant becomes a meta tensor whose CPU shadow keeps
            its values (reads of it still answer)."""
            leaves = pytree.tree_leaves((args, kwargs))
            if not any(is_meta(a) for a in leaves):
                return args, kwargs
            constants = [a for a in leaves if isinstance(a, Tensor) and a.device.type == "cpu" and a.dim() > 0]
            if not constants:
                return args, kwargs
            location = caller_location(sys._getframe(2))
            on_read("CPU constant combined with meta tensors -> meta", location)
            promoted: dict[int, Any] = {}
            for constant in constants:
                with torch._C.DisableTorchFunction():
                    meta = constant.to("meta")
                self.shadows[meta] = constant
                promoted[id(constant)] = meta

            def swap(value: Any) -> Any:
                return promoted.get(id(value), value) if isinstance(value, Tensor) else value

            return pytree.tree_map(swap, args), pytree.tree_map(swap, kwargs)

        def _mutated(self, func: Any, args: tuple, kwargs: dict) -> list[Any]:
            """Meta tensors an op writes into: ``x.op_()``, ``x[i] = v``, ``out=``."""
            name = getattr(func, "__name__", "")
            found = []
            if args and is_meta(args[0]) and (name.endswith("_") and not name.endswith("__") or name == "__setitem__"):
                found.append(args[0])
            for value in pytree.tree_leaves(kwargs.get("out")):
                if is_meta(value):
                    found.append(value)
            return found

        def _shadow(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
            mutated = self._mutated(func, args, kwargs)
            outputs = [o for o in pytree.tree_leaves(out) if is_meta(o)]
            if not outputs and not mutated:
                return
            inputs = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, Tensor)]
            metas = [a for a in inputs if is_meta(a)]
            usable = all(o.numel() <= SHADOW_LIMIT for o in outputs) and all(m in self.shadows for m in metas)
            if not usable:
                for tensor in mutated:  # an in-place op the shadow cannot follow makes the shadow stale
                    self.shadows.pop(tensor, None)
                return

            def substitute(value: Any) -> Any:
                if is_meta(value):
                    return self.shadows[value]
                return to_cpu_arg(value)

            shadow_args = pytree.tree_map(substitute, args)
            shadow_kwargs = pytree.tree_map(substitute, kwargs)
            name = getattr(func, "__name__", "")
            try:
                with torch._C.DisableTorchFunction():
                    if any(hint in name for hint in _RANDOM_HINTS):
                        with torch.random.fork_rng(devices=[]):
                            shadow_out = func(*shadow_args, **shadow_kwargs)
                    else:
                        shadow_out = func(*shadow_args, **shadow_kwargs)
            except Exception:  # noqa: BLE001 - a shadow is best effort; the real op already succeeded
                for tensor in mutated:
                    self.shadows.pop(tensor, None)
                return
            pairs = zip(pytree.tree_leaves(out), pytree.tree_leaves(shadow_out))
            for real, shadow in pairs:
                if is_meta(real) and isinstance(shadow, Tensor) and shadow.device.type == "cpu":
                    self.shadows[real] = shadow

    return ScalarShadowMode()


class CpuScalars:
    """The opt-in mode, entered for one window on one thread (torch function modes are thread-local)."""

    def __init__(self, on_read: Callable[[str, str | None], None]) -> None:
        self._mode = _make_mode(on_read)

    def __enter__(self) -> "CpuScalars":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)
        self._mode.shadows = None
