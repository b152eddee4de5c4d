"""``import hybridload``: ``from_config``/``_from_config`` build inside the shim, ``from_pretrained`` never does."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM
from transformers.dynamic_module_utils import get_class_from_dynamic_module

import hybridload
from fixtures.building import build, load_config, parameter_shapes
from fixtures.remote_code import expected_parameter_shapes
from fixtures.shim_state import stand_in_modules

SRC = str(Path(hybridload.__file__).resolve().parents[1])
TESTS = str(Path(__file__).resolve().parents[1])


def run_python(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([SRC, TESTS]), **env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_hybridload_imports_neither_torch_nor_transformers():
    out = run_python(
        """
        import json, sys
        import hybridload
        print(json.dumps({"installed": hybridload.is_installed(),
                          "heavy": sorted(m for m in ("torch", "transformers", "accelerate") if m in sys.modules)}))
        """
    )
    assert out == {"installed": True, "heavy": []}


def test_hybridload_disable_leaves_transformers_alone(tmp_path):
    out = run_python(
        f"""
        import json, torch
        import hybridload
        from transformers import AutoConfig, AutoModelForCausalLM
        from fixtures.remote_code import write_remote_model
        folder = write_remote_model({str(tmp_path)!r}, "hymba")
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        try:
            with torch.device("meta"):
                AutoModelForCausalLM.from_config(config, trust_remote_code=True)
            error = None
        except ImportError as exc:
            error = type(exc).__name__ + ": " + str(exc)
        print(json.dumps({{"installed": hybridload.is_installed(), "error": error}}))
        """,
        HYBRIDLOAD_DISABLE="1",
    )
    assert out["installed"] is False
    assert out["error"].startswith("ImportError: This modeling file requires") and "flash_attn" in out["error"]


@pytest.mark.parametrize("auto", [AutoModelForCausalLM, AutoModel])
def test_from_config_builds_without_an_explicit_window(auto, remote_model):
    folder = remote_model("fast_path_guard")
    with torch.device("meta"):
        model = auto.from_config(load_config(folder), trust_remote_code=True)
    assert parameter_shapes(model) == expected_parameter_shapes(folder, head=auto is AutoModelForCausalLM)
    assert stand_in_modules() == []


def test_private_from_config_runs_inside_the_shim(remote_model):
    """``PreTrainedModel._from_config`` is wrapped too: kernels imported lazily in ``__init__`` work.

    The class is taken in one window; ``_from_config`` runs later with no window of its own but the
    integration's, and the model's ``__init__`` imports from ``mamba_ssm`` at that point.
    """
    folder = remote_model("nemotron_h")
    config = load_config(folder)
    with hybridload.kernel_shim():
        model_class = get_class_from_dynamic_module(config.auto_map["AutoModelForCausalLM"], folder)

    def lazy_import_init(self, *args, **kwargs):
        from mamba_ssm.ops.triton.layernorm_gated import RMSNorm  # a lazy kernel import, as some repos do

        self_class_init(self, *args, **kwargs)
        self.lazy_kernel_class = RMSNorm

    self_class_init = model_class.__init__
    lazy_class = type("LazyImportModel", (model_class,), {"__init__": lazy_import_init})
    with torch.device("meta"):
        model = lazy_class._from_config(config)
    assert model.lazy_kernel_class.__hybridload_package__ == "mamba_ssm"
    assert parameter_shapes(model) == expected_parameter_shapes(folder)

    hybridload.uninstall()
    try:
        with pytest.raises(ModuleNotFoundError, match="mamba_ssm"), torch.device("meta"):
            lazy_class._from_config(config)
    finally:
        hybridload.install()


def test_from_pretrained_is_not_shimmed(remote_model):
    """A real load must bind real kernels: without them it fails as plain transformers does."""
    folder = remote_model("hymba")
    with pytest.raises(ImportError, match="flash_attn") as raised:
        AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert not isinstance(raised.value, hybridload.KernelUnavailableError)
    assert stand_in_modules() == []


def test_uninstall_reverses_and_install_restores(remote_model):
    from transformers.modeling_utils import PreTrainedModel
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    folder = remote_model("hymba")
    config = load_config(folder)
    patched_from_config = _BaseAutoModelClass.__dict__["from_config"]
    patched_private = PreTrainedModel.__dict__["_from_config"]
    assert getattr(patched_from_config.__func__, "__hybridload_patch__", False)
    assert getattr(patched_private.__func__, "__hybridload_patch__", False)
    hybridload.uninstall()
    try:
        assert not hybridload.is_installed()
        original = _BaseAutoModelClass.__dict__["from_config"].__func__
        assert original is patched_from_config.__func__.__wrapped__
        assert PreTrainedModel.__dict__["_from_config"].__func__ is patched_private.__func__.__wrapped__
        with pytest.raises(ImportError, match="flash_attn"), torch.device("meta"):
            AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    finally:
        hybridload.install()
    assert hybridload.is_installed()
    assert parameter_shapes(build(folder, config=config)) == expected_parameter_shapes(folder)
