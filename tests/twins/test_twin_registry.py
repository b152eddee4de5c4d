"""Inside a shim window, kernel classes build as their twins; unregistered ones still raise; users add twins."""
from __future__ import annotations

import pytest
import torch

import hybridload
from hybridload.errors import KernelUnavailableError
from hybridload.substitutes import unregister
from hybridload.shim.kernel_shim import kernel_shim
from hybridload.twins import DEFAULT_TWINS, real_name


class _Layer(torch.nn.Module):
    """Builds kernel classes in ``__init__``, the way remote-code layers do."""

    def __init__(self, symbol: str, *args: object, **kwargs: object) -> None:
        super().__init__()
        module, _, name = symbol.rpartition(".")
        cls = getattr(__import__(module, fromlist=[name]), name)
        self.inner = cls(*args, **kwargs)


def test_registered_kernel_classes_build_as_twins_under_every_import_path() -> None:
    with kernel_shim() as report:
        a = _Layer("fla.modules.ShortConvolution", 64, 4, device="meta", dtype=torch.bfloat16).inner
        b = _Layer("fla.modules.convolution.ShortConvolution", hidden_size=32, kernel_size=3).inner
        c = _Layer("apex.normalization.FusedRMSNorm", 16).inner
    assert type(a) is type(b) is DEFAULT_TWINS["fla.modules.ShortConvolution"]
    assert isinstance(a, torch.nn.Conv1d)
    assert a.weight.device.type == "meta" and a.weight.dtype == torch.bfloat16 and a.weight.shape == (64, 1, 4)
    assert b.weight.dtype == torch.float32 and b.weight.device.type == "cpu"
    assert real_name(type(c)) == "apex.normalization.fused_layer_norm.FusedRMSNorm"
    assert "fla.modules.convolution.ShortConvolution" in report.stand_ins["fla"]


def test_an_unregistered_kernel_class_still_raises_the_clear_error() -> None:
    with kernel_shim(), pytest.raises(KernelUnavailableError) as caught:
        _Layer("fla.modules.LongConvolution", 8, 16)
    assert "fla.modules.LongConvolution" in str(caught.value) and "stand-in" in str(caught.value)


def test_users_register_a_twin_for_another_class() -> None:
    # the example of docs/twins.md
    @hybridload.register_twin("fla.modules.LongConvolution")
    class LongConvolution(torch.nn.Module):
        __hybridload_twin_of__ = "fla.modules.long_conv.LongConvolution"

        def __init__(self, hidden_size: int, l_max: int, **kwargs: object) -> None:
            super().__init__()
            self.filter = torch.nn.Parameter(torch.empty(hidden_size, l_max))

    try:
        with kernel_shim():
            built = _Layer("fla.modules.LongConvolution", 8, l_max=16).inner
        assert isinstance(built, LongConvolution) and built.filter.shape == (8, 16)
        assert real_name(type(built)) == "fla.modules.long_conv.LongConvolution"
    finally:
        unregister("fla.modules.LongConvolution", "twin")
    with kernel_shim(), pytest.raises(KernelUnavailableError):
        _Layer("fla.modules.LongConvolution", 8, 16)


def test_a_user_registration_overrides_the_default_twin() -> None:
    class Mine(torch.nn.Conv1d):
        def __init__(self, hidden_size: int, kernel_size: int, **kwargs: object) -> None:
            super().__init__(hidden_size, hidden_size, kernel_size, groups=hidden_size)

    hybridload.register_twin("fla.modules.ShortConvolution", Mine)
    try:
        with kernel_shim():
            assert type(_Layer("fla.modules.ShortConvolution", 4, 2).inner) is Mine
            assert type(_Layer("fla.modules.convolution.ShortConvolution", 4, 2).inner) is DEFAULT_TWINS[
                "fla.modules.ShortConvolution"
            ]
    finally:
        unregister("fla.modules.ShortConvolution", "twin")


def test_remote_code_subclassing_a_twinned_class_builds_on_the_twin() -> None:
    with kernel_shim():
        from fla.modules import RMSNorm

        class KimiNorm(RMSNorm):  # remote code extending a kernel class
            def describe(self) -> str:
                return f"kimi norm over {self.hidden_size}"

        holder = torch.nn.Module()
        holder.inner = KimiNorm(8, eps=1e-6)
    norm = holder.inner
    assert isinstance(norm, DEFAULT_TWINS["fla.modules.RMSNorm"]) and norm.describe() == "kimi norm over 8"
    assert real_name(type(norm)).endswith("KimiNorm")  # the subclass keeps its own name in signatures
    x = torch.randn(2, 8)
    torch.testing.assert_close(norm(x), torch.nn.functional.rms_norm(x, (8,), norm.weight, 1e-6))
