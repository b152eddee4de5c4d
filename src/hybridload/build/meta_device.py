"""The meta device of a meta build: new tensors on ``meta``, explicit CUDA placement redirected there too.

``torch.device("meta")`` only fills in a device where the code gave none. Remote code written for a GPU server
often names one: ``torch.zeros(n, device="cuda")``, ``buffer.cuda()``, ``device=torch.device("cuda")`` in
``__init__``. On a machine without CUDA that raises ``Torch not compiled with CUDA enabled`` (an
AssertionError from deep inside torch). Inside a meta build such a tensor can only be a meta tensor anyway, so
:class:`MetaDeviceMode` creates it there and records where the code asked for CUDA (``file:line``), which the
build report lists.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch
from torch.utils._device import DeviceContext, _device_constructors

from ..hooks.passthrough import passes_through

_META = torch.device("meta")
_MOVES = {torch.Tensor.to, torch.Tensor.cuda}


def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.split(":", 1)[0] == "cuda"
    return isinstance(device, int) and not isinstance(device, bool)  # a bare index means a CUDA device


def empty_weights_only() -> bool:
    """accelerate's ``init_empty_weights`` is active without a meta default device: parameters go to meta,
    new buffers stay where torch puts them (``include_buffers=False``, accelerate's default)."""
    from .attention import accelerate_empty_weights

    return torch.get_default_device().type != "meta" and accelerate_empty_weights()


class MetaDeviceMode(DeviceContext):
    """``torch.device("meta")`` that also sends explicitly CUDA-placed new tensors to meta (and says where).

    ``default_to_meta=False`` keeps the caller's default device for tensors created without one (a build under
    accelerate's ``init_empty_weights``, which decides itself where parameters and buffers go) and only
    redirects explicit CUDA placement.
    """

    def __init__(self, on_redirect: Callable[[str], None] | None = None, *, default_to_meta: bool = True) -> None:
        super().__init__(_META)
        self._on_redirect = on_redirect
        self._default_to_meta = default_to_meta

    def _redirected(self, what: str) -> None:
        if self._on_redirect is None:
            return
        from ..compat.meta_scalars import caller_location

        self._on_redirect(f"{caller_location(sys._getframe(2)) or '?'} {what}")

    @passes_through
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _device_constructors():
            device = kwargs.get("device")
            if device is None:
                if self._default_to_meta:
                    kwargs["device"] = _META
            elif _is_cuda(device):
                kwargs["device"] = _META
                self._redirected(f"{getattr(func, '__name__', func)}(device={device!r}) -> meta")
        elif func in _MOVES:
            target = kwargs.get("device", args[1] if len(args) > 1 else ("cuda" if func is torch.Tensor.cuda else None))
            if func is torch.Tensor.cuda or _is_cuda(target):
                self._redirected(f"Tensor.{func.__name__}({target!r}) -> meta")
                tensor = args[0]
                dtype = kwargs.get("dtype")
                if dtype is None and len(args) > 2 and isinstance(args[2], torch.dtype):
                    dtype = args[2]
                return tensor.to(device=_META, dtype=dtype) if dtype is not None else tensor.to(device=_META)
        return func(*args, **kwargs)
