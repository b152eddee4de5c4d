"""Local runs on a machine without the kernel packages: the model's own non-kernel path, or a named error."""
from __future__ import annotations

import re
import warnings

import pytest
import torch
from fixtures.remote_code import write_remote_model
from nnsight_fixtures import write_tokenizer, write_weights

from hybridload.errors import KernelUnavailableError, RemoteCodeError, StandInReachableError

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="kernel-aware retries are for CPU-only machines")


def _model(folder, **kwargs):
    from nnsight import TransformersModel

    return TransformersModel(str(folder), trust_remote_code=True, task="text-generation", **kwargs)


def _fixture(tmp_path, pattern: str, **config):
    folder = write_remote_model(tmp_path, pattern, **config)
    write_tokenizer(folder)
    return folder


def _ids(n: int = 5) -> torch.Tensor:
    return torch.arange(1, n + 1)[None]


def test_the_models_own_torch_path_runs(tmp_path):
    """Mamba's guard takes the CUDA kernels only for weights on CUDA: on CPU its slow path is plain torch."""
    folder = _fixture(tmp_path, "fast_path_guard", attn_layer_indices=[])
    write_weights(folder)
    lm = _model(folder)
    with pytest.warns(RuntimeWarning, match=r"without causal_conv1d .*flash_attn .*mamba_ssm"):
        with lm.trace(_ids()):
            hidden = lm.model.layers[0].mixer.output.save()
            logits = lm.lm_head.output.save()
    assert lm.dispatched and hidden.device.type == "cpu"
    assert torch.isfinite(logits).all() and logits.shape == (1, 5, 64)
    stand_ins = lm._module.hybridload_local_stand_ins["stand_ins"]
    assert "mamba_ssm.ops.selective_scan_interface.mamba_inner_fn" in stand_ins["mamba_ssm"]


def test_a_kernel_called_anyway_is_named(example):
    """The example's gated RMSNorm calls mamba_ssm's rmsnorm_fn on every path: the run fails naming it."""
    from nnsight import TransformersModel

    lm = TransformersModel(str(example), trust_remote_code=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(KernelUnavailableError, match=re.escape("mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn")) as info:
            with lm.trace("the model loads the weights"):
                lm.lm_head.output.save()
    assert info.value.name == "mamba_ssm" and "remote=True" in str(info.value)


def test_a_kernel_class_is_refused_not_run_as_a_twin(tmp_path):
    """Kimi-Linear builds fla classes in __init__: a pure-torch twin would run silently, so dispatch refuses."""
    folder = _fixture(tmp_path, "kimi_linear")
    write_weights(folder)
    lm = _model(folder)
    with pytest.raises(KernelUnavailableError, match=r"fla\.modules\.\w+") as info:
        lm.dispatch()
    assert info.value.name == "fla" and "twin" in str(info.value) and not lm.dispatched


def test_a_missing_non_kernel_package_stays_the_models_error(tmp_path):
    """Only kernel packages are ever stood in for: a missing einops-like package fails, naming it."""
    from fixtures.remote_code import DEFAULT_MISSING_PACKAGE

    folder = _fixture(tmp_path, "unregistered_missing")
    for how in ({}, {"dispatch": True}):
        with pytest.raises(RemoteCodeError, match=DEFAULT_MISSING_PACKAGE):
            _model(folder, **how)


def test_a_cuda_machine_keeps_the_plain_load_error(tmp_path, monkeypatch):
    """A server must bind real kernels: no stand-in retry where CUDA is available."""
    from hybridload.integrations import nnsight_local

    folder = _fixture(tmp_path, "fast_path_guard", attn_layer_indices=[])
    write_weights(folder)
    lm = _model(folder)
    monkeypatch.setattr(nnsight_local, "_cuda", lambda: True)
    with pytest.raises(RemoteCodeError, match="needs a package that is missing"):
        lm.dispatch()


def test_strict_mode_refuses_stand_ins_in_a_local_run(tmp_path, monkeypatch):
    folder = _fixture(tmp_path, "fast_path_guard", attn_layer_indices=[])
    write_weights(folder)
    lm = _model(folder)
    monkeypatch.setenv("HYBRIDLOAD_STRICT", "1")
    with pytest.raises(StandInReachableError, match="mamba_ssm"):
        lm.dispatch()
