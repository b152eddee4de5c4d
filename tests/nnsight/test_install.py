"""The nnsight patches: one reversible patch per private method, exact undo, no double wrapping, and a loud
all-or-nothing switch-off when nnsight lacks a name the integration needs."""
from __future__ import annotations

import subprocess
import sys
import types
import warnings

import pytest

import hybridload
from hybridload.hooks.patch import MARKER, is_patched
from hybridload.integrations import nnsight as integration

PATCHED = {
    "HuggingFaceModel": ("_load_meta", "_load", "_remoteable_model_key", "_config", "_hub_parameter_count",
                         "_remoteable_get_env", "_remoteable_set_env"),
    "TransformersModel": ("_load_meta", "_load", "_loaded_preprocessors", "_remoteable_get_env", "_remoteable_set_env"),
}


def _classes():
    from nnsight.modeling.huggingface import HuggingFaceModel
    from nnsight.modeling.transformers import TransformersModel

    return {"HuggingFaceModel": HuggingFaceModel, "TransformersModel": TransformersModel}


def _function(entry):
    return getattr(entry, "__func__", entry)


def test_uninstall_restores_nnsight_exactly_and_install_patches_again():
    classes = _classes()
    patched = {(c, n): classes[c].__dict__[n] for c, names in PATCHED.items() for n in names}
    assert all(is_patched(v) for v in patched.values())
    originals = {key: _function(value).__wrapped__ for key, value in patched.items()}

    hybridload.uninstall()
    try:
        for (cls_name, name), original in originals.items():
            entry = classes[cls_name].__dict__.get(name)
            if cls_name == "HuggingFaceModel" and name.startswith("_remoteable_") and name.endswith("_env"):
                assert entry is None  # inherited from Remotable before hybridload, inherited again after
            else:
                assert _function(entry) is original, (cls_name, name)
    finally:
        hybridload.install()
    for key in patched:
        function = _function(classes[key[0]].__dict__[key[1]])
        assert is_patched(function) and function.__wrapped__ is originals[key]


def test_patching_again_does_not_wrap_twice():
    classes = _classes()
    before = {name: classes["TransformersModel"].__dict__[name] for name in PATCHED["TransformersModel"]}
    import nnsight.modeling.huggingface as hf_module
    import nnsight.modeling.transformers as tf_module

    integration.patch_huggingface(hf_module)
    integration.patch_transformers(tf_module)
    assert {name: classes["TransformersModel"].__dict__[name] for name in before} == before


def test_subclasses_inherit_the_patches():
    from nnsight import LanguageModel

    assert getattr(LanguageModel._load_meta, MARKER) and getattr(LanguageModel._remoteable_set_env, MARKER)


def test_import_hybridload_stays_light():
    """Registering the nnsight patches imports neither nnsight, torch nor transformers."""
    code = (
        "import sys, hybridload; from hybridload.integrations import install; "
        "assert hybridload.is_installed() and install._hook.watches('nnsight.modeling.transformers'); "
        "print(sorted(m for m in ('nnsight', 'torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_release_missing_a_private_name_turns_the_integration_off_loudly(monkeypatch):
    """All or nothing: a changed nnsight leaves nnsight exactly as it is and says why (doctor reads it)."""

    class TransformersModel:
        def _load_meta(self, repo_id, *args, **kwargs):
            return "nnsight's own"

    module = types.ModuleType(integration.TRANSFORMERS_MODULE)
    module.TransformersModel = TransformersModel
    monkeypatch.setattr(integration, "_status", {})
    with pytest.warns(RuntimeWarning, match="integration is off .*lacks .*TransformersModel._wrap"):
        integration.patch_transformers(module)
    assert not is_patched(TransformersModel.__dict__["_load_meta"])
    assert "lacks" in integration.status()[integration.TRANSFORMERS_MODULE]


def test_an_nnsight_outside_the_supported_range_turns_the_integration_off(monkeypatch):
    import importlib.metadata

    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.9.0" if name == "nnsight" else real_version(name))
    monkeypatch.setattr(integration, "_status", {})
    import nnsight.modeling.transformers as tf_module

    with pytest.warns(RuntimeWarning, match="outside the supported range"):
        assert integration._usable(tf_module) is False


def test_the_supported_nnsight_is_on():
    import nnsight.modeling.transformers as tf_module

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert integration._usable(tf_module) is True
    assert integration.status()[integration.TRANSFORMERS_MODULE] == "on"


def test_uninstall_forgets_the_integrations_process_caches(monkeypatch):
    from hybridload.integrations import nnsight_handshake, nnsight_plan

    calls = []
    monkeypatch.setattr(nnsight_plan, "forget_pins", lambda: calls.append("pins"))
    monkeypatch.setattr(nnsight_handshake, "forget_rebuilt", lambda: calls.append("rebuilt"))
    hybridload.uninstall()
    try:
        assert calls == ["pins", "rebuilt"]
    finally:
        hybridload.install()
