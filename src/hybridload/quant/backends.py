"""Which code a quantized module's forward runs, chosen once per module when its weights land on a device.

* ``triton-w4a16`` -- hybridload's Triton kernels (:mod:`hybridload.kernels.w4a16`): CUDA GPUs without
  FP4 tensor cores (Hopper and older), weights stay packed;
* ``native-nvfp4`` -- sm100+ (Blackwell) with a torch that has ``float4_e2m1fn_x2``: activations are
  quantized to NVFP4 with the checkpoint's ``input_scale`` and ``torch._scaled_mm`` runs the block-scaled
  FP4 GEMM on the tensor cores (the W4A4 recipe the checkpoint was calibrated for);
* ``reference`` -- pure PyTorch: dequantize (bit-exact reference), then ``F.linear``. Correct everywhere,
  slow; strict mode refuses it on a server.

The choice is a plain attribute of each module (``module.backend``); no global switch, no environment
variable, no patching.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .numerics import GROUP_SIZE, dequantize_fp8, dequantize_nvfp4, pack_codes, round_to_e2m1

REFERENCE = "reference"
TRITON = "triton-w4a16"
NATIVE = "native-nvfp4"
BACKENDS = (REFERENCE, TRITON, NATIVE)


def native_nvfp4_supported(capability: tuple[int, int] | None) -> bool:
    """sm100+ and a torch that has the packed FP4 dtype and ``_scaled_mm``."""
    return (
        capability is not None
        and capability >= (10, 0)
        and hasattr(torch, "float4_e2m1fn_x2")
        and hasattr(torch, "_scaled_mm")
    )


def select_backend(
    device: torch.device | str,
    *,
    capability: tuple[int, int] | None = None,
    triton_available: bool | None = None,
) -> str:
    """The backend for NVFP4 modules on ``device``. ``capability``/``triton_available`` default to what this
    machine reports (tests pass them to play another machine)."""
    device = torch.device(device)
    if device.type != "cuda":
        return REFERENCE
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    if native_nvfp4_supported(capability):
        return NATIVE
    if triton_available is None:
        from ..kernels import available

        triton_available = available()
    return TRITON if triton_available else REFERENCE


# -- forwards -----------------------------------------------------------------------------------------


def _meta_out(module: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.empty((*x.shape[:-1], module.out_features), dtype=x.dtype, device="meta")


def nvfp4_forward(module: Any, x: torch.Tensor) -> torch.Tensor:
    weight, scale = module.packed()
    gscale, reciprocal = module.global_scale()
    if x.device.type == "meta" or weight.device.type == "meta":
        return _meta_out(module, x)
    if module.backend == TRITON:
        return module.kernel_layer(weight, scale, gscale, reciprocal, module.kernel_workspace(weight.device))(x)
    if module.backend == NATIVE:
        return native_nvfp4_linear(module, x)
    dense = dequantize_nvfp4(weight, scale, gscale, in_features=module.in_features, dtype=x.dtype, reciprocal=reciprocal)
    return F.linear(x, dense, module.bias)


def fp8_forward(module: Any, x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "meta" or module.weight.device.type == "meta":
        return _meta_out(module, x)
    return F.linear(x, dequantize_fp8(module.weight, module.weight_scale, x.dtype), module.bias)


# -- sm100+ native path ------------------------------------------------------------------------------


def to_blocked(scales: torch.Tensor) -> torch.Tensor:
    """Rearrange a (rows, cols) block-scale matrix into the 128 x 4 tiled layout the FP4 tensor-core GEMM
    reads (rows padded to 128, cols to 4, each 128 x 4 tile stored as 32 x 16), flattened."""
    rows, cols = scales.shape
    row_blocks, col_blocks = -(-rows // 128), -(-cols // 4)
    padded = scales.new_zeros((row_blocks * 128, col_blocks * 4))
    padded[:rows, :cols] = scales
    blocks = padded.view(row_blocks, 128, col_blocks, 4).permute(0, 2, 1, 3)
    return blocks.reshape(-1, 4, 32, 4).transpose(1, 2).reshape(-1, 32, 16).flatten()


def quantize_activations(x2: torch.Tensor, input_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) activations -> (packed uint8 (M, K/2), float8_e4m3fn block scales (M, K/16)) with the
    checkpoint's static per-tensor ``input_scale`` (what the exporter calibrated), on the device."""
    m, k = x2.shape
    blocks = x2.float().view(m, k // GROUP_SIZE, GROUP_SIZE)
    block_scale = (blocks.abs().amax(-1) / (6.0 * input_scale)).clamp(min=2**-9, max=448.0).to(torch.float8_e4m3fn)
    scaled = blocks / (block_scale.float() * input_scale).unsqueeze(-1)
    return pack_codes(round_to_e2m1(scaled.view(m, k))), block_scale


def native_nvfp4_linear(module: Any, x: torch.Tensor) -> torch.Tensor:
    """W4A4 on sm100+: NVFP4 activations x NVFP4 weights on the FP4 tensor cores (``torch._scaled_mm``)."""
    weight, scale = module.packed()
    gscale, reciprocal = module.global_scale()
    input_scale = getattr(module, "input_scale", None)
    if input_scale is None:
        input_scale = 1.0 / module.input_global_scale
    w_global = 1.0 / gscale if reciprocal else gscale
    k = module.in_features
    x2 = x.reshape(-1, k)
    kp = weight.shape[1] * 2
    if kp != k:
        x2 = F.pad(x2, (0, kp - k))
    xq, xs = quantize_activations(x2, input_scale.reshape(()))
    fp4 = torch.float4_e2m1fn_x2
    out = torch._scaled_mm(
        xq.view(fp4),
        weight.view(fp4).t(),
        to_blocked(xs.view(torch.uint8)).view(torch.float8_e4m3fn),
        to_blocked(scale.view(torch.uint8)).view(torch.float8_e4m3fn),
        out_dtype=torch.float32,
    )
    out = out * (input_scale.reshape(()) * w_global.reshape(()))
    if module.bias is not None:
        out = out + module.bias.float()
    return out.to(x.dtype).view(*x.shape[:-1], module.out_features)


# -- kernel_report -----------------------------------------------------------------------------------


def report_entry(where: str, module: Any) -> Any:
    """A :class:`hybridload.serve.kernel_report.KernelEntry` saying what ``module``'s forward runs."""
    from ..kernels.kernel_entry import KERNEL, REAL, REFERENCE_PATH, KernelEntry

    if module.backend == TRITON:
        from ..kernels import w4a16

        return KernelEntry(where, "hybridload.kernels.w4a16.w4a16_linear", "hybridload", KERNEL, file=w4a16.__file__,
                           note=f"{module.quant_method}, weights packed on the GPU")
    if module.backend == NATIVE:
        return KernelEntry(where, "torch._scaled_mm (float4_e2m1fn_x2)", "torch", REAL, version=torch.__version__,
                           note=f"{module.quant_method}, native sm100+ block-scaled FP4 GEMM")
    return KernelEntry(where, f"hybridload.quant.backends ({module.quant_method} dequantize + F.linear)", "hybridload",
                       REFERENCE_PATH, note="pure PyTorch: every call dequantizes the whole weight")
