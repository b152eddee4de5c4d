"""Inert stand-ins for the modules and symbols of absent or broken kernel packages.

Every symbol is a *class* whose metaclass is :class:`StandInMeta`, so one object can be called, used as a
decorator or decorator factory, subscripted (``kernel[grid]``), chained (``tl.constexpr``), subclassed and
checked with ``isinstance`` (always False), the way import-time remote code treats kernel symbols.

What a call does is decided by :func:`_call_kind`:

* decorator application (a single function/class argument) -> a new stand-in wrapping it;
* a call with torch tensors -> a kernel call: with only meta/fake tensors the registered pure-torch
  reference runs (shapes and dtypes flow, no data); with real tensors KernelUnavailableError;
* a call without tensors from import-time code (module body, class body, or helpers they call before any
  method frame) -> an inert stand-in (``triton.Config(...)``, ``triton.autotune(...)``);
* anything else (building a kernel class in ``__init__``) -> the registered structural twin, else
  KernelUnavailableError.
"""
from __future__ import annotations

import functools
import inspect
import sys
import threading
import types
from typing import Any, Callable

from ..errors import KernelUnavailableError

_ANY_SIGNATURE = inspect.Signature(
    [
        inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
        inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
    ]
)
STAND_IN_ORIGIN = "hybridload-stand-in"  # the ``origin`` of every stand-in module's spec
_COMPREHENSIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>", "<lambda>"})
_recorders: list[Callable[[str, str], None]] = []  # (package, symbol path) callbacks of open windows
_record_lock = threading.Lock()
_fallbacks: dict[str, Any] = {}  # symbol path -> hybridload Triton kernel bound in its place (served side)


def _triton_substitute(path: str) -> Any:
    """With a Triton-serving window open: hybridload's kernel for ``path``, labelled with the path it replaces."""
    from .ownership import state

    if not state.triton:
        return None
    with _record_lock:
        if path in _fallbacks:
            return _fallbacks[path]
    from ..substitutes import triton_for

    kernel = triton_for(path)
    if kernel is None:
        return None

    @functools.wraps(kernel)
    def fallback(*args: Any, **kwargs: Any) -> Any:
        return kernel(*args, **kwargs)

    fallback.__hybridload_fallback_for__ = path  # type: ignore[attr-defined]
    with _record_lock:
        return _fallbacks.setdefault(path, fallback)


def add_recorder(fn: Callable[[str, str], None]) -> None:
    with _record_lock:
        _recorders.append(fn)


def remove_recorder(fn: Callable[[str, str], None]) -> None:
    with _record_lock:
        if fn in _recorders:
            _recorders.remove(fn)


def _record(package: str, path: str) -> None:
    with _record_lock:
        recorders = list(_recorders)
    for fn in recorders:
        fn(package, path)


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def unavailable_message(package: str, path: str, reason: str) -> str:
    return (
        f"{path} is a hybridload stand-in: the kernel package {package!r} is {reason} on this machine, so "
        f"the meta build imported an inert stand-in in its place. Stand-ins let a model be *built* without "
        f"the kernel; they cannot run it. Run the model where {package!r} works (the GPU server, e.g. nnsight "
        f"remote=True or hybridload.dispatch on a CUDA host), or install {package!r} here."
    )


class StandInModule(types.ModuleType):
    """A module of a stood-in package: every public attribute is a stand-in symbol, created on demand."""

    def __getattr__(self, name: str) -> Any:
        if _is_dunder(name):
            raise AttributeError(f"hybridload stand-in module {self.__name__!r} has no attribute {name!r}")
        resolved = _triton_substitute(f"{self.__name__}.{name}")
        if resolved is not None:
            self.__dict__[name] = resolved
            return resolved
        symbol = make_symbol(f"{self.__name__}.{name}", self.__hybridload_package__, self.__hybridload_reason__)
        # cache so that identity is stable (``a.x is a.x``); a later submodule import overrides it
        self.__dict__[name] = symbol
        _record(self.__hybridload_package__, symbol.__hybridload_path__)
        return symbol

    def __repr__(self) -> str:
        return f"<hybridload stand-in module {self.__name__!r} ({self.__hybridload_reason__})>"


def new_module(name: str, package: str, reason: str, spec: Any) -> StandInModule:
    module = StandInModule(name)
    module.__dict__.update(
        {
            "__spec__": spec,
            "__loader__": spec.loader if spec is not None else None,
            "__package__": name,
            "__path__": [],
            "__version__": "0.0.0",
            "__all__": [],
            "__hybridload_package__": package,
            "__hybridload_reason__": reason,
            "__hybridload_stand_in__": True,
        }
    )
    return module


class StandInMeta(type):
    """Metaclass of stand-in symbols; see the module docstring for the call rules."""

    def __getattr__(cls, name: str) -> Any:
        if _is_dunder(name):
            raise AttributeError(f"hybridload stand-in {cls.__hybridload_path__!r} has no attribute {name!r}")
        child = make_symbol(f"{cls.__hybridload_path__}.{name}", cls.__hybridload_package__, cls.__hybridload_reason__)
        type.__setattr__(cls, name, child)
        return child

    def __getitem__(cls, key: Any) -> Any:
        return make_symbol(f"{cls.__hybridload_path__}[...]", cls.__hybridload_package__, cls.__hybridload_reason__)

    def __bool__(cls) -> bool:
        return True

    def __repr__(cls) -> str:
        return f"<hybridload stand-in {cls.__hybridload_path__}>"

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls.__dict__.get("__hybridload_user_subclass__"):
            return _instantiate_user_subclass(cls, args, kwargs)
        kind, tensors = _call_kind(args, kwargs)
        path = cls.__hybridload_path__
        if kind == "decorate":
            return _decorated(cls, args[0])
        if kind == "kernel":
            if tensors and all(_is_data_free(t) for t in tensors):
                fn = _reference(cls)
                if fn is not None:
                    return fn(*args, **kwargs)
            raise _unavailable(cls)
        from ..substitutes import twin_for

        twin = twin_for(path)
        if twin is not None:
            return twin(*args, **kwargs)
        if kind == "import-time":
            return make_symbol(f"{path}(...)", cls.__hybridload_package__, cls.__hybridload_reason__)
        raise _unavailable(cls)

    def __new__(mcs, name: str, bases: tuple, namespace: dict, **kw: Any) -> "StandInMeta":
        # reached only by ``class X(<stand-in>)`` in user code: remember it as a user subclass
        if "__hybridload_path__" not in namespace:
            base = next(b for b in bases if isinstance(b, StandInMeta))
            namespace = dict(namespace)
            namespace.setdefault("__hybridload_path__", f"{namespace.get('__module__', '?')}.{name}")
            namespace["__hybridload_package__"] = base.__hybridload_package__
            namespace["__hybridload_reason__"] = base.__hybridload_reason__
            namespace["__hybridload_user_subclass__"] = True
        return super().__new__(mcs, name, bases, namespace, **kw)


def make_symbol(path: str, package: str, reason: str, signature: inspect.Signature | None = None) -> StandInMeta:
    """A fresh stand-in symbol for ``path`` (the dotted path as user code imported it)."""
    name = path.rpartition(".")[2] or path
    if signature is None:
        signature = _reference_signature(path)
    namespace = {
        "__module__": path.rpartition(".")[0] or path,
        "__qualname__": name,
        "__doc__": f"hybridload stand-in for {path} ({package} is {reason}).",
        "__signature__": signature,
        "__hybridload_path__": path,
        "__hybridload_package__": package,
        "__hybridload_reason__": reason,
        "__hybridload_stand_in__": True,
    }
    return type.__new__(StandInMeta, name, (), namespace)


def is_stand_in(obj: Any) -> bool:
    """True for stand-in modules, symbols, decorated stand-ins and user subclasses of stand-ins."""
    if isinstance(obj, StandInModule) or isinstance(obj, StandInMeta):
        return True
    return False


def _unavailable(cls: StandInMeta) -> KernelUnavailableError:
    return KernelUnavailableError(
        unavailable_message(cls.__hybridload_package__, cls.__hybridload_path__, cls.__hybridload_reason__),
        name=cls.__hybridload_package__,
    )


def _decorated(decorator: StandInMeta, fn: Any) -> StandInMeta:
    """``@stand_in`` on a function or class: the result is a stand-in that remembers what it wrapped."""
    if isinstance(fn, StandInMeta):
        fn = fn.__dict__["__hybridload_wrapped__"]
    qualname = getattr(fn, "__qualname__", getattr(fn, "__name__", "<object>"))
    module = getattr(fn, "__module__", None) or "?"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = _ANY_SIGNATURE
    symbol = make_symbol(
        f"{module}.{qualname}", decorator.__hybridload_package__, decorator.__hybridload_reason__, signature
    )
    type.__setattr__(symbol, "__hybridload_decorator__", decorator.__hybridload_path__)
    type.__setattr__(symbol, "__hybridload_wrapped__", fn)
    type.__setattr__(symbol, "__name__", getattr(fn, "__name__", qualname))
    return symbol


def _reference(cls: StandInMeta) -> Callable | None:
    wrapped = cls.__dict__.get("__hybridload_wrapped__")
    if wrapped is not None and inspect.isfunction(wrapped):
        return wrapped  # a user function under a kernel decorator (e.g. fla's @tensor_cache): plain python
    from ..substitutes import reference_for

    return reference_for(cls.__hybridload_path__)


def _reference_signature(path: str) -> inspect.Signature:
    try:
        from ..substitutes import reference_for

        fn = reference_for(path)
    except Exception:  # registry not importable: never let a signature lookup break an import
        fn = None
    if fn is not None:
        try:
            return inspect.signature(fn)
        except (TypeError, ValueError):
            pass
    return _ANY_SIGNATURE


def _torch() -> Any:
    return sys.modules.get("torch")


def _tensors(args: tuple, kwargs: dict) -> list:
    torch = _torch()
    if torch is None:
        return []
    found = []
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


def _is_data_free(tensor: Any) -> bool:
    if getattr(tensor, "is_meta", False):
        return True
    fake = sys.modules.get("torch._subclasses.fake_tensor")
    return fake is not None and isinstance(tensor, fake.FakeTensor)


def _is_decoratable(value: Any) -> bool:
    if isinstance(value, StandInMeta):  # stacked kernel decorators: @autotune over @heuristics over @jit
        return "__hybridload_wrapped__" in value.__dict__
    return inspect.isfunction(value) or inspect.ismethod(value) or isinstance(value, type)


def _call_kind(args: tuple, kwargs: dict) -> tuple[str, list]:
    if len(args) == 1 and not kwargs and _is_decoratable(args[0]):
        return "decorate", []
    tensors = _tensors(args, kwargs)
    if tensors:
        return "kernel", tensors
    # frames: 0 _call_kind, 1 StandInMeta.__call__, 2 the caller
    return ("import-time" if _called_at_import_time(sys._getframe(2)) else "runtime"), []


def _called_at_import_time(frame: Any) -> bool:
    """True when the nearest enclosing code is a module/class body, before any method (self/cls) frame.

    Module-level helpers called from a module body (``configs=_make_configs()``) count as import time;
    anything reached through a method (``__init__``, ``forward``, ``from_config``) does not.
    """
    optimized = inspect.CO_OPTIMIZED
    depth = 0
    while frame is not None and depth < 32:
        code = frame.f_code
        if code.co_name in _COMPREHENSIONS:
            frame, depth = frame.f_back, depth + 1
            continue
        if not code.co_flags & optimized:
            return True  # module or class body
        if code.co_argcount and code.co_varnames[0] in ("self", "cls"):
            return False
        frame, depth = frame.f_back, depth + 1
    return False


def _rebind_super(namespace: dict, old: type, new: type) -> None:
    """Zero-argument ``super()`` reads the ``__class__`` cell of each method: point it at the real class."""
    for value in namespace.values():
        func = getattr(value, "__func__", value)
        func = getattr(func, "fget", func)  # properties
        for cell in getattr(func, "__closure__", None) or ():
            try:
                if cell.cell_contents is old:
                    cell.cell_contents = new
            except ValueError:  # empty cell
                continue


_subclass_cache: dict[StandInMeta, type] = {}
_subclass_lock = threading.Lock()


def _instantiate_user_subclass(cls: StandInMeta, args: tuple, kwargs: dict) -> Any:
    """``class MyNorm(FusedRMSNorm)`` in remote code: build it on the base's twin, or raise clearly."""
    from ..substitutes import twin_for

    with _subclass_lock:
        real = _subclass_cache.get(cls)
    if real is None:
        twin_base = None
        for base in cls.__mro__[1:]:
            if isinstance(base, StandInMeta) and not base.__dict__.get("__hybridload_user_subclass__"):
                twin_base = twin_for(base.__hybridload_path__)
                if twin_base is None:
                    raise _unavailable(base)
                break
        if twin_base is None:  # pragma: no cover - a user subclass always has a stand-in base
            raise _unavailable(cls)
        namespace = {
            k: v
            for k, v in cls.__dict__.items()
            if not k.startswith("__hybridload") and k not in ("__dict__", "__weakref__")
        }
        real = type(cls.__name__, (twin_base,), namespace)
        _rebind_super(namespace, cls, real)
        with _subclass_lock:
            _subclass_cache[cls] = real
    return real(*args, **kwargs)
