"""A JSON description of a module's structure, the unit golden files record and twins are checked against.

It captures what decides whether a twin can stand in for the real class: class identity (twins report the
class they twin) and base classes, every parameter and buffer (shape, dtype, device, persistence,
``requires_grad``), submodule classes, public scalar attributes and ``repr``. Constructor arguments are
stored with :func:`encode` so dtypes, tuples and infinities survive JSON.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ._marker import real_name

_SCALARS = (bool, int, float, str, type(None))


def _is_plain(value: Any) -> bool:
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, (tuple, list, torch.Size)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, (torch.dtype, torch.device))


def _tensor_entry(tensor: torch.Tensor) -> dict[str, Any]:
    return {"shape": list(tensor.shape), "dtype": str(tensor.dtype), "device": tensor.device.type}


def describe(module: torch.nn.Module) -> dict[str, Any]:
    """Structure of ``module`` (recursively) as plain JSON-ready data."""
    parameters = {
        name: {**_tensor_entry(p), "requires_grad": p.requires_grad} for name, p in module.named_parameters()
    }
    buffers: dict[str, Any] = {}
    for prefix, sub in module.named_modules():
        for name, buf in sub._buffers.items():
            if buf is None:
                continue
            full = f"{prefix}.{name}" if prefix else name
            buffers[full] = {**_tensor_entry(buf), "persistent": name not in sub._non_persistent_buffers_set}
    attributes = {
        name: repr(value)
        for name, value in sorted(vars(module).items())
        if not name.startswith("_") and name != "training" and _is_plain(value)
    }
    return {
        "class": real_name(type(module)),
        "mro": [real_name(cls) for cls in type(module).__mro__],
        "parameters": parameters,
        "buffers": buffers,
        "modules": {name: real_name(type(sub)) for name, sub in module.named_modules() if name},
        "attributes": attributes,
        "repr": repr(module),
    }


def encode(value: Any) -> Any:
    """Constructor argument -> JSON value (dtypes, devices, tuples and non-finite floats are tagged)."""
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        if "__dtype__" in value:
            return getattr(torch, value["__dtype__"])
        if "__device__" in value:
            return torch.device(value["__device__"])
        if "__float__" in value:
            return float(value["__float__"])
        if "__tuple__" in value:
            return tuple(decode(v) for v in value["__tuple__"])
        return {k: decode(v) for k, v in value.items()}
    return value
