"""Run a forward-only kernel so that a later ``backward()`` fails loudly instead of silently.

The Triton kernels are inference only. Model parameters usually require grad even at inference, so a
forward call must still work with grad enabled; the outputs then carry a graph node whose backward raises
KernelUnavailableError rather than returning wrong (absent) gradients.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import KernelUnavailableError


class _ForwardOnly(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, name: str, launch: Callable[[], Any], *tensors: torch.Tensor) -> Any:  # noqa: ARG004
        ctx.kernel_name = name
        return launch()

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise KernelUnavailableError(
            f"hybridload.kernels.{ctx.kernel_name} is forward-only (inference): it has no backward pass. "
            "Run the forward under torch.no_grad()/torch.inference_mode(), or install the real kernel "
            "package to train.",
            name="hybridload.kernels",
        )


def run(name: str, launch: Callable[[], Any], inputs: tuple[torch.Tensor | None, ...]) -> Any:
    """Call ``launch()``; when autograd would record it, wrap it so that backward raises."""
    if torch.is_grad_enabled():
        needs_grad = tuple(t for t in inputs if t is not None and t.requires_grad)
        if needs_grad:
            return _ForwardOnly.apply(name, launch, *needs_grad)
    return launch()
