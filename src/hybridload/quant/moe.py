"""Grouped W4A16 MoE for Nemotron-H-style blocks: only the routed experts' packed bytes are read.

A block qualifies when it holds ``experts`` (a ModuleList of MLPs whose ``up_proj``/``down_proj`` -- and
optional ``gate_proj`` -- are bias-free :class:`~.modules.NVFP4Linear` on the Triton backend, all of one
shape, with an ``act_fn``) and a ``moe(hidden_states, topk_indices, topk_weights)`` method, the routed part
of Nemotron-H's (and the bundled example's) MoE. Binding it:

* stacks the experts' packed weights and scales into one tensor per projection and re-points each expert's
  parameters at its slice (no extra memory; names, shapes and dtypes -- the tree -- are unchanged);
* sets an instance attribute ``moe`` on that block (its class is untouched) that runs
  :func:`hybridload.kernels.w4a16.w4a16_moe`: expert ids stay on the device, so no host sync, and the step
  can be captured in a CUDA graph.

Per-expert submodules are then not called during a forward, so hooks on ``experts.N.up_proj`` do not fire;
``load_quantized(moe="modules")`` keeps the model's own per-expert calls for such interventions.
"""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import backends
from .modules import NVFP4Linear


@dataclass
class _Projection:
    weight: torch.Tensor  # (E, N, Kp/2) uint8
    scale: torch.Tensor  # (E, N, Kp/16) float8_e4m3fn
    global_scale: torch.Tensor  # (E,) float32
    reciprocal: bool


def _projections(experts: nn.ModuleList) -> list[str] | None:
    names = ["gate_proj", "up_proj", "down_proj"] if hasattr(experts[0], "gate_proj") else ["up_proj", "down_proj"]
    for expert in experts:
        if not callable(getattr(expert, "act_fn", None)):
            return None
        for name in names:
            linear = getattr(expert, name, None)
            first = getattr(experts[0], name)
            if (
                type(linear) is not NVFP4Linear
                or linear.backend != backends.TRITON
                or linear.bias is not None
                or (linear.in_features, linear.out_features) != (first.in_features, first.out_features)
            ):
                return None
    return names


def _stack(experts: nn.ModuleList, name: str) -> _Projection:
    """One tensor per field; each expert's parameters become views of its slice (the old storage is freed)."""
    linears = [getattr(expert, name) for expert in experts]
    fields = {}
    for field in ("weight", "weight_scale", "weight_scale_2"):
        stacked = torch.stack([getattr(linear, field).detach() for linear in linears])
        for index, linear in enumerate(linears):
            setattr(linear, field, nn.Parameter(stacked[index], requires_grad=False))
        fields[field] = stacked
    return _Projection(fields["weight"], fields["weight_scale"], fields["weight_scale_2"], False)


def _grouped_moe(block: nn.Module, hidden_states: torch.Tensor, topk_indices: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
    from ..kernels.w4a16 import w4a16_moe

    bank: dict[str, _Projection] = block._hybridload_moe_bank
    act = block.experts[0].act_fn
    tokens, topk = topk_indices.shape
    ids = topk_indices if topk_indices.is_contiguous() else topk_indices.contiguous()
    x = hidden_states if hidden_states.is_contiguous() else hidden_states.contiguous()
    up = bank["up_proj"]
    h = w4a16_moe(x, ids, up.weight, up.scale, up.global_scale)
    if "gate_proj" in bank:
        gate = bank["gate_proj"]
        h = act(w4a16_moe(x, ids, gate.weight, gate.scale, gate.global_scale)) * h
    else:
        h = act(h)
    down = bank["down_proj"]
    out = w4a16_moe(h.reshape(tokens * topk, -1), ids.reshape(-1, 1), down.weight, down.scale, down.global_scale)
    weighted = out.view(tokens, topk, -1).to(topk_weights.dtype) * topk_weights.unsqueeze(-1)
    return weighted.sum(dim=1).type(hidden_states.dtype)


def _entry(where: str) -> Any:
    from ..kernels import w4a16
    from ..kernels.kernel_entry import KERNEL, KernelEntry

    return KernelEntry(where, "hybridload.kernels.w4a16.w4a16_moe", "hybridload", KERNEL, file=w4a16.__file__,
                       note="grouped NVFP4 MoE: routed experts only, no host sync")


def bind_grouped_moe(model: nn.Module) -> list[str]:
    """Bind the grouped kernel to every qualifying MoE block; returns their paths."""
    bound = []
    for path, block in model.named_modules():
        experts = getattr(block, "experts", None)
        if not isinstance(experts, nn.ModuleList) or len(experts) == 0 or not callable(getattr(block, "moe", None)):
            continue
        names = _projections(experts)
        if names is None:
            continue
        block._hybridload_moe_bank = {name: _stack(experts, name) for name in names}
        block.moe = types.MethodType(_grouped_moe, block)
        block.hybridload_kernel_entry = functools.partial(_entry)
        bound.append(path)
    return bound


def unbind_grouped_moe(model: nn.Module) -> None:
    """Give the blocks their class's own ``moe`` back (the stacked storage stays; the views keep working)."""
    for block in model.modules():
        if "_hybridload_moe_bank" in block.__dict__:
            for name in ("moe", "hybridload_kernel_entry", "_hybridload_moe_bank"):
                block.__dict__.pop(name, None)
