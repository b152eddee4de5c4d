"""Every W4A16 wrapper checks its whole contract before any launch, with a typed error naming the argument.

These run on CPU without triton: validation is plain torch, and meta tensors pass it and get shaped outputs.
"""
from __future__ import annotations

import pytest
import torch

from hybridload.kernels import KernelArgumentError
from hybridload.kernels.w4a16 import nvfp4_dequantize, w4a16_linear, w4a16_moe, w4a16_workspace

N, K = 32, 64


def _args(device: str = "meta", **over):
    args = {
        "x": torch.empty(3, K, dtype=torch.bfloat16, device=device),
        "weight": torch.empty(N, K // 2, dtype=torch.uint8, device=device),
        "weight_scale": torch.empty(N, K // 16, dtype=torch.float8_e4m3fn, device=device),
        "global_scale": torch.empty((), dtype=torch.float32, device=device),
    }
    args.update(over)
    return args


def test_meta_inputs_pass_and_give_shapes() -> None:
    out = w4a16_linear(**_args(), bias=torch.empty(N, dtype=torch.bfloat16, device="meta"),
                       workspace=w4a16_workspace(N, "meta"))
    assert out.shape == (3, N) and out.dtype == torch.bfloat16 and out.device.type == "meta"
    out = w4a16_linear(**_args(x=torch.empty(2, 5, K, dtype=torch.float16, device="meta")))
    assert out.shape == (2, 5, N) and out.dtype == torch.float16
    for pdl in (True, False, None):
        assert w4a16_linear(**_args(), pdl=pdl).shape == (3, N)
    # a (1,)-shaped global scale (compressed-tensors) is a scalar too; K=37 pads to 48 -> 24 packed bytes
    assert w4a16_linear(
        **_args(x=torch.empty(1, 37, dtype=torch.bfloat16, device="meta"), weight=torch.empty(N, 24, dtype=torch.uint8, device="meta"),
                weight_scale=torch.empty(N, 3, dtype=torch.float8_e4m3fn, device="meta"),
                global_scale=torch.empty(1, dtype=torch.float32, device="meta")),
        reciprocal_global=True,
    ).shape == (1, N)


@pytest.mark.parametrize(
    "over,match",
    [
        ({"x": torch.empty(3, K, dtype=torch.int32, device="meta")}, "x must be one of bfloat16, float16, float32"),
        ({"x": torch.empty(K, 3, dtype=torch.bfloat16, device="meta").t()}, "contiguous along its last dimension"),
        ({"x": torch.empty(3, 48, dtype=torch.bfloat16, device="meta")}, "weight holds 64 packed inputs per row but the input has K=48"),
        ({"weight": torch.empty(N, K // 2, dtype=torch.int8, device="meta")}, "weight must be one of uint8"),
        ({"weight": torch.empty(N, K, dtype=torch.uint8, device="meta")}, "packed inputs per row"),
        ({"weight": torch.empty(K // 2, N, dtype=torch.uint8, device="meta").t()}, "weight must be contiguous"),
        ({"weight_scale": torch.empty(N, K // 16, dtype=torch.float32, device="meta")}, "weight_scale must be one of float8_e4m3fn"),
        ({"weight_scale": torch.empty(N, K // 32, dtype=torch.float8_e4m3fn, device="meta")}, r"weight_scale must have shape \(N, ceil\(K/16\)\) = \(32, 4\)"),
        ({"weight_scale": torch.empty(N + 1, K // 16, dtype=torch.float8_e4m3fn, device="meta")}, "weight_scale must have shape"),
        ({"global_scale": torch.empty(2, dtype=torch.float32, device="meta")}, "one-element float32 tensor"),
        ({"global_scale": torch.empty((), dtype=torch.bfloat16, device="meta")}, "global_scale must be one of float32"),
        ({"global_scale": 0.5}, "global_scale must be a tensor"),
        ({"workspace": torch.empty(4, dtype=torch.int64, device="meta")}, "workspace must be one of int32"),
        ({"workspace": torch.empty(3, dtype=torch.int32, device="meta")}, r"at least 4 elements \(w4a16_workspace\(N=32"),
        ({"workspace": torch.empty(2, 4, dtype=torch.int32, device="meta")}, "contiguous 1-d int32"),
        ({"workspace": torch.empty(8, dtype=torch.int32, device="meta")[::2]}, "contiguous 1-d int32"),
        ({"workspace": torch.empty(4, dtype=torch.int32)}, "all tensors must be on one device"),
        ({"pdl": 1}, r"pdl must be True, False or None \(where supported\), got 1"),
        ({"pdl": "on"}, "pdl must be True, False or None"),
    ],
)
def test_linear_contract_violations(over: dict, match: str) -> None:
    with pytest.raises(KernelArgumentError, match=match):
        w4a16_linear(**_args(**over))


def test_bias_device_and_leading_dims_are_checked() -> None:
    with pytest.raises(KernelArgumentError, match=r"bias must have shape \(N,\)"):
        w4a16_linear(**_args(), bias=torch.empty(N + 1, dtype=torch.bfloat16, device="meta"))
    with pytest.raises(KernelArgumentError, match="all tensors must be on one device"):
        w4a16_linear(**_args(global_scale=torch.empty((), dtype=torch.float32)))
    with pytest.raises(KernelArgumentError, match="run on CUDA devices only"):
        w4a16_linear(**_args(device="cpu"))
    base = torch.empty(4, 3, 2 * K, dtype=torch.bfloat16, device="meta")
    not_flat = base.transpose(0, 1)[..., :K]  # leading dims that no single row stride describes
    with pytest.raises(KernelArgumentError, match="cannot be viewed as rows"):
        w4a16_linear(**_args(x=not_flat))


def _moe_args(**over):
    e = 5
    args = {
        "x": torch.empty(2, K, dtype=torch.bfloat16, device="meta"),
        "topk_ids": torch.empty(2, 3, dtype=torch.int32, device="meta"),
        "weight": torch.empty(e, N, K // 2, dtype=torch.uint8, device="meta"),
        "weight_scale": torch.empty(e, N, K // 16, dtype=torch.float8_e4m3fn, device="meta"),
        "global_scale": torch.empty(e, dtype=torch.float32, device="meta"),
    }
    args.update(over)
    return args


def test_moe_meta_shapes_and_contract() -> None:
    assert w4a16_moe(**_moe_args()).shape == (2, 3, N)
    cases = [
        ({"topk_ids": torch.empty(2, 3, dtype=torch.float32, device="meta")}, "topk_ids must be one of int32, int64"),
        ({"topk_ids": torch.empty(3, 3, dtype=torch.int32, device="meta")}, "one row per token"),
        ({"topk_ids": torch.empty(3, 2, dtype=torch.int64, device="meta").t()}, "topk_ids must be contiguous"),
        ({"global_scale": torch.empty(4, dtype=torch.float32, device="meta")}, r"global_scale must have shape \(E,\) = \(5,\)"),
        ({"weight_scale": torch.empty(5, N, K // 8, dtype=torch.float8_e4m3fn, device="meta")}, "weight_scale must have shape"),
        ({"weight": torch.empty(N, K // 2, dtype=torch.uint8, device="meta")}, "3-d packed tensor"),
        ({"x": torch.empty(2, 1, K, dtype=torch.bfloat16, device="meta")}, r"x must be \(tokens, K\)"),
    ]
    for over, match in cases:
        with pytest.raises(KernelArgumentError, match=match):
            w4a16_moe(**_moe_args(**over))


def test_dequantize_contract() -> None:
    a = _args()
    assert nvfp4_dequantize(a["weight"], a["weight_scale"], a["global_scale"], K).shape == (N, K)
    with pytest.raises(KernelArgumentError, match="in_features must be a positive int"):
        nvfp4_dequantize(a["weight"], a["weight_scale"], a["global_scale"], 0)
    with pytest.raises(KernelArgumentError, match="dtype must be one of"):
        nvfp4_dequantize(a["weight"], a["weight_scale"], a["global_scale"], K, torch.int8)


def test_no_launch_path_reads_back_to_the_host() -> None:
    """The launch path has no .item()/.tolist()/.cpu()/synchronize (each would sync and break CUDA-graph
    capture); read as source text, since the launcher module imports triton."""
    from pathlib import Path

    import hybridload.kernels.w4a16 as w4a16

    import ast

    folder = Path(w4a16.__file__).parent
    syncing = {"item", "tolist", "cpu", "numpy", "synchronize"}
    for name in ("w4a16.py", "_w4a16_triton.py", "../quant/moe.py"):
        tree = ast.parse((folder / name).read_text(encoding="utf-8"))
        calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert calls, name
        assert not calls & syncing, (name, calls & syncing)


def test_a_layer_checks_its_operands_once_and_each_new_input_layout() -> None:
    """``W4A16Layer`` refuses bad operands when made and a bad input on its call, with the same typed errors;
    meta inputs get shaped outputs and keep nothing (no launch happened)."""
    from hybridload.kernels.w4a16 import W4A16Layer

    ops = {k: v for k, v in _args().items() if k != "x"}
    layer = W4A16Layer(**ops, bias=torch.empty(N, dtype=torch.bfloat16, device="meta"), in_features=K,
                       workspace=w4a16_workspace(N, "meta"))
    assert layer(torch.empty(2, 5, K, dtype=torch.float16, device="meta")).shape == (2, 5, N)
    assert list(layer._launches.values()) == [None]
    with pytest.raises(KernelArgumentError, match="W4A16Layer: x has 48 features, the layer 64"):
        layer(torch.empty(1, 48, dtype=torch.bfloat16, device="meta"))
    with pytest.raises(KernelArgumentError, match="W4A16Layer: x must be a tensor"):
        layer([1.0] * K)
    with pytest.raises(KernelArgumentError, match="stride 1"):
        layer(torch.empty(K, 2, dtype=torch.bfloat16, device="meta").t())
    with pytest.raises(KernelArgumentError, match="W4A16Layer: in_features must be a positive int"):
        W4A16Layer(**ops, in_features=0)
    with pytest.raises(KernelArgumentError, match="W4A16Layer"):
        W4A16Layer(**{**ops, "weight_scale": torch.empty(N, K // 16 + 1, dtype=torch.float8_e4m3fn, device="meta")},
                   in_features=K)
    with pytest.raises(KernelArgumentError, match="W4A16Layer"):
        W4A16Layer(**ops, bias=torch.empty(N + 1, dtype=torch.bfloat16, device="meta"), in_features=K)
    with pytest.raises(KernelArgumentError, match="W4A16Layer: bias must be one of"):
        W4A16Layer(**ops, bias=torch.empty(N, dtype=torch.int32, device="meta"), in_features=K)
    with pytest.raises(KernelArgumentError, match="pdl must be"):
        W4A16Layer(**ops, in_features=K, pdl="yes")
    with pytest.raises(KernelArgumentError, match="CUDA devices only"):
        W4A16Layer(**{k: torch.empty(v.shape, dtype=v.dtype) for k, v in ops.items()}, in_features=K)
    assert layer.matches(ops["weight"], ops["weight_scale"], ops["global_scale"], layer.operands[3], layer.operands[4])
    assert not layer.matches(ops["weight"], ops["weight_scale"], ops["global_scale"], None, layer.operands[4])
