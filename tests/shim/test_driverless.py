"""triton importable without an active GPU driver (a CUDA build of torch on a machine with no GPU).

For meta builds it is treated like a broken package: remote code gets stand-ins (imports, ``@triton.jit``,
``triton.runtime.driver.active`` at import all work; a kernel launched during a meta forward raises
KernelUnavailableError instead of triton's ``0 active drivers``). Everyone else gets the truth: outside the
window, in other threads and for framework probes (torch) inside it, ``import triton`` is the real module.

The test uses the real triton where this environment has it (CI runs the suite in such an environment too),
else a package made up in the test that behaves like it.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import hybridload
from hybridload.shim.packages import triton_driver_problem, unregister_kernel_package
from hybridload.shim.standins import StandInModule, is_stand_in

pytestmark = pytest.mark.real_kernel_packages

_FAKE = '''
class _Driver:
    @property
    def active(self):
        raise RuntimeError("0 active drivers ([]). There should only be one.")

class runtime:
    driver = _Driver()

class language:
    constexpr = int

def jit(fn):
    return fn
'''


@pytest.fixture
def triton_like(tmp_path, monkeypatch):
    """(package name, real?) — the real triton when it imports here without a driver, else a made-up twin."""
    from hybridload.shim.probe import reset_verdicts

    reset_verdicts()
    if importlib.util.find_spec("triton") is not None and not torch.cuda.is_available():
        import triton

        assert triton_driver_problem(triton) is not None  # the situation under test: importable, no driver
        yield "triton", True
    else:
        site = tmp_path / "site"
        (site / "hl_driverless_triton").mkdir(parents=True)
        (site / "hl_driverless_triton" / "__init__.py").write_text(_FAKE)
        monkeypatch.syspath_prepend(str(site))
        hybridload.register_kernel_package("hl_driverless_triton", usable=triton_driver_problem)
        try:
            yield "hl_driverless_triton", False
        finally:
            unregister_kernel_package("hl_driverless_triton")
            sys.modules.pop("hl_driverless_triton", None)
    reset_verdicts()


def _remote_model(folder: Path, package: str) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "hl_tritonish", "vocab_size": 16, "hidden_size": 8,
        "auto_map": {"AutoConfig": "configuration_tritonish.TritonishConfig",
                     "AutoModelForCausalLM": "modeling_tritonish.TritonishForCausalLM"},
    }))
    (folder / "configuration_tritonish.py").write_text(textwrap.dedent('''
        from transformers import PretrainedConfig

        class TritonishConfig(PretrainedConfig):
            model_type = "hl_tritonish"

            def __init__(self, vocab_size=16, hidden_size=8, **kwargs):
                self.vocab_size, self.hidden_size = vocab_size, hidden_size
                super().__init__(**kwargs)
    '''))
    (folder / "modeling_tritonish.py").write_text(textwrap.dedent(f'''
        import torch
        from torch import nn
        import {package} as triton
        from {package} import language as tl
        from transformers import PreTrainedModel

        from .configuration_tritonish import TritonishConfig

        DRIVER = triton.runtime.driver.active  # what some kernel files do at import


        @triton.jit
        def scale_kernel(x, n: tl.constexpr):
            pass


        class TritonishForCausalLM(PreTrainedModel):
            config_class = TritonishConfig

            def __init__(self, config):
                super().__init__(config)
                self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
                self.post_init()

            def forward(self, input_ids):
                hidden = self.embed(input_ids)
                scale_kernel[(1,)](hidden, 8)
                return hidden
    '''))
    return folder


def test_a_driverless_triton_is_stood_in_for_the_meta_build_only(triton_like, tmp_path):
    package, real = triton_like
    real_module = importlib.import_module(package)  # imported before the build: stood in during it, kept after
    plan = hybridload.resolve(_remote_model(tmp_path / "tritonish", package), trust_remote_code=True)
    meta = hybridload.load_meta(plan)
    report = meta.hybridload_build_report
    assert package in report.packages and "unusable" in report.reasons[package]
    assert "no active GPU driver" in report.reasons[package]
    namespace = type(meta).forward.__globals__
    assert is_stand_in(namespace["triton"]) and is_stand_in(namespace["DRIVER"])
    with pytest.raises(hybridload.KernelUnavailableError, match=package):  # not triton's "0 active drivers"
        meta(torch.zeros(1, 3, dtype=torch.long, device="meta"))
    assert sys.modules[package] is real_module  # outside the window: the real module again
    assert not isinstance(importlib.import_module(package), StandInModule)


def test_framework_probes_see_the_real_driverless_package_inside_the_window(triton_like):
    package, _ = triton_like
    real_module = importlib.import_module(package)
    with hybridload.kernel_shim() as report:
        remote: dict = {"__name__": "transformers_modules.hl.probe"}
        exec(f"import {package} as seen", remote)
        framework: dict = {"__name__": "torch.utils._hl_probe"}
        exec(f"import {package} as seen", framework)
    assert isinstance(remote["seen"], StandInModule) and package in report.packages
    assert framework["seen"] is real_module
    assert sys.modules[package] is real_module
