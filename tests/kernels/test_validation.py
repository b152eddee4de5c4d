"""Argument checking of every kernel, on CPU without triton: typed errors that name the argument.

Valid calls use meta tensors: they pass every check and return correctly shaped outputs without launching.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from hybridload.errors import HybridloadError, KernelUnavailableError
from hybridload.kernels import (
    KernelArgumentError,
    causal_conv1d_fn,
    causal_conv1d_update,
    layernorm_fn,
    rmsnorm_fn,
    selective_state_update,
)

META = torch.device("meta")


def t(*shape: int, dtype: torch.dtype = torch.bfloat16, device: torch.device | str = META) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


# --------------------------------------------------------------------------- gated norms


def norm_args(**over: Any) -> dict:
    args = dict(x=t(2, 5, 64), weight=t(64, dtype=torch.float32), bias=None, z=t(2, 5, 64), group_size=16)
    args.update(over)
    return args


NORM_BAD = [
    (dict(x=[1.0, 2.0]), "x must be a tensor"),
    (dict(weight=t(63)), r"weight must have shape \(hidden,\) = \(64,\)"),
    (dict(bias=t(32)), "bias must have shape"),
    (dict(z=t(2, 5, 32)), "z must have shape x.shape"),
    (dict(z=torch.ones(3)), "z must have shape"),
    (dict(group_size=24), "group_size must be a positive divisor of the hidden size 64"),
    (dict(group_size=0), "group_size must be a positive divisor"),
    (dict(x=t(2, 5, 64, dtype=torch.int32), z=None), "x must be one of float32, float16, bfloat16"),
    (dict(weight=t(64, dtype=torch.float64)), "weight must be one of"),
    (dict(eps=-1e-5), "eps must be a non-negative number"),
    (dict(x=t(2, 40000, dtype=torch.float32), weight=t(40000), z=None, group_size=None), "too large"),
    (dict(x=t(2, 0), weight=t(0), z=None, group_size=None), "non-empty last"),
    (dict(weight=torch.ones(64)), "one device"),
]


@pytest.mark.parametrize("fn", [rmsnorm_fn, layernorm_fn])
@pytest.mark.parametrize(("over", "message"), NORM_BAD)
def test_norm_rejects(fn: Callable, over: dict, message: str) -> None:
    with pytest.raises(KernelArgumentError, match=message) as info:
        fn(**norm_args(**over))
    assert fn.__name__ in str(info.value)
    assert isinstance(info.value, HybridloadError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_norm_meta_output(dtype: torch.dtype) -> None:
    x = t(3, 7, 96, dtype=dtype)
    y = rmsnorm_fn(x, t(96, dtype=torch.float32), t(96, dtype=torch.float32), z=t(3, 7, 96, dtype=dtype), group_size=32)
    assert y.shape == x.shape and y.dtype == dtype and y.device.type == "meta"
    y = layernorm_fn(x, t(96, dtype=dtype), None, norm_before_gate=False)
    assert y.shape == x.shape and y.dtype == dtype


# --------------------------------------------------------------------------- causal_conv1d_fn


def conv_args(**over: Any) -> dict:
    args = dict(x=t(2, 16, 9), weight=t(16, 4), bias=t(16))
    args.update(over)
    return args


CONV_BAD = [
    (dict(x=t(16, 9)), r"x must be \(batch, dim, seqlen\)"),
    (dict(weight=t(16, 5), bias=None), "width .* between 2 and 4, got 5"),
    (dict(weight=t(16, 1), bias=None), "between 2 and 4, got 1"),
    (dict(weight=t(15, 4), bias=None), r"weight must have shape \(dim, width\) = \(16, 4\)"),
    (dict(weight=t(16, 4, 1)), r"weight must be \(dim, width\)"),
    (dict(bias=t(16, dtype=torch.float32)), "bias must have the dtype of weight"),
    (dict(bias=t(8)), r"bias must have shape \(dim,\)"),
    (dict(x=t(2, 16, 9, dtype=torch.float64)), "x must be one of"),
    (dict(seq_idx=t(2, 9, dtype=torch.int64)), "seq_idx must be one of int32"),
    (dict(seq_idx=t(2, 8, dtype=torch.int32)), r"seq_idx must have shape \(batch, seqlen\)"),
    (dict(seq_idx=t(2, 9, dtype=torch.int32), initial_states=t(2, 16, 3)), "initial_states must be None"),
    (dict(seq_idx=t(2, 9, dtype=torch.int32), return_final_states=True), "return_final_states is not supported"),
    (dict(initial_states=t(2, 16, 4)), r"initial_states must have shape \(batch, dim, width - 1\)"),
    (dict(initial_states=t(2, 16, 3, dtype=torch.float16)), "initial_states must have the dtype of x"),
    (dict(return_final_states=True, final_states_out=t(2, 16, 2)), "final_states_out must have shape"),
    (dict(return_final_states=True, final_states_out=t(2, 16, 3, dtype=torch.float32)), "dtype of x"),
    (dict(activation="relu"), "activation must be None, 'silu' or 'swish'"),
    (dict(initial_states=torch.ones(2, 16, 3, dtype=torch.bfloat16)), "one device"),
]


@pytest.mark.parametrize(("over", "message"), CONV_BAD)
def test_conv_rejects(over: dict, message: str) -> None:
    with pytest.raises(KernelArgumentError, match=message):
        causal_conv1d_fn(**conv_args(**over))


def test_conv_meta_outputs_follow_the_real_layouts() -> None:
    x = t(2, 9, 16).transpose(1, 2)  # channel-last, as Mamba2 passes it
    out = causal_conv1d_fn(x, t(16, 4), t(16), activation="silu")
    assert out.shape == (2, 16, 9) and out.stride() == x.stride()
    out, final = causal_conv1d_fn(x, t(16, 3), None, initial_states=t(2, 16, 2), return_final_states=True)
    assert final.shape == (2, 16, 2) and final.stride(1) == 1  # allocated channel-last, like causal_conv1d
    given = t(2, 16, 2)
    _, final = causal_conv1d_fn(x, t(16, 3), return_final_states=True, final_states_out=given)
    assert final is given
    # final_states_out is ignored (not checked, not returned) unless return_final_states, as in causal_conv1d
    out = causal_conv1d_fn(x, t(16, 3), final_states_out=t(1, 1, 1))
    assert isinstance(out, torch.Tensor)


# --------------------------------------------------------------------------- causal_conv1d_update


def update_args(**over: Any) -> dict:
    args = dict(x=t(3, 16), conv_state=t(3, 16, 4), weight=t(16, 4), bias=t(16), activation="silu")
    args.update(over)
    return args


UPDATE_BAD = [
    (dict(x=t(3, 16, 2, 1)), r"x must be \(batch, dim\) or \(batch, dim, seqlen\)"),
    (dict(conv_state=t(3, 16, 4, dtype=torch.float32)), "conv_state must have the dtype of x"),
    (dict(conv_state=t(3, 16, 2)), "state_len.* must be >= width - 1 = 3, got 2"),
    (dict(conv_state=t(4, 16, 4)), r"conv_state must have shape \(batch, dim, state_len\)"),
    (dict(conv_state=t(3, 16)), r"conv_state must be \(batch, dim, state_len\)"),
    (dict(conv_state_indices=t(3, dtype=torch.int64)), "conv_state_indices must be one of int32"),
    (dict(conv_state_indices=t(2, dtype=torch.int32)), r"conv_state_indices must have shape \(batch,\)"),
    (dict(conv_state=t(8, 15, 4), conv_state_indices=t(3, dtype=torch.int32)), "n_states, dim=16"),
    (dict(cache_seqlens=t(4, dtype=torch.int32)), r"cache_seqlens must have shape \(batch,\)"),
    (dict(cache_seqlens=t(3, dtype=torch.float32)), "cache_seqlens must be one of int32"),
    (dict(weight=t(16, 6), bias=None), "between 2 and 4"),
    (dict(activation="gelu"), "activation must be"),
    (dict(x=torch.ones(3, 16, dtype=torch.bfloat16)), "one device"),
]


@pytest.mark.parametrize(("over", "message"), UPDATE_BAD)
def test_update_rejects(over: dict, message: str) -> None:
    with pytest.raises(KernelArgumentError, match=message):
        causal_conv1d_update(**update_args(**over))


def test_update_meta_outputs() -> None:
    assert causal_conv1d_update(**update_args()).shape == (3, 16)
    out = causal_conv1d_update(**update_args(x=t(3, 16, 5), cache_seqlens=t(3, dtype=torch.int32)))
    assert out.shape == (3, 16, 5)
    out = causal_conv1d_update(**update_args(conv_state=t(10, 16, 7), conv_state_indices=t(3, dtype=torch.int32)))
    assert out.shape == (3, 16)


# --------------------------------------------------------------------------- selective_state_update


def ssu_args(batch: int = 2, nheads: int = 4, dim: int = 8, dstate: int = 16, ngroups: int = 2, **over: Any) -> dict:
    f32 = torch.float32
    args = dict(
        state=t(batch, nheads, dim, dstate, dtype=f32), x=t(batch, nheads, dim), dt=t(batch, nheads, dim),
        A=t(nheads, dim, dstate, dtype=f32), B=t(batch, ngroups, dstate), C=t(batch, ngroups, dstate),
        D=t(nheads, dim, dtype=f32), z=t(batch, nheads, dim), dt_bias=t(nheads, dim, dtype=f32), dt_softplus=True,
    )
    args.update(over)
    return args


SSU_BAD = [
    (dict(state=t(2, 8)), "state must be"),
    (dict(x=t(2, 4, 9)), r"x must have shape \(batch, nheads, dim\) = \(2, 4, 8\)"),
    (dict(x=t(2, 4, 8, 1)), r"x must be \(batch, nheads, dim\) or \(batch, dim\)"),
    (dict(dt=t(2, 3, 8)), "dt must have shape"),
    (dict(A=t(4, 8, 15, dtype=torch.float32)), r"A must have shape \(nheads, dim, dstate\)"),
    (dict(B=t(2, 3, 16), C=t(2, 3, 16)), r"nheads \(4\) must be divisible by ngroups"),
    (dict(C=t(2, 1, 16)), r"C must have shape \(batch, ngroups, dstate\) = \(2, 2, 16\)"),
    (dict(D=t(4, 7)), r"D must have shape \(nheads, dim\)"),
    (dict(z=t(2, 4, 7)), "z must have shape"),
    (dict(dt_bias=t(3, 8)), "dt_bias must have shape"),
    (dict(state=t(3, 4, 8, 16, dtype=torch.float32)), "pass state_batch_indices"),
    (dict(state_batch_indices=t(2, dtype=torch.float32)), "state_batch_indices must be one of int32, int64"),
    (dict(state_batch_indices=t(3, dtype=torch.int32)), r"state_batch_indices must have shape \(batch,\)"),
    (dict(x=t(2, 4, 8, dtype=torch.int8)), "x must be one of"),
    (dict(state=t(2, 4, 8, 16, dtype=torch.float64)), "state must be one of"),
    (dict(A="A"), "A must be a tensor"),
    (dict(z=torch.ones(2, 4, 8)), "one device"),
]


@pytest.mark.parametrize(("over", "message"), SSU_BAD)
def test_ssu_rejects(over: dict, message: str) -> None:
    with pytest.raises(KernelArgumentError, match=message):
        selective_state_update(**ssu_args(**over))


def test_ssu_meta_outputs_with_and_without_heads() -> None:
    assert selective_state_update(**ssu_args()).shape == (2, 4, 8)
    f32 = torch.float32
    out = selective_state_update(
        t(2, 8, 16, dtype=f32), t(2, 8), t(2, 8), t(8, 16, dtype=f32), t(2, 16), t(2, 16), D=t(8), z=t(2, 8)
    )
    assert out.shape == (2, 8)
    out = selective_state_update(
        **ssu_args(state=t(5, 4, 8, 16, dtype=f32), state_batch_indices=t(2, dtype=torch.int32))
    )
    assert out.shape == (2, 4, 8) and out.dtype == torch.bfloat16


# --------------------------------------------------------------------------- devices and the launch path


def _valid_calls(device: str) -> list[Callable[[], Any]]:
    def on(args: dict) -> dict:
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}

    def real(args: dict) -> dict:
        return {k: torch.zeros(v.shape, dtype=v.dtype) if isinstance(v, torch.Tensor) else v for k, v in args.items()}

    return [
        lambda: rmsnorm_fn(**on(real(norm_args()))),
        lambda: causal_conv1d_fn(**on(real(conv_args()))),
        lambda: causal_conv1d_update(**on(real(update_args()))),
        lambda: selective_state_update(**on(real(ssu_args()))),
    ]


@pytest.mark.parametrize("call", range(4))
def test_cpu_tensors_are_rejected_with_the_fix(call: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(KernelArgumentError, match="run on CUDA devices only.*hybridload.reference"):
        _valid_calls("cpu")[call]()


@pytest.mark.parametrize("call", range(4))
def test_launch_without_triton_raises_kernel_unavailable(
    call: int, no_triton: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past validation, the launch path needs triton: without it a typed KernelUnavailableError, not ImportError
    from deep inside. (TRITON_INTERPRET=1 lets CPU tensors through the device check to reach the launch.)"""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(KernelUnavailableError, match="triton"):
        _valid_calls("cpu")[call]()
