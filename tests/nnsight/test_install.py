"""The patches are post-import hooks recorded in the integration's PatchSet: exact undo, no double wrapping."""
from __future__ import annotations

import subprocess
import sys

import hybridload
from hybridload.integrations.nnsight import install_nnsight

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
    assert all(getattr(_function(v), "__hybridload_patch__", False) for v in patched.values())
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
    for key, value in patched.items():
        function = _function(classes[key[0]].__dict__[key[1]])
        assert function.__hybridload_patch__ and function.__wrapped__ is originals[key]


def test_registering_again_does_not_wrap_twice():
    classes = _classes()
    before = {name: classes["TransformersModel"].__dict__[name] for name in PATCHED["TransformersModel"]}
    install_nnsight()
    from hybridload.integrations.nnsight import patch_huggingface, patch_transformers
    import nnsight.modeling.huggingface as hf_module
    import nnsight.modeling.transformers as tf_module

    patch_huggingface(hf_module)
    patch_transformers(tf_module)
    assert {name: classes["TransformersModel"].__dict__[name] for name in before} == before


def test_subclasses_inherit_the_patches():
    from nnsight import LanguageModel

    assert LanguageModel._load_meta.__hybridload_patch__ and LanguageModel._remoteable_set_env.__hybridload_patch__


def test_import_hybridload_stays_light():
    """Registering the nnsight patches imports neither nnsight, torch nor transformers."""
    code = (
        "import sys, hybridload; from hybridload.integrations import install; "
        "assert hybridload.is_installed() and 'nnsight.modeling.transformers' in install._TARGETS; "
        "print(sorted(m for m in ('nnsight', 'torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_name_missing_from_an_nnsight_release_is_skipped():
    from hybridload.integrations.nnsight import _replace

    class Wrapper:
        def kept(self) -> str:
            return "kept"

    _replace(Wrapper, "_dropped_in_this_release", lambda original: original)
    assert "_dropped_in_this_release" not in Wrapper.__dict__ and Wrapper().kept() == "kept"


def test_uninstall_forgets_the_integrations_process_caches(monkeypatch):
    import hybridload
    from hybridload.integrations import nnsight_handshake, nnsight_plan

    calls = []
    monkeypatch.setattr(nnsight_plan, "forget_pins", lambda: calls.append("pins"))
    monkeypatch.setattr(nnsight_handshake, "forget_rebuilt", lambda: calls.append("rebuilt"))
    hybridload.uninstall()
    try:
        assert calls == ["pins", "rebuilt"]
    finally:
        hybridload.install()
