"""A small NVFP4 checkpoint writer in NVIDIA Model Optimizer's export layout (for tests and examples).

It writes what ``modelopt``'s ``export_hf_checkpoint`` writes for an NVFP4-quantized model, tensor for
tensor (tested against modelopt itself): per quantized linear ``weight`` (packed uint8), ``weight_scale``
(float8_e4m3fn per 16 inputs), ``weight_scale_2`` and ``input_scale`` (float32 scalars); the other tensors
as they are; ``config.json`` with a ``quantization_config`` (``quant_method: modelopt``, ``quant_algo:
NVFP4``) and ``hf_quant_config.json``.

Calibration follows Model Optimizer's max calibration: one forward pass over ``calibration_inputs`` records
each linear's input absolute maximum (``input_scale = amax / (6 * 448)``), and linears that read the very
same input tensor (q/k/v, gate/up) share one ``weight_scale_2`` and one ``input_scale`` -- Model Optimizer
unifies them so that runtimes can fuse those GEMMs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..errors import QuantizationError
from .formats import HF_QUANT_CONFIG, QuantFormat
from .numerics import global_scale, quantize_nvfp4

DEFAULT_EXCLUDE = ("lm_head",)


def _quantized_linears(model: nn.Module, fmt: QuantFormat) -> dict[str, nn.Linear]:
    return {path: m for path, m in model.named_modules() if type(m) is nn.Linear and not fmt.excludes(path)}


def calibrate(
    model: nn.Module, linears: Mapping[str, nn.Linear], calibration_inputs: Iterable[Any] | None
) -> tuple[dict[str, torch.Tensor], list[list[str]]]:
    """(input amax per linear, groups of linears that read the same input tensor), from forward passes.

    Each item of ``calibration_inputs`` is passed as ``model(item)`` (a tensor) or ``model(**item)`` (a dict).
    Without inputs, no amax is known (input scales are written as 1.0) and no group is shared.
    """
    amax: dict[str, torch.Tensor] = {}
    shared: dict[int, list[str]] = {}
    keep_alive: list[torch.Tensor] = []  # ids stay unique only while the tensors live
    if calibration_inputs is None:
        return amax, []
    names = {id(m): path for path, m in linears.items()}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        path = names[id(module)]
        value = x.detach().abs().amax().float()
        amax[path] = torch.maximum(amax[path], value) if path in amax else value
        group = shared.setdefault(id(x), [])
        if path not in group:
            group.append(path)
        keep_alive.append(x)

    handles = [m.register_forward_pre_hook(hook) for m in linears.values()]
    try:
        with torch.no_grad():
            for item in calibration_inputs:
                model(**item) if isinstance(item, Mapping) else model(item)
    finally:
        for handle in handles:
            handle.remove()
    groups: list[list[str]] = []
    seen: set[str] = set()
    for group in shared.values():
        if len(group) > 1 and not seen.intersection(group):
            groups.append(sorted(group))
            seen.update(group)
    return amax, groups


def quantize_state_dict(
    model: nn.Module,
    fmt: QuantFormat,
    calibration_inputs: Iterable[Any] | None = None,
) -> dict[str, torch.Tensor]:
    """The checkpoint tensors (Model Optimizer names) of ``model`` quantized to NVFP4 in ``fmt``."""
    linears = _quantized_linears(model, fmt)
    if not linears:
        raise QuantizationError(f"no nn.Linear of {type(model).__name__} is left to quantize after excluding {list(fmt.exclude)}")
    amax, groups = calibrate(model, linears, calibration_inputs)
    weight_amax = {path: m.weight.detach().abs().amax() for path, m in linears.items()}
    for group in groups:  # Model Optimizer's fusion: one global scale per shared-input group
        unified_w = torch.max(torch.stack([weight_amax[p] for p in group]))
        unified_x = torch.max(torch.stack([amax[p] for p in group]))
        for path in group:
            weight_amax[path] = unified_w
            amax[path] = unified_x
    state = {name: t.detach() for name, t in model.state_dict().items()}
    for path, module in linears.items():
        packed, scale, scale_2 = quantize_nvfp4(module.weight.detach(), global_scale(weight_amax[path]))
        state[f"{path}.weight"] = packed
        state[f"{path}.weight_scale"] = scale
        state[f"{path}.weight_scale_2"] = scale_2
        state[f"{path}.input_scale"] = global_scale(amax[path]) if path in amax else torch.tensor(1.0)
    return state


def _config_dict(model: nn.Module, config: Mapping[str, Any] | None) -> dict[str, Any]:
    if config is not None:
        return json.loads(json.dumps(dict(config)))
    model_config = getattr(model, "config", None)
    if model_config is None:
        raise QuantizationError("the model has no .config; pass config= (the config.json dict) to write one")
    return json.loads(model_config.to_json_string(use_diff=False))


def write_nvfp4_checkpoint(
    model: nn.Module,
    out_dir: str | os.PathLike[str],
    *,
    exclude: Iterable[str] = DEFAULT_EXCLUDE,
    calibration_inputs: Iterable[Any] | None = None,
    config: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> QuantFormat:
    """Quantize ``model``'s linears (all but ``exclude`` patterns) to NVFP4 and write a checkpoint folder.

    ``config``: the config.json to extend (default: ``model.config``); ``dtype``: cast the unquantized
    floating tensors (default: keep). Returns the format a reader detects in the folder.
    """
    fmt = QuantFormat(method="modelopt-nvfp4", group_size=16, exclude=tuple(exclude), producer="hybridload")
    state = quantize_state_dict(model, fmt, calibration_inputs)
    quantized = {key.rpartition(".")[0] for key in state if key.endswith(".weight_scale_2")}
    if dtype is not None:
        state = {
            key: value.to(dtype) if value.is_floating_point() and key.rpartition(".")[0] not in quantized else value
            for key, value in state.items()
        }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    from .._version import __version__

    save_file({k: v.detach().cpu().contiguous() for k, v in sorted(state.items())}, str(out / "model.safetensors"), metadata={"format": "pt"})
    producer = {"name": "hybridload", "version": __version__}
    hf_quant = {
        "producer": producer,
        "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": None, "group_size": 16, "exclude_modules": list(fmt.exclude)},
    }
    (out / HF_QUANT_CONFIG).write_text(json.dumps(hf_quant, indent=4) + "\n", encoding="utf-8")
    data = _config_dict(model, config)
    if dtype is not None:
        data["dtype"] = str(dtype).removeprefix("torch.")
    data["quantization_config"] = {
        "config_groups": {
            "group_0": {
                "input_activations": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16},
                "weights": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": 16},
                "targets": ["Linear"],
            }
        },
        "ignore": list(fmt.exclude),
        "quant_algo": "NVFP4",
        "producer": producer,
        "quant_method": "modelopt",
    }
    (out / "config.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    from .formats import read_format

    detected = read_format(out)
    assert detected is not None
    return detected
