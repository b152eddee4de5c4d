"""The hybridload.kernels package surface: importable without triton, binding table, availability."""
from __future__ import annotations

import inspect
import sys

import pytest
import torch

import hybridload

import hybridload.kernels as kernels
from hybridload.errors import KernelUnavailableError
from hybridload.kernels import _runtime
from hybridload.reference import causal_conv1d as ref_conv
from hybridload.reference import mamba_ssm as ref_mamba
from hybridload.shim import standins
from hybridload.substitutes import triton_for


def test_public_functions_import_without_triton(no_triton: None) -> None:
    for name in ("rmsnorm_fn", "layernorm_fn", "causal_conv1d_fn", "causal_conv1d_update", "selective_state_update"):
        fn = getattr(kernels, name)
        assert callable(fn) and fn.__name__ == name
    for target in set(kernels.FALLBACKS.values()):
        assert callable(kernels.resolve(target))
    assert sys.modules["triton"] is None  # nothing above tried to (re)import it
    assert not any(n.endswith("_triton") and n.startswith("hybridload.kernels.") for n in sys.modules)


def test_fallback_table_names_the_function_it_replaces() -> None:
    assert set(kernels.FALLBACKS) >= {
        "mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn",
        "mamba_ssm.ops.triton.layernorm_gated.layernorm_fn",
        "mamba_ssm.ops.triton.selective_state_update.selective_state_update",
        "causal_conv1d.causal_conv1d_fn",
        "causal_conv1d.causal_conv1d_update",
    }
    for path, target in kernels.FALLBACKS.items():
        fn = triton_for(path)
        assert fn is kernels.resolve(target)
        assert fn.__name__ == path.rsplit(".", 1)[1]
        assert fn.__module__.startswith("hybridload.kernels.")


@pytest.mark.parametrize("path", sorted(kernels.FALLBACKS))
def test_fallback_signature_equals_the_reference(path: str) -> None:
    """Same parameter names, order, kinds and defaults as the real function (the references mirror it)."""
    references = {**ref_mamba.REFERENCES, **ref_conv.REFERENCES}
    reference = references[path]
    fallback = triton_for(path)
    ours = [(p.name, p.kind, p.default) for p in inspect.signature(fallback).parameters.values()]
    theirs = [(p.name, p.kind, p.default) for p in inspect.signature(reference).parameters.values()]
    assert ours == theirs


def test_fallback_for_unknown_symbol_is_none() -> None:
    assert triton_for("mamba_ssm.ops.triton.layernorm_gated.RMSNorm") is None


@pytest.mark.parametrize("target", ["os:getcwd", "hybridload.kernels.layernorm_gated", "hybridload.kernels.x:"])
def test_resolve_rejects_targets_outside_the_package(target: str) -> None:
    with pytest.raises(ValueError, match="module:function"):
        kernels.resolve(target)


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_kernel"):
        kernels.no_such_kernel  # noqa: B018


def test_dir_lists_the_public_api() -> None:
    assert {"FALLBACKS", "available", "rmsnorm_fn", "selective_state_update", "KernelArgumentError"} <= set(dir(kernels))


def test_require_triton_without_triton_raises_kernel_unavailable(no_triton: None) -> None:
    with pytest.raises(KernelUnavailableError, match="need the 'triton' package") as info:
        _runtime.require_triton()
    assert isinstance(info.value, ImportError) and info.value.name == "triton"


def test_require_triton_rejects_a_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = standins.new_module("triton", "triton", "absent", None)
    monkeypatch.setitem(sys.modules, "triton", fake)
    monkeypatch.setitem(sys.modules, "triton.language", standins.new_module("triton.language", "triton", "absent", None))
    # installed (and transformers imported: install() takes the shim's import guards then), the guards already
    # hand hybridload the truth instead of the stand-in ...
    import transformers  # noqa: F401

    assert hybridload.is_installed()
    with pytest.raises(KernelUnavailableError, match="absent or broken") as truthful:
        _runtime.require_triton()
    assert "stand-in" not in str(truthful.value)
    # ... and without them (uninstalled), require_triton itself refuses the stand-in
    hybridload.uninstall()
    try:
        with pytest.raises(KernelUnavailableError, match="stand-in"):
            _runtime.require_triton()
        assert kernels.available() is False
    finally:
        hybridload.install()


def test_available_is_false_without_triton(no_triton: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert kernels.available() is False


def test_available_is_false_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert kernels.available() is False


def test_available_with_a_real_looking_triton_and_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """available() is exactly 'CUDA visible and a non-stand-in triton (with triton.language) imports'."""
    import types

    triton = types.ModuleType("triton")
    language = types.ModuleType("triton.language")
    monkeypatch.setitem(sys.modules, "triton", triton)
    monkeypatch.setitem(sys.modules, "triton.language", language)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert kernels.available() is True
    assert _runtime.require_triton() is triton


def test_load_launcher_needs_triton(no_triton: None) -> None:
    with pytest.raises(KernelUnavailableError):
        _runtime.load_launcher("_layernorm_gated_triton")
