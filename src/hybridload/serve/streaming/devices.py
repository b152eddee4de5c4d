"""Resolve a ``device_map`` (what accelerate accepts) into a per-tensor placement for the streaming loader."""
from __future__ import annotations

import os
from typing import Any, Mapping, Union

import torch

from ...errors import PlanError

DeviceLike = Union[str, int, torch.device]
_AUTO = {"auto", "balanced", "balanced_low_0", "sequential"}


class DevicePlacement:
    """Module prefix -> device, answered by the longest prefix that owns a tensor (accelerate's rule)."""

    def __init__(self, device_map: Mapping[str, DeviceLike]) -> None:
        self.device_map: dict[str, torch.device] = {prefix: _as_device(dev) for prefix, dev in device_map.items()}
        self._cache: dict[str, torch.device] = {}

    def device_for(self, name: str) -> torch.device:
        device = self._cache.get(name)
        if device is not None:
            return device
        parts = name.split(".")
        for cut in range(len(parts), -1, -1):
            prefix = ".".join(parts[:cut])
            if prefix in self.device_map:
                device = self._cache[name] = self.device_map[prefix]
                return device
        raise PlanError(
            f"device_map places no module that owns {name!r}; add an entry for it (or a '' entry for the rest)."
        )

    @property
    def devices(self) -> set[torch.device]:
        return set(self.device_map.values())


def resolve_device_map(model: Any, device_map: Any, max_memory: Mapping[Any, Any] | None = None) -> DevicePlacement:
    """Turn None/"cpu"/"cuda"/int/torch.device/dict/"auto" into a placement, checking it against the model.

    ``max_memory`` (device -> bytes or "10GiB", accelerate's format) bounds an ``"auto"``-style placement; it is
    refused with an explicit placement, where it would be silently ignored.
    """
    if max_memory is not None and not (isinstance(device_map, str) and device_map in _AUTO):
        raise PlanError(
            f"max_memory only shapes an automatic placement (device_map='auto', 'balanced', 'balanced_low_0' or "
            f"'sequential'); with device_map={device_map!r} it would be ignored. Drop it or use an automatic placement."
        )
    if device_map is None:
        placement = DevicePlacement({"": torch.device("cpu")})
    elif isinstance(device_map, str) and device_map in _AUTO:
        placement = DevicePlacement(_infer_auto(model, device_map, max_memory))
    elif isinstance(device_map, (str, int, torch.device)):
        placement = DevicePlacement({"": device_map})
    elif isinstance(device_map, Mapping):
        placement = DevicePlacement(dict(device_map))
        _check_prefixes(model, placement)
    else:
        raise PlanError(
            f"device_map={device_map!r} is not understood; pass 'cpu', 'cuda', 'cuda:N', an int, a torch.device, "
            "'auto', or a dict of module prefix -> device."
        )
    for name, _ in _named_tensors(model):
        placement.device_for(name)  # every tensor must have a home
    _check_available(placement.devices)
    return placement


def _as_device(device: DeviceLike) -> torch.device:
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, int):
        if device < 0:
            raise PlanError(f"device index {device} is negative; use 'cpu' for the CPU.")
        resolved = torch.device("cuda", device)
    elif isinstance(device, str):
        if device == "disk":
            raise PlanError(
                "device_map puts tensors on 'disk'; the streaming loader places every tensor on a real device. "
                "Give those modules 'cpu' (or load with from_pretrained and an offload folder)."
            )
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # from_pretrained's reading of "cuda"
        try:
            resolved = torch.device(device)
        except (RuntimeError, ValueError):
            raise PlanError(f"{device!r} is not a device name (use e.g. 'cpu', 'cuda', 'cuda:1').") from None
    else:
        raise PlanError(f"{device!r} is not a device (use a str, an int or a torch.device).")
    if resolved.type == "meta":
        raise PlanError("device_map puts tensors on 'meta'; the streaming loader materialises every tensor.")
    return resolved


def _check_available(devices: set[torch.device]) -> None:
    for device in devices:
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise PlanError(f"device_map asks for {device} but this machine has no CUDA device; use 'cpu'.")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise PlanError(f"device_map asks for {device} but only {torch.cuda.device_count()} GPU(s) exist.")


def _check_prefixes(model: Any, placement: DevicePlacement) -> None:
    modules = {name for name, _ in model.named_modules()}
    tensors = {name for name, _ in _named_tensors(model)}
    unknown = sorted(p for p in placement.device_map if p and p not in modules and p not in tensors)
    if unknown:
        raise PlanError(
            f"device_map names {len(unknown)} prefix(es) that are not modules of {type(model).__name__}: "
            f"{', '.join(unknown[:8])}; use names from model.named_modules()."
        )


def _infer_auto(model: Any, strategy: str, max_memory: Mapping[Any, Any] | None = None) -> dict[str, DeviceLike]:
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory, get_max_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    limits = dict(max_memory) if max_memory is not None else None
    if strategy == "sequential":
        max_memory = get_max_memory(limits)
    else:
        max_memory = get_balanced_memory(
            model, max_memory=limits, no_split_module_classes=no_split, low_zero=(strategy == "balanced_low_0")
        )
    device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)
    offloaded = sorted(prefix for prefix, dev in device_map.items() if dev == "disk")
    if offloaded:
        raise PlanError(
            f"device_map={strategy!r}: the model does not fit on this machine's devices and CPU memory "
            f"({len(offloaded)} module(s) would go to disk, e.g. {offloaded[0]!r}); use a bigger machine or a "
            "smaller dtype."
        )
    return dict(device_map)


def _named_tensors(model: Any):
    yield from model.named_parameters(remove_duplicate=False)
    yield from model.named_buffers(remove_duplicate=False)
