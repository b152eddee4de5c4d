"""Real packages are never shadowed, installed-but-broken ones are stubbed, unregistered ones fail as usual."""
from __future__ import annotations

import importlib
import sys

import pytest
import torch

import hybridload
from fixtures.building import build, namespace_of, parameter_shapes
from fixtures.remote_code import BROKEN_FAILURES, describe, expected_parameter_shapes, write_remote_model
from fixtures.shim_state import stand_in_modules
from hybridload.shim.packages import kernel_packages
from hybridload.shim.standins import is_stand_in


def test_a_working_default_package_is_not_shadowed(tmp_path, fake_site):
    fake_site.working("causal_conv1d")  # a default kernel name, really importable here
    folder = write_remote_model(tmp_path, "hymba")
    with hybridload.kernel_shim() as report:
        model = build(folder)
        assert not is_stand_in(sys.modules["causal_conv1d"])
    assert "causal_conv1d" not in report.packages
    assert report.packages == sorted(set(describe("hymba").kernel_packages) - {"causal_conv1d"})
    real_fn = namespace_of(model)["causal_conv1d_fn"]
    assert not is_stand_in(real_fn) and real_fn.__module__ == "causal_conv1d"
    x, w = torch.randn(1, 4, 6), torch.randn(4, 3)
    assert real_fn(x, w, activation="silu").shape == (1, 4, 6)  # the real function runs
    assert parameter_shapes(model) == expected_parameter_shapes(folder)


def test_a_working_registered_package_is_not_shadowed(fake_site):
    name = fake_site.working("hl_fixture_real_kernels", register=True)
    assert name in kernel_packages()
    with hybridload.kernel_shim() as report:
        module = importlib.import_module(name)
    assert module.HYBRIDLOAD_FIXTURE_REAL_PACKAGE is True and not is_stand_in(module)
    assert report.packages == []
    assert sys.modules[name] is module  # a real import stays imported, like any import


@pytest.mark.parametrize("failure", BROKEN_FAILURES)
def test_a_broken_registered_package_is_stubbed(failure, tmp_path, fake_site):
    name = fake_site.broken(f"hl_fixture_broken_{failure}", failure, register=True)
    folder = write_remote_model(tmp_path, "broken_install", kernel_package=name)
    with hybridload.kernel_shim() as report:
        model = build(folder)
        # the half-imported real submodules were removed; everything under the name is a stand-in now
        assert [m for m in sys.modules if m.split(".")[0] == name and not is_stand_in(sys.modules[m])] == []
    assert report.packages == [name]
    assert "fails to import" in report.reasons[name]
    assert parameter_shapes(model) == expected_parameter_shapes(folder)
    fn = namespace_of(model)["selective_scan_fn"]
    assert is_stand_in(fn) and fn.__hybridload_package__ == name
    with pytest.raises(hybridload.KernelUnavailableError, match=f"'{name}' is installed but fails to import"):
        fn(torch.ones(2))
    assert [m for m in sys.modules if m.split(".")[0] == name] == []


def test_broken_mamba_ssm_with_skipped_cuda_build_is_stubbed(tmp_path, fake_site):
    """The real-world case: mamba_ssm installed, its ``import selective_scan_cuda`` fails."""
    fake_site.broken("mamba_ssm", "missing_extension")
    folder = write_remote_model(tmp_path, "broken_install", kernel_package="mamba_ssm")
    with hybridload.kernel_shim() as report:
        model = build(folder)
    assert report.packages == ["mamba_ssm"]
    assert "selective_scan_cuda" in report.reasons["mamba_ssm"]  # why: the missing extension
    assert is_stand_in(namespace_of(model)["selective_scan_fn"])
    # outside the window the package fails exactly as it does without hybridload
    with pytest.raises(ImportError, match="selective_scan_cuda"):
        importlib.import_module("mamba_ssm")


def test_broken_package_after_an_earlier_failed_import_is_stubbed(fake_site):
    """A failed real import before the window (user code, or transformers' own
    ``use_kernel_func_from_hub_with_fallback`` probing ``mamba_ssm``) leaves ``<pkg>.ops`` half-imported in
    sys.modules; the shim must still serve stand-ins for every submodule."""
    name = fake_site.broken("hl_fixture_stale_partial", "missing_extension", register=True)
    with pytest.raises(ImportError):
        importlib.import_module(name)
    assert f"{name}.ops" in sys.modules  # what plain Python leaves behind
    with hybridload.kernel_shim() as report:
        deep = importlib.import_module(f"{name}.ops.triton.layernorm_gated")
        assert is_stand_in(deep) and is_stand_in(deep.rmsnorm_fn)
        assert is_stand_in(sys.modules[f"{name}.ops"])
    assert report.packages == [name]


def test_env_var_registers_packages(tmp_path, fake_site, monkeypatch):
    name = fake_site.broken("hl_fixture_env_kernels", "undefined_symbol")
    assert name not in kernel_packages()
    monkeypatch.setenv("HYBRIDLOAD_KERNEL_PACKAGES", f"other_pkg, {name}")
    assert name in kernel_packages()
    with hybridload.kernel_shim() as report:
        build(write_remote_model(tmp_path, "broken_install", kernel_package=name))
    assert report.packages == [name]


def test_unregistering_restores_normal_failure(tmp_path, fake_site):
    from hybridload.shim.packages import unregister_kernel_package

    name = fake_site.broken("hl_fixture_unregistered", "oserror", register=True)
    unregister_kernel_package(name)
    assert name not in kernel_packages()
    with pytest.raises(OSError, match="libcudart"):
        build(write_remote_model(tmp_path, "broken_install", kernel_package=name))


def test_missing_non_kernel_package_still_fails_normally(remote_model):
    info = describe("unregistered_missing")
    with pytest.raises(ImportError) as raised:
        build(remote_model("unregistered_missing"))
    assert not isinstance(raised.value, hybridload.KernelUnavailableError)
    assert info.plain_error_fragment in str(raised.value)
    with hybridload.kernel_shim():
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(info.plain_error_fragment)  # the made-up non-kernel package
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("einops_not_a_kernel_package")
    assert stand_in_modules() == []
