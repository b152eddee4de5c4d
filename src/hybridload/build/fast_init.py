"""``skip_weight_init()``: a meta build does no weight initialisation, and builds the same tree.

A meta tensor has no values, so writing initial values into one changes nothing but the time it takes:
torch runs ``uniform_``/``normal_`` on meta through Python decompositions (15-250 us a call), and a
DeepSeek-V3-style remote model with 45,033 per-expert ``nn.Linear`` spends most of its meta build in
``reset_parameters`` -> ``kaiming_uniform_``. While a window is open, on the threads inside it:

* the value writes every initialiser bottoms out in (``Tensor.uniform_``, ``normal_``, ``fill_``, ``zero_``)
  return at once for a meta tensor, whoever calls them: ``nn.init.*`` (also from remote code's own
  helpers), transformers' ``initialization`` functions and ``_init_weights``, ``weight.data.normal_()``;
* ``reset_parameters`` of torch's own layers (``Linear``, convolutions, ``Embedding``, norms) returns at once
  when every parameter and buffer of the layer is on meta.

Nothing else is skipped: ``__init__``, ``post_init``, ``_init_weights`` and remote init helpers still run
(an ``_init_weights`` that adds or replaces parameters still does), and every tensor op that computes a
buffer still runs. A write is skipped only where it cannot be observed:

* the tensor is on meta (a real tensor is always initialised: a real-device build never skips anything)
  and is a plain ``Tensor`` or ``Parameter`` (a subclass may observe writes in its ``__torch_function__``);
* the original would not raise (``normal_`` with a negative std or an integer dtype, ``fill_`` with a
  non-scalar value, an in-place write to a leaf that requires grad, an inference tensor, unexpected
  arguments: those calls go to torch and raise as before);
* no torch function mode other than the meta device one is active. Modes see every op; hybridload's
  ``cpu_scalars`` mode keeps CPU values for small meta tensors by following such writes, so with it (or
  any other mode) on, every write goes through as before.

The window is re-entrant and thread-safe: the patches (:class:`hybridload.hooks.patch.Patch`) are held while
at least one window is open anywhere and act only for threads inside a window; the last window to close
restores the originals (unless someone patched over them meanwhile: then theirs stay and ours pass through).
"""
from __future__ import annotations

import functools
import math
import threading
from numbers import Number
from typing import Any, Callable, Iterator

from ..hooks.patch import Patch

_local = threading.local()
_lock = threading.Lock()
_open = 0  # windows open in the process
_patches: "list[Patch] | None" = None  # built at the first window (they need torch)


def skipping() -> bool:
    """True on a thread inside an open window."""
    return getattr(_local, "depth", 0) > 0


class _Torch:
    """The torch entry points the hot checks use, bound once (a function-level ``import torch`` per call
    goes through every import hook, the kernel shim's included)."""

    ready = False

    @classmethod
    def bind(cls) -> None:
        import torch

        cls.disable_torch_function = torch._C.DisableTorchFunction
        cls.stack_length = torch._C._len_torch_function_stack
        cls.stack_at = torch._C._get_function_stack_at
        cls.grad_enabled = torch.is_grad_enabled
        cls.inference_mode_enabled = torch.is_inference_mode_enabled
        cls.plain_types = frozenset({torch.Tensor, torch.nn.Parameter})
        cls.ready = True


def _torch_function_disabled() -> Any:
    return _Torch.disable_torch_function()


# --------------------------------------------------------------------------------------------------
# when a write may be skipped
# --------------------------------------------------------------------------------------------------


def _plain_mode_stack() -> bool:
    """No torch function mode but the meta device's own (torch's DeviceContext, nnsight's MetaDevice)."""
    stack_at = _Torch.stack_at
    for index in range(_Torch.stack_length()):
        if not _is_device_mode(type(stack_at(index))):
            return False
    return True


@functools.lru_cache(maxsize=None)
def _is_device_mode(mode_type: type) -> bool:
    from torch.utils._device import DeviceContext

    if issubclass(mode_type, DeviceContext):
        return True
    return mode_type.__name__ == "MetaDevice" and mode_type.__module__.startswith("nnsight.")


def _may_skip() -> bool:
    """This thread is inside a window and no mode other than the meta device's would see the call."""
    return getattr(_local, "depth", 0) > 0 and _plain_mode_stack()


def _invisible_write(tensor: Any) -> bool:
    """``tensor`` is meta and an in-place write into it is invisible to autograd.

    Called with torch functions disabled: tensor properties are read directly instead of through the
    device mode (0.3 us instead of 1 us each). Plain ``Tensor``/``Parameter`` only: a subclass may see the
    write in its own ``__torch_function__``.
    """
    if type(tensor) not in _Torch.plain_types or not tensor.is_meta:
        return False
    if tensor.requires_grad and _Torch.grad_enabled():
        return False  # a leaf raises, a non-leaf records the op: torch's business
    return not (tensor.is_inference() and not _Torch.inference_mode_enabled())


def _real_number(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, complex)


def _write_skipper(accepts: Callable[..., bool], original: Callable[..., Any]) -> Callable[..., Any]:
    """``Tensor.<name>`` that returns ``self`` when the write is skippable and ``accepts(self, *args, **kwargs)``."""

    def write(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _may_skip():
            with _torch_function_disabled():
                skip = _invisible_write(self) and accepts(self, *args, **kwargs)
            if skip:
                return self
        return original(self, *args, **kwargs)

    return write  # the Patch gate around it carries the original's name, doc and __wrapped__


def _accepts_uniform(self: Any, *args: Any, **kwargs: Any) -> bool:
    # uniform_(from=0, to=1, *, generator=None): on meta torch checks nothing but the argument names
    if len(args) > 2 or not set(kwargs) <= {"from", "to", "generator"}:
        return False
    return all(_real_number(v) for v in (*args, kwargs.get("from", 0), kwargs.get("to", 1)))


def _accepts_normal(self: Any, *args: Any, **kwargs: Any) -> bool:
    # normal_(mean=0, std=1, *, generator=None): torch raises for std < 0 (or nan) and integer dtypes
    if len(args) > 2 or not set(kwargs) <= {"mean", "std", "generator"}:
        return False
    mean = args[0] if args else kwargs.get("mean", 0.0)
    std = args[1] if len(args) > 1 else kwargs.get("std", 1.0)
    if not (_real_number(mean) and _real_number(std)) or not std >= 0 or math.isnan(std):
        return False
    return bool(self.is_floating_point() or self.is_complex())


def _accepts_fill(self: Any, *args: Any, **kwargs: Any) -> bool:
    # fill_(value): a Python number always fits on meta (a tensor value must be 0-dim: torch checks that)
    return len(args) == 1 and not kwargs and isinstance(args[0], Number)


def _accepts_zero(self: Any, *args: Any, **kwargs: Any) -> bool:
    return not args and not kwargs


_WRITES: dict[str, Callable[..., bool]] = {
    "uniform_": _accepts_uniform,
    "normal_": _accepts_normal,
    "fill_": _accepts_fill,
    "zero_": _accepts_zero,
}


# --------------------------------------------------------------------------------------------------
# reset_parameters of torch's own layers
# --------------------------------------------------------------------------------------------------


def _layer_classes() -> list[tuple[type, str, int]]:
    """(class, method, least weight rank) of torch layers whose reset only writes their own tensors' values.

    The rank guard keeps torch's error for a weight its fan-in/fan-out initialiser cannot handle
    (a subclass that swapped in a 1-d weight); norms need none.
    """
    from torch import nn
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.modules.conv import _ConvNd

    classes: list[tuple[type, str, int]] = [
        (nn.Linear, "reset_parameters", 2),
        (nn.Bilinear, "reset_parameters", 2),
        (_ConvNd, "reset_parameters", 2),
        (nn.Embedding, "reset_parameters", 0),
        (nn.EmbeddingBag, "reset_parameters", 0),
        (nn.LayerNorm, "reset_parameters", 0),
        (nn.GroupNorm, "reset_parameters", 0),
        (_NormBase, "reset_parameters", 0),
    ]
    if hasattr(nn, "RMSNorm"):
        classes.append((nn.RMSNorm, "reset_parameters", 0))
    return classes


def _all_meta(module: Any, least_weight_rank: int) -> bool:
    """Every parameter and buffer of ``module`` itself is on meta (read with torch functions disabled)."""
    found = False
    plain = _Torch.plain_types
    for tensors in (module._parameters, module._buffers):
        for tensor in tensors.values():
            if tensor is not None:
                if type(tensor) not in plain or not tensor.is_meta:
                    return False
                found = True
    weight = module._parameters.get("weight")
    return found and (weight is None or weight.dim() >= least_weight_rank)


def _reset_skipper(least_weight_rank: int, original: Callable[..., Any]) -> Callable[..., Any]:
    def reset(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and _may_skip():
            with _torch_function_disabled():
                skip = _all_meta(self, least_weight_rank)
            if skip:
                return None
        return original(self, *args, **kwargs)

    return reset


def _targets() -> list[tuple[type, str, Callable[[Callable[..., Any]], Callable[..., Any]]]]:
    """(owner, attribute, make(original) -> replacement) for every attribute a window replaces."""
    import torch

    found: list[tuple[type, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = []
    for name, accepts in _WRITES.items():
        found.append((torch.Tensor, name, functools.partial(_write_skipper, accepts)))
    for owner, name, rank in _layer_classes():
        if name in owner.__dict__:
            found.append((owner, name, functools.partial(_reset_skipper, rank)))
    return found


def _all_patches() -> list[Patch]:
    """One :class:`~hybridload.hooks.patch.Patch` per replaced attribute (the project's one patch primitive:
    reference-counted, restored only if still ours, inert when patched over)."""
    global _patches
    if _patches is None:
        _patches = [Patch(owner, name, make, key=f"torch.{owner.__qualname__}.{name} (fast init)")
                    for owner, name, make in _targets()]
    return _patches


# --------------------------------------------------------------------------------------------------
# the window
# --------------------------------------------------------------------------------------------------


class skip_weight_init:  # noqa: N801 - used like a function: ``with skip_weight_init():``
    """Skip weight initialisation of meta tensors on this thread while open (see the module docstring).

    Re-entrant, thread-safe, reversible; usable as ``with skip_weight_init():`` or as a decorator.
    """

    def __enter__(self) -> "skip_weight_init":
        global _open
        with _lock:
            if _open == 0:
                if not _Torch.ready:
                    _Torch.bind()
                acquired: list[Patch] = []
                try:
                    for patch in _all_patches():
                        patch.acquire()
                        acquired.append(patch)
                except BaseException:
                    for patch in reversed(acquired):
                        patch.release()
                    raise
            _open += 1
        _local.depth = getattr(_local, "depth", 0) + 1
        return self

    def __exit__(self, *exc: Any) -> None:
        global _open
        _local.depth -= 1
        with _lock:
            _open -= 1
            if _open == 0:
                for patch in reversed(_all_patches()):
                    patch.release()

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with skip_weight_init():
                return fn(*args, **kwargs)

        return wrapper


def windows_open() -> int:
    """How many windows are open in the process (0: every patch is restored)."""
    return _open


def patched_attributes() -> Iterator[tuple[type, str]]:
    """The (class, attribute) pairs a window replaces, for checks that everything was put back."""
    for owner, name, _make in _targets():
        yield owner, name
