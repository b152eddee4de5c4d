"""Backend choice per device (sm100+ native, Hopper Triton, CPU reference), kernel_report and strict mode."""
from __future__ import annotations

import pytest
import torch

from hybridload.quant import backends
from hybridload.quant.modules import NVFP4Linear
from hybridload.quant.numerics import dequantize_nvfp4, pack_codes, quantize_nvfp4, round_to_e2m1, unpack_codes
from hybridload.kernels.kernel_entry import KERNEL, REAL, REFERENCE_PATH
from hybridload.serve.kernel_report import KernelReport


@pytest.mark.parametrize(
    "capability,triton,expected",
    [
        ((9, 0), True, backends.TRITON),  # H100 / H200
        ((8, 9), True, backends.TRITON),
        ((9, 0), False, backends.REFERENCE),  # no triton: the slow path, which strict mode refuses
        ((10, 0), True, backends.NATIVE),  # B200
        ((12, 0), False, backends.NATIVE),
    ],
)
def test_cuda_backend_choice_by_capability(capability, triton, expected) -> None:
    if expected == backends.NATIVE and not hasattr(torch, "float4_e2m1fn_x2"):
        pytest.fail("this torch has no float4_e2m1fn_x2; the project's torch floor for NVFP4 is 2.8")
    assert backends.select_backend("cuda:0", capability=capability, triton_available=triton) == expected


def test_cpu_is_always_the_reference() -> None:
    assert backends.select_backend("cpu") == backends.REFERENCE
    assert not backends.native_nvfp4_supported(None)
    assert not backends.native_nvfp4_supported((9, 0))


def _module(k: int = 64, n: int = 48, bias: bool = True) -> NVFP4Linear:
    gen = torch.Generator().manual_seed(1)
    module = NVFP4Linear(k, n, bias=bias, dtype=torch.float32)
    packed, scale, scale_2 = quantize_nvfp4(torch.randn(n, k, generator=gen))
    with torch.no_grad():
        module.weight.copy_(packed)
        module.weight_scale.copy_(scale)
        module.weight_scale_2.copy_(scale_2)
        module.input_scale.fill_(2.0 / 2688)
        if bias:
            module.bias.copy_(torch.randn(n, generator=gen))
    return module


def test_reference_forward_is_dequantize_then_linear() -> None:
    module = _module()
    x = torch.randn(3, 64)
    dense = dequantize_nvfp4(module.weight, module.weight_scale, module.weight_scale_2, in_features=64)
    assert torch.equal(module(x), torch.nn.functional.linear(x, dense, module.bias))


def test_kernel_report_and_strict_verdict_follow_the_backend() -> None:
    model = torch.nn.Sequential(_module(), _module())
    model[1].backend = backends.TRITON
    entries = [model[0].hybridload_kernel_entry("0"), model[1].hybridload_kernel_entry("1")]
    assert [e.status for e in entries] == [REFERENCE_PATH, KERNEL]
    assert entries[1].package == "hybridload" and entries[1].target == "hybridload.kernels.w4a16.w4a16_linear"
    report = KernelReport(entries)
    assert [e.symbol for e in report.unacceptable()] == ["0"]  # strict refuses the reference path only
    model[0].backend = backends.NATIVE
    native = model[0].hybridload_kernel_entry("0")
    assert native.status == REAL and native.package == "torch"
    assert not KernelReport([native, entries[1]]).unacceptable()


def test_kernel_report_walks_hybridload_modules() -> None:
    from hybridload.serve.kernel_report import kernel_report

    model = torch.nn.Sequential(_module(), torch.nn.Linear(4, 4))
    model[0].backend = backends.TRITON
    report = kernel_report(model)
    assert [(e.symbol, e.status) for e in report.entries] == [("0", KERNEL)]
    assert "hybridload triton kernel" in report.format()


def test_native_path_helpers_quantize_activations_and_tile_scales() -> None:
    """The sm100+ path cannot run here; its pure-torch parts can: activation quantization (the reference
    rounding with the static input scale) and the 128 x 4 tiled scale layout, which is a permutation."""
    x = torch.randn(5, 64)
    input_scale = x.abs().amax() / 2688
    packed, scales = backends.quantize_activations(x, input_scale)
    assert packed.shape == (5, 32) and scales.shape == (5, 4) and scales.dtype == torch.float8_e4m3fn
    back = dequantize_nvfp4(packed, scales, input_scale)
    assert ((back - x).abs() <= x.abs().amax() / 4).all()
    assert torch.equal(unpack_codes(packed), round_to_e2m1((x.view(5, 4, 16) / (scales.float() * input_scale).unsqueeze(-1)).view(5, 64)))
    raw = torch.arange(130 * 6, dtype=torch.int32).view(130, 6)
    blocked = backends.to_blocked(raw)
    assert blocked.numel() == 256 * 8  # rows padded to 128, cols to 4
    assert sorted(v for v in blocked.tolist() if v) == sorted(v for v in raw.view(-1).tolist() if v)
    # element (r, c) of a 128x4 tile lands at (r % 32) * 16 + (r // 32) * 4 + c within it
    assert blocked[(5 % 32) * 16 + (5 // 32) * 4 + 2].item() == raw[5, 2].item()
    assert blocked[(40 % 32) * 16 + (40 // 32) * 4 + 3].item() == raw[40, 3].item()
    assert pack_codes(unpack_codes(packed)).equal(packed)


def test_kernel_workspace_is_one_zeroed_tensor_per_layer_outside_the_tree() -> None:
    """The split-K counters a layer hands the W4A16 kernels: kept across calls, one per layer and device, and
    not a parameter or buffer (the served tree and state dict stay the checkpoint's)."""
    from hybridload.kernels.w4a16 import w4a16_workspace_size

    first, second = NVFP4Linear(64, 300), NVFP4Linear(64, 300)
    names = set(first.state_dict()) | {name for name, _ in first.named_buffers()}
    space = first.kernel_workspace(torch.device("cpu"))
    assert space.dtype == torch.int32 and space.numel() == w4a16_workspace_size(300) and not space.any()
    assert first.kernel_workspace(torch.device("cpu")) is space
    assert second.kernel_workspace(torch.device("cpu")) is not space
    assert set(first.state_dict()) | {name for name, _ in first.named_buffers()} == names
    assert first.kernel_workspace(torch.device("meta")).device.type == "meta"  # a new device gets its own
