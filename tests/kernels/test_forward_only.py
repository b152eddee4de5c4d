"""Forward-only kernels stay usable with grad enabled, and a backward through them fails loudly."""
from __future__ import annotations

import pytest
import torch

from hybridload.errors import KernelUnavailableError
from hybridload.kernels import _forward_only


def _double(x: torch.Tensor):
    calls = []

    def launch() -> torch.Tensor:
        calls.append(torch.is_grad_enabled())
        return x.detach() * 2

    return launch, calls


def test_grad_inputs_get_a_node_whose_backward_raises() -> None:
    x = torch.randn(4, requires_grad=True)
    launch, calls = _double(x)
    out = _forward_only.run("rmsnorm_fn", launch, (x, None))
    assert torch.equal(out, x.detach() * 2)
    assert out.requires_grad and calls == [False]  # the launch itself runs without autograd
    with pytest.raises(KernelUnavailableError, match="rmsnorm_fn is forward-only"):
        out.sum().backward()


def test_no_grad_and_plain_inputs_return_the_launch_result_untouched() -> None:
    x = torch.randn(4, requires_grad=True)
    launch, _ = _double(x)
    with torch.no_grad():
        out = _forward_only.run("k", launch, (x,))
    assert out.grad_fn is None and not out.requires_grad
    y = torch.randn(4)
    sentinel = torch.randn(3)
    assert _forward_only.run("k", lambda: sentinel, (y, None)) is sentinel


def test_tuple_outputs_pass_through() -> None:
    x = torch.randn(4, requires_grad=True)
    out, final = _forward_only.run("causal_conv1d_fn", lambda: (x.detach() + 1, x.detach()[:2].clone()), (x,))
    assert torch.equal(out, x.detach() + 1) and final.shape == (2,)
    with pytest.raises(KernelUnavailableError):
        (out.sum() + final.sum()).backward()
