"""Stand-ins for fla kernels: meta/fake tensors run the reference, real tensors raise; the registry is complete."""
from __future__ import annotations

import importlib
import inspect

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import hybridload.reference as references
from hybridload.errors import KernelUnavailableError
from hybridload.reference import fla as ref
from hybridload.substitutes import reference_for
from hybridload.shim.kernel_shim import kernel_shim


def _kda_args(device: str) -> dict:
    return {
        "q": torch.randn(1, 6, 2, 4, device=device),
        "k": torch.randn(1, 6, 2, 4, device=device),
        "v": torch.randn(1, 6, 2, 3, device=device),
        "g": torch.randn(1, 6, 2, 4, device=device),
        "beta": torch.rand(1, 6, 2, device=device),
    }


def test_every_table_path_resolves_and_nothing_is_unavailable() -> None:
    assert references.UNAVAILABLE == {}
    for module, functions in references.REFERENCE_TABLE.items():
        for name, paths in functions.items():
            for path in paths:
                defining = importlib.import_module(f"hybridload.reference.{module}")
                assert references.DEFAULT_REFERENCES[path] is getattr(defining, name), path
                assert reference_for(path) is references.DEFAULT_REFERENCES[path]
    for path in ("fla.ops.kda.chunk_kda", "fla.ops.kda.fused_recurrent_kda", "fla.ops.kda.gate.fused_kda_gate"):
        assert path in references.DEFAULT_REFERENCES


def test_stand_in_runs_the_reference_on_meta_and_refuses_real_tensors() -> None:
    with kernel_shim():
        from fla.ops.kda import chunk_kda
        from fla.ops.kda.gate import fused_kda_gate

        assert inspect.signature(chunk_kda) == inspect.signature(ref.chunk_kda)
        o, state = chunk_kda(**_kda_args("meta"), output_final_state=True)
        assert o.is_meta and o.shape == (1, 6, 2, 3) and state.shape == (1, 2, 4, 3)
        with pytest.raises(KernelUnavailableError, match="fla"):
            chunk_kda(**_kda_args("cpu"))
        with pytest.raises(KernelUnavailableError):
            fused_kda_gate(torch.randn(2, 8), torch.randn(2), 4)


def test_stand_in_runs_the_reference_on_fake_tensors() -> None:
    with kernel_shim():
        from fla.ops.kda import fused_recurrent_kda

        with FakeTensorMode() as mode:
            args = {k: mode.from_tensor(v) for k, v in _kda_args("cpu").items()}
            o, state = fused_recurrent_kda(**args, output_final_state=True)
        assert o.shape == (1, 6, 2, 3) and o.dtype == torch.float32 and state.shape == (1, 2, 4, 3)
