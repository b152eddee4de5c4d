"""What stand-ins do when used: kernel calls raise a clear typed error; meta calls run registered references."""
from __future__ import annotations

import importlib
import importlib.util
import inspect

import pytest
import torch

import hybridload
from fixtures.building import build, namespace_of
from fixtures.remote_code import PATTERNS, describe
from hybridload.shim.standins import is_stand_in

BUILDABLE = [p for p in PATTERNS if describe(p).builds_under_shim]

# the kernel a real forward reaches first, per pattern (package, symbol path fragment)
FIRST_KERNEL = {
    "nemotron_h": ("mamba_ssm", "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn"),
    "hymba": ("flash_attn", "flash_attn.flash_attn_func"),
    "kimi_linear_imports_only": ("fla", "fla.ops.kda.gate.fused_kda_gate"),
    "triton_kernels": ("triton", "_rms_norm_fwd_kernel"),
    "fast_path_guard": ("flash_attn", "flash_attn.flash_attn_func"),
    "broken_install": ("mamba_ssm", "mamba_ssm.ops.selective_scan_interface.selective_scan_fn"),
}
HYBRIDLOAD_KERNELS = "hl_fixture_kernels"  # a made-up, registered kernel package: no default twin/reference


def assert_clear_kernel_error(error: BaseException, package: str, symbol: str) -> None:
    assert isinstance(error, hybridload.KernelUnavailableError)
    assert isinstance(error, ImportError) and isinstance(error, RuntimeError)
    message = str(error)
    assert f"'{package}'" in message, message
    assert symbol in message, message
    assert "stand-in" in message
    assert "not installed" in message or "fails to import" in message  # why a stand-in was used
    assert "install" in message and "GPU" in message  # what to do


@pytest.mark.parametrize("pattern", BUILDABLE)
def test_running_the_meta_model_for_real_raises_kernel_unavailable(pattern, remote_model):
    model = build(remote_model(pattern)).to_empty(device="cpu")
    package, symbol = FIRST_KERNEL[pattern]
    with pytest.raises(hybridload.KernelUnavailableError) as raised:
        model(torch.zeros(1, 5, dtype=torch.long))
    assert_clear_kernel_error(raised.value, package, symbol)


@pytest.mark.parametrize("pattern", BUILDABLE)
def test_every_served_symbol_raises_on_real_tensors(pattern, remote_model):
    namespace = namespace_of(build(remote_model(pattern)))
    x = torch.ones(2, 3)
    for symbol in describe(pattern).symbols:
        stand_in = namespace[symbol.rpartition(".")[2]]
        with pytest.raises(hybridload.KernelUnavailableError) as raised:
            stand_in(x, x)
        assert_clear_kernel_error(raised.value, symbol.split(".")[0], symbol)


def test_device_guarded_model_runs_for_real_on_cpu(remote_model):
    """A model that checks the device before calling kernels (Mamba's slow path) runs after a shimmed build."""
    model = build(remote_model("fast_path_guard", attn_layer_indices=[])).to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
        logits = model(torch.randint(0, 64, (2, 6))).logits
    assert logits.shape == (2, 6, 64) and torch.isfinite(logits).all()


def test_decorated_module_level_function_raises_when_called(remote_model):
    """fla's ``@tensor_cache`` on a module-level function: the result is a stand-in that raises on real data."""
    namespace = namespace_of(build(remote_model("kimi_linear_imports_only")))
    prepare_lens = namespace["prepare_lens"]
    assert is_stand_in(prepare_lens) and prepare_lens.__hybridload_package__ == "fla"
    assert list(inspect.signature(prepare_lens).parameters) == ["cu_seqlens"]  # the wrapped function's signature
    with pytest.raises(hybridload.KernelUnavailableError, match="'fla'"):
        prepare_lens(torch.tensor([0, 3, 5]))


def test_triton_kernel_launch_raises(remote_model):
    """``kernel[grid](...)`` and ``triton.cdiv(...)`` at run time raise the typed error, not a TypeError."""
    model = build(remote_model("triton_kernels"))
    ops = model.model.norm.forward.__globals__["rms_norm_fwd"].__globals__
    x = torch.ones(4, 16)
    with pytest.raises(hybridload.KernelUnavailableError, match="'triton'"):
        ops["rms_norm_fwd"](x, torch.ones(16))
    with pytest.raises(hybridload.KernelUnavailableError, match="'triton'"):
        ops["_square_kernel"][(1,)](x, x, 16, BLOCK=16)
    with pytest.raises(hybridload.KernelUnavailableError, match="'triton'"):
        ops["triton"].cdiv(16, 4)  # no tensors, called at run time (not from a module body)


@pytest.fixture
def made_up_kernels():
    """A registered kernel package that does not exist, with no default twins or references."""
    from hybridload.shim.packages import unregister_kernel_package

    hybridload.register_kernel_package(HYBRIDLOAD_KERNELS)
    try:
        yield HYBRIDLOAD_KERNELS
    finally:
        unregister_kernel_package(HYBRIDLOAD_KERNELS)


def test_meta_call_runs_registered_reference_and_real_call_still_raises(made_up_kernels):
    from hybridload.substitutes import unregister

    path = f"{made_up_kernels}.ops.fused_add_mul"
    calls = []

    def fused_add_mul(a, b, scale=1.0):
        calls.append((a.device.type, b.device.type))
        return (a + b) * scale

    hybridload.register_reference(path, fused_add_mul)
    try:
        with hybridload.kernel_shim():
            fn = importlib.import_module(f"{made_up_kernels}.ops").fused_add_mul
            a = torch.empty(3, 4, device="meta")
            out = fn(a, a, scale=2.0)
            assert out.is_meta and out.shape == (3, 4)
            assert list(inspect.signature(fn).parameters) == ["a", "b", "scale"]
            with pytest.raises(hybridload.KernelUnavailableError):  # never silently on real data
                fn(torch.ones(3, 4), torch.ones(3, 4))
    finally:
        unregister(path, "reference")
    assert calls == [("meta", "meta")]


def test_meta_call_without_reference_raises(made_up_kernels):
    with hybridload.kernel_shim():
        from importlib import import_module

        fn = import_module(f"{made_up_kernels}.ops").no_reference_kernel
        with pytest.raises(hybridload.KernelUnavailableError, match=HYBRIDLOAD_KERNELS):
            fn(torch.empty(2, device="meta"))


def test_stand_in_module_protocol(made_up_kernels):
    name = made_up_kernels
    with hybridload.kernel_shim() as report:
        deep = importlib.import_module(f"{name}.a.b.c.d")
        assert deep.__name__ == f"{name}.a.b.c.d"
        import hl_fixture_kernels.x.y  # noqa: F401  - ``import a.b.c`` then attribute access
        import hl_fixture_kernels as top

        assert is_stand_in(top.x.y.some_kernel)
        from hl_fixture_kernels.a.b import helper

        assert helper.__hybridload_path__ == f"{name}.a.b.helper"
        assert top.__version__ == "0.0.0" and top.__all__ == [] and top.__path__ == []
        assert top.__spec__.name == name
        spec = importlib.util.find_spec(f"{name}.a.b")
        assert spec is not None and spec.name == f"{name}.a.b"
        with pytest.raises(AttributeError):
            top.__file__  # noqa: B018 - other dunders are not invented
        assert not hasattr(top.some_fn, "__wrapped__")
    assert report.packages == [name]
    assert f"{name}.a.b.helper" in report.stand_ins[name]


def test_stand_in_symbol_protocol(made_up_kernels):
    with hybridload.kernel_shim():
        mod = importlib.import_module(f"{made_up_kernels}.ops")
        Kernel = mod.FancyLinear
        assert Kernel and Kernel is not None and bool(Kernel) is True
        assert not isinstance(torch.nn.Linear(2, 2), Kernel)
        assert inspect.signature(Kernel) is not None  # readable, does not raise
        assert is_stand_in(mod.lang.constexpr) and mod.lang.constexpr.__hybridload_path__.endswith("lang.constexpr")

    # import-time use happens in a module body: run one, as remote code would be run
    module_body = f"""
from {made_up_kernels}.ops import FancyLinear, some_decorator, decorator_factory, Config

class UserSubclass(FancyLinear):
    def extra(self):
        return 1

@some_decorator
def decorated(x):
    return x

@decorator_factory(configs=[Config({{"BLOCK": 128}}, num_warps=4)], key=["n"])
def decorated_by_factory(x, n):
    return x
"""
    namespace: dict = {"__name__": "hl_fixture_remote_module"}
    with hybridload.kernel_shim():
        exec(compile(module_body, "hl_fixture_remote_module.py", "exec"), namespace)
        with pytest.raises(hybridload.KernelUnavailableError, match="FancyLinear"):
            namespace["UserSubclass"](4, 4)
        for name in ("decorated", "decorated_by_factory"):
            fn = namespace[name]
            assert is_stand_in(fn)
            with pytest.raises(hybridload.KernelUnavailableError) as raised:
                fn(torch.ones(2), 2)
            assert name in str(raised.value)  # the error names the user's function, not just the decorator
        with pytest.raises(hybridload.KernelUnavailableError):  # a decorator factory called at run time
            namespace["decorator_factory"](block=128)


def test_unregistered_stand_in_class_instantiated_at_run_time_raises(made_up_kernels):
    with hybridload.kernel_shim():
        Conv = importlib.import_module(f"{made_up_kernels}.modules").ShortConv

        class Layer(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = Conv(hidden_size=8, kernel_size=4)

        with pytest.raises(hybridload.KernelUnavailableError, match=f"{made_up_kernels}.modules.ShortConv"):
            Layer()


def test_subclass_of_a_stand_in_class_builds_on_its_twin(made_up_kernels):
    from hybridload.substitutes import unregister

    path = f"{made_up_kernels}.modules.FancyNorm"

    class FancyNormTwin(torch.nn.Module):
        def __init__(self, hidden_size, eps=1e-6):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(hidden_size))

    module_body = f"""
from {made_up_kernels}.modules import FancyNorm

class GatedFancyNorm(FancyNorm):
    def gate(self):
        return "gated"
"""
    namespace: dict = {"__name__": "hl_fixture_remote_module"}
    hybridload.register_twin(path, FancyNormTwin)
    try:
        with hybridload.kernel_shim():
            exec(compile(module_body, "hl_fixture_remote_module.py", "exec"), namespace)
            norm = namespace["GatedFancyNorm"](8)
    finally:
        unregister(path, "twin")
    assert isinstance(norm, FancyNormTwin) and norm.gate() == "gated"
    assert tuple(norm.weight.shape) == (8,)
