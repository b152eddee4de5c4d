"""Module classes that hold a pre-quantized linear exactly as its checkpoint stores it.

Every tensor a checkpoint holds for a quantized linear is a parameter here, with the checkpoint's name,
shape and dtype, so a meta build (client) and a streamed load (server) give the same tree and the
signature compares them field by field. Class names are ordinary importable paths
(``hybridload.quant.modules.NVFP4Linear``), the same on every machine.

How a forward computes is a per-module choice made once at load time (:mod:`.backends`): hybridload's
Triton W4A16 kernels on Hopper-class GPUs, a native NVFP4 GEMM on sm100+, or the pure-PyTorch reference
(dequantize, then ``F.linear``) on CPU. Nothing process-wide changes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import backends
from .numerics import GROUP_SIZE, padded_k


def _param(shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)


class _QuantizedLinear(nn.Module):
    """Shared plumbing: features, optional bias in the activation dtype, backend bookkeeping."""

    #: the checkpoint format this class holds (a :data:`hybridload.quant.formats.METHODS` entry)
    quant_method = ""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype | None, device: Any) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"in_features and out_features must be positive, got {in_features}, {out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.backend = backends.REFERENCE  # set by hybridload.serve.quantized once the weights are on their device
        dtype = dtype or torch.get_default_dtype()
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)

    def hybridload_kernel_entry(self, where: str) -> Any:
        """The kernel_report entry for this module: which backend its forward runs."""
        return backends.report_entry(where, self)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"{self.quant_method}, backend={self.backend}"
        )


class NVFP4Linear(_QuantizedLinear):
    """NVIDIA Model Optimizer NVFP4 linear: ``weight`` uint8 (N, Kp/2), ``weight_scale`` float8_e4m3fn
    (N, Kp/16), ``weight_scale_2`` and ``input_scale`` float32 scalars (Kp: K rounded up to 16)."""

    quant_method = "modelopt-nvfp4"

    def __init__(
        self, in_features: int, out_features: int, bias: bool = False, *, dtype: torch.dtype | None = None, device: Any = None
    ) -> None:
        super().__init__(in_features, out_features, bias, dtype, device)
        kp = padded_k(in_features)
        self.weight = _param((out_features, kp // 2), torch.uint8, device)
        self.weight_scale = _param((out_features, kp // GROUP_SIZE), torch.float8_e4m3fn, device)
        self.weight_scale_2 = _param((), torch.float32, device)
        self.input_scale = _param((), torch.float32, device)

    def global_scale(self) -> tuple[torch.Tensor, bool]:
        """(tensor, is_reciprocal): the per-tensor scale the kernels multiply by."""
        return self.weight_scale_2, False

    def packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight, self.weight_scale

    def kernel_workspace(self, device: torch.device) -> torch.Tensor | None:
        """This layer's W4A16 workspace on ``device`` (split-K arrival counters, left zeroed by every call): made
        on first use and kept, as a plain attribute (not a buffer: the module tree and state dict are the
        checkpoint's). One per layer, so layers never share counters. None when the first use is inside a
        CUDA-graph capture (a tensor made there holds no zeros until replay): that call sums split partials
        with a second launch instead."""
        workspace = self.__dict__.get("_kernel_workspace")
        if workspace is None or workspace.device != device:
            from ..kernels.w4a16 import w4a16_workspace

            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                return None

            workspace = w4a16_workspace(self.out_features, device)
            self.__dict__["_kernel_workspace"] = workspace
        return workspace

    def kernel_layer(self, weight: torch.Tensor, weight_scale: torch.Tensor, global_scale: torch.Tensor,
                     reciprocal: bool, workspace: torch.Tensor | None) -> Any:
        """This layer's :class:`hybridload.kernels.w4a16.W4A16Layer` (operands checked once, each input layout's
        launch replayed), kept as a plain attribute and made again when any operand tensor is replaced."""
        layer = self.__dict__.get("_kernel_layer")
        if layer is None or not layer.matches(weight, weight_scale, global_scale, self.bias, workspace):
            from ..kernels.w4a16 import W4A16Layer

            layer = W4A16Layer(weight, weight_scale, global_scale, self.bias, in_features=self.in_features,
                               reciprocal_global=reciprocal, workspace=workspace)
            self.__dict__["_kernel_layer"] = layer
        return layer

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return backends.nvfp4_forward(self, input)


class CompressedTensorsNVFP4Linear(NVFP4Linear):
    """compressed-tensors ``nvfp4-pack-quantized`` linear: ``weight_packed`` uint8, ``weight_scale``
    float8_e4m3fn, ``weight_global_scale`` / ``input_global_scale`` float32 (1,), global scales stored as the
    reciprocal of Model Optimizer's (``W = e2m1 * weight_scale / weight_global_scale``)."""

    quant_method = "compressed-tensors-nvfp4"

    def __init__(
        self, in_features: int, out_features: int, bias: bool = False, *, dtype: torch.dtype | None = None, device: Any = None
    ) -> None:
        _QuantizedLinear.__init__(self, in_features, out_features, bias, dtype, device)
        kp = padded_k(in_features)
        self.weight_packed = _param((out_features, kp // 2), torch.uint8, device)
        self.weight_scale = _param((out_features, kp // GROUP_SIZE), torch.float8_e4m3fn, device)
        self.weight_global_scale = _param((1,), torch.float32, device)
        self.input_global_scale = _param((1,), torch.float32, device)

    def global_scale(self) -> tuple[torch.Tensor, bool]:
        return self.weight_global_scale, True

    def packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight_packed, self.weight_scale


class ModeloptFP8Linear(_QuantizedLinear):
    """NVIDIA Model Optimizer FP8 linear: ``weight`` float8_e4m3fn (N, K), ``weight_scale`` and
    ``input_scale`` float32 scalars. The forward dequantizes the weight (W8A16); the stored input scale
    is kept for exporters and W8A8 runtimes."""

    quant_method = "modelopt-fp8"

    def __init__(
        self, in_features: int, out_features: int, bias: bool = False, *, dtype: torch.dtype | None = None, device: Any = None
    ) -> None:
        super().__init__(in_features, out_features, bias, dtype, device)
        self.weight = _param((out_features, in_features), torch.float8_e4m3fn, device)
        self.weight_scale = _param((), torch.float32, device)
        self.input_scale = _param((), torch.float32, device)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return backends.fp8_forward(self, input)


QUANTIZED_LINEAR_CLASSES: tuple[type[nn.Module], ...] = (NVFP4Linear, CompressedTensorsNVFP4Linear, ModeloptFP8Linear)
