"""The W4A16 Triton kernels against the bit-exact reference dequantization, on a GPU.

Run without a GPU in Triton's interpreter (fp32/fp16 only; the interpreter mishandles bf16 dots):
``TRITON_INTERPRET=1 HYBRIDLOAD_KERNELS_TEST_DEVICE=cpu pytest tests/quant/test_w4a16_gpu.py -k "not bf16 and not graph"``.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from hybridload.kernels import w4a16 as kw
from hybridload.kernels.tolerances import relative_errors
from hybridload.quant.numerics import dequantize_nvfp4, quantize_nvfp4

pytestmark = pytest.mark.gpu
DEVICE = os.environ.get("HYBRIDLOAD_KERNELS_TEST_DEVICE", "cuda")
# the kernel's tile is exact (value x block scale); what differs from the fp32 reference is the activation
# dtype's rounding of the output and the summation order: bounds per output dtype (rel. L2, worst/max|ref|)
BOUNDS = {torch.float32: (1e-5, 1e-4), torch.float16: (1e-3, 4e-3), torch.bfloat16: (8e-3, 2e-2)}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _weights(n: int, k: int, seed: int = 0, gain: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * torch.rand(n, 1, generator=gen) * gain  # rows of different ranges
    p, s, g = quantize_nvfp4(w)
    return p.to(DEVICE), s.to(DEVICE), g.reshape(1).to(DEVICE)


def _check(out: torch.Tensor, ref: torch.Tensor) -> None:
    assert out.dtype in BOUNDS and torch.isfinite(out).all()
    l2, worst = relative_errors(out.float(), ref.float())
    bound_l2, bound_worst = BOUNDS[out.dtype]
    assert l2 <= bound_l2 and worst <= bound_worst, (l2, worst)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 16, 17, 40, 64, 65, 300])
@pytest.mark.parametrize("n,k", [(64, 64), (48, 4096), (333, 272), (130, 37), (2048, 1024)])
def test_linear_matches_reference(dtype: torch.dtype, m: int, n: int, k: int) -> None:
    p, s, g = _weights(n, k)
    x = torch.randn(m, k, device=DEVICE, dtype=dtype)
    bias = torch.randn(n, device=DEVICE, dtype=dtype)
    out = kw.w4a16_linear(x, p, s, g, bias)
    ref = F.linear(x.float(), dequantize_nvfp4(p, s, g, in_features=k), bias.float())
    assert out.shape == (m, n) and out.dtype == dtype
    _check(out, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_leading_dims_strided_rows_and_reciprocal_global(dtype: torch.dtype) -> None:
    p, s, g = _weights(96, 160, seed=3)
    base = torch.randn(2, 3, 2 * 160, device=DEVICE, dtype=dtype)
    x = base[..., :160]  # rows of stride 320: viewable as (6, 160) without a copy
    out = kw.w4a16_linear(x, p, s, 1.0 / g, reciprocal_global=True)
    ref = F.linear(x.float(), dequantize_nvfp4(p, s, 1.0 / g, in_features=160, reciprocal=True))
    assert out.shape == (2, 3, 96)
    _check(out, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("tokens", [1, 3, 8, 11, 64])  # GEMV up to 32 pairs, per-pair tiles up to 64, sorted beyond
def test_grouped_moe_matches_per_expert_reference(dtype: torch.dtype, tokens: int) -> None:
    experts, n, k, topk = 9, 80, 96, 6
    banks = [_weights(n, k, seed=10 + e) for e in range(experts)]
    W = torch.stack([b[0] for b in banks])
    S = torch.stack([b[1] for b in banks])
    G = torch.cat([b[2] for b in banks])
    x = torch.randn(tokens, k, device=DEVICE, dtype=dtype)
    gen = torch.Generator().manual_seed(tokens)
    ids = torch.stack([torch.randperm(experts, generator=gen)[:topk] for _ in range(tokens)]).to(DEVICE)
    out = kw.w4a16_moe(x, ids.to(torch.int32), W, S, G)
    dense = dequantize_nvfp4(W, S, G)
    ref = torch.stack([torch.stack([F.linear(x[t].float(), dense[ids[t, j]]) for j in range(topk)]) for t in range(tokens)])
    assert out.shape == (tokens, topk, n)
    _check(out, ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("m", [1, 4])
def test_packed_weight_not_16_byte_aligned_takes_the_bytewise_kernels(dtype: torch.dtype, m: int) -> None:
    p, s, g = _weights(40, 96, seed=4)
    storage = torch.empty(p.numel() + 1, dtype=torch.uint8, device=DEVICE)
    shifted = storage[1:].view(p.shape)  # one byte past an aligned start: no int64 view of this storage
    shifted.copy_(p)
    x = torch.randn(m, 96, device=DEVICE, dtype=dtype)
    ref = F.linear(x.float(), dequantize_nvfp4(p, s, g, in_features=96))
    _check(kw.w4a16_linear(x, shifted, s, g), ref)
    assert torch.equal(kw.nvfp4_dequantize(shifted, s, g, 96, torch.float32), dequantize_nvfp4(p, s, g, in_features=96))


def test_dequantize_kernel_equals_reference_in_float32() -> None:
    p, s, g = _weights(257, 300, seed=5)
    out = kw.nvfp4_dequantize(p, s, g, 300, torch.float32)
    assert torch.equal(out, dequantize_nvfp4(p, s, g, in_features=300))


def test_repeated_calls_are_bit_identical() -> None:
    p, s, g = _weights(4096, 4096, seed=7)
    x = torch.randn(1, 4096, device=DEVICE, dtype=torch.bfloat16)
    first = kw.w4a16_linear(x, p, s, g)
    for _ in range(3):
        assert torch.equal(kw.w4a16_linear(x, p, s, g), first)


def test_decode_linear_and_moe_capture_in_a_cuda_graph() -> None:
    """No host sync in the launch path: capture works and replay recomputes from new inputs."""
    p, s, g = _weights(512, 1024, seed=8)
    W = torch.stack([p, p.flip(0)]); S = torch.stack([s, s.flip(0)]); G = torch.cat([g, g * 2])  # noqa: E702
    x = torch.randn(1, 1024, device="cuda", dtype=torch.bfloat16)
    ids = torch.tensor([[1, 0]], device="cuda", dtype=torch.int32)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        kw.w4a16_linear(x, p, s, g), kw.w4a16_moe(x, ids, W, S, G)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = kw.w4a16_linear(x, p, s, g)
        z = kw.w4a16_moe(x, ids, W, S, G)
    x.copy_(torch.randn_like(x))
    ids.copy_(torch.tensor([[0, 1]], device="cuda", dtype=torch.int32))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, kw.w4a16_linear(x, p, s, g))
    assert torch.equal(z, kw.w4a16_moe(x, ids, W, S, G))


@pytest.mark.skipif(DEVICE != "cuda", reason="Triton's interpreter compiles nothing to keep")
def test_later_launches_reuse_the_compiled_kernel_of_their_specialization() -> None:
    """The first launch of a specialization goes through Triton's JIT; later ones launch the kept compiled
    kernel and compute the same; a launch that Triton would specialize differently gets its own entry."""
    from hybridload.kernels import _w4a16_triton as launcher

    p, s, g = _weights(320, 1024, seed=9)
    x = torch.randn(1, 1024, device=DEVICE, dtype=torch.bfloat16)
    launcher._COMPILED.clear()
    first = kw.w4a16_linear(x, p, s, g)
    keys = set(launcher._COMPILED)
    assert any(key[0] is launcher._gemv_kernel for key in keys)
    for _ in range(2):
        assert torch.equal(kw.w4a16_linear(x, p, s, g), first)
    assert set(launcher._COMPILED) == keys  # reused, not re-keyed
    storage = torch.empty(2, 1025, device=DEVICE, dtype=torch.bfloat16)
    shifted = storage.view(-1)[1:1025].view(1, 1024)  # 2-byte aligned rows: Triton specializes on alignment
    shifted.copy_(x)
    assert torch.equal(kw.w4a16_linear(shifted, p, s, g), first)
    assert len(launcher._COMPILED) == len(keys) + 1


def _no_second_launch(*args: object) -> None:
    raise AssertionError("with a workspace the split-K partials are summed in the same launch")


_GEMV_NARROW = dict(BLOCK_N=8, BLOCK_G=16, num_warps=4, PREFETCH=2)
_GEMV_WIDE = dict(BLOCK_N=32, BLOCK_G=16, num_warps=4, PREFETCH=1)
_MMA = dict(BLOCK_N=64, BLOCK_G=8, num_warps=4, num_stages=1)


@pytest.mark.parametrize("dtype,kernel,m,config", [  # the tensor-core GEMM takes 16-bit inputs only
    (torch.float32, "gemv", 1, _GEMV_NARROW), (torch.float16, "gemv", 1, _GEMV_NARROW),
    (torch.float32, "gemv", 3, _GEMV_WIDE), (torch.float16, "gemv", 3, _GEMV_WIDE),
    (torch.float16, "mma_gemv", 5, _MMA), (torch.bfloat16, "mma_gemv", 5, _MMA), (torch.bfloat16, "gemv", 1, _GEMV_NARROW),
], ids=lambda v: str(v).removeprefix("torch.") if not isinstance(v, dict) else str(v["BLOCK_N"]))
@pytest.mark.parametrize("split", [2, 3, 5])
def test_same_launch_split_k_equals_the_reduce_launch_and_leaves_its_counters_zero(
    dtype: torch.dtype, kernel: str, m: int, config: dict, split: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a workspace the last of a tile's split programs sums the partials in split order: the same bits as
    the second (reduce) launch, and every arrival counter is back at zero for the next call."""
    from hybridload.kernels import _w4a16_triton as launcher

    n, k = 200, 2500  # a partial last row tile and a partial last group; 157 groups split 2, 3, 5 ways exactly
    p, s, g = _weights(n, k, seed=11)
    x = torch.randn(m, k, device=DEVICE, dtype=dtype)
    bias = torch.randn(n, device=DEVICE, dtype=dtype)
    w64, su8 = kw.packed_words(p), s.view(torch.uint8)
    cfg = {**config, "SPLIT_K": split}
    two_launches = torch.empty(m, n, device=DEVICE, dtype=dtype)
    getattr(launcher, kernel)(x, w64, su8, g, bias, two_launches, k, False, cfg)
    workspace = kw.w4a16_workspace(m * n, DEVICE)
    monkeypatch.setattr(launcher, "_reduce_partials", _no_second_launch)
    for _ in range(2):  # the second call relies on the first leaving the counters at zero
        one_launch = torch.empty(m, n, device=DEVICE, dtype=dtype)
        getattr(launcher, kernel)(x, w64, su8, g, bias, one_launch, k, False, cfg, counters=workspace)
        assert torch.equal(one_launch, two_launches)
        assert not workspace.any()
    _check(one_launch, F.linear(x.float(), dequantize_nvfp4(p, s, g, in_features=k), bias.float()))


@pytest.mark.parametrize("warps", [4, 8])
@pytest.mark.parametrize("config,split", [(_GEMV_NARROW, 1), (_GEMV_NARROW, 3), (_GEMV_WIDE, 1), (_GEMV_WIDE, 4)],
                         ids=["narrow", "narrow-split", "wide", "wide-split"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_gemv_decoding_ahead_of_the_wait_computes_the_same_bits(
    warps: int, config: dict, split: int, dtype: torch.dtype
) -> None:
    """Decoding the prefetched steps before the dependent launch's wait moves work, not arithmetic: the output is
    the loop's to the bit (split K's partials too, K ranges shorter than the peeled steps, fp32 inputs, which
    ignore the option)."""
    from hybridload.kernels import _w4a16_triton as launcher

    n, k = 72, 1200  # a partial last row tile; 75 groups: partial steps, and split ranges under two steps
    p, s, g = _weights(n, k, seed=21)
    x = torch.randn(2, k, device=DEVICE, dtype=dtype)
    bias = torch.randn(n, device=DEVICE, dtype=dtype)
    w64, su8 = kw.packed_words(p), s.view(torch.uint8)
    cfg = {**config, "SPLIT_K": split, "num_warps": warps}
    loop = torch.empty(2, n, device=DEVICE, dtype=dtype)
    launcher.gemv(x, w64, su8, g, bias, loop, k, False, cfg)
    ahead = torch.empty(2, n, device=DEVICE, dtype=dtype)
    launcher.gemv(x, w64, su8, g, bias, ahead, k, False, {**cfg, "DECODE_AHEAD": True})
    assert torch.equal(ahead, loop)
    _check(ahead, F.linear(x.float(), dequantize_nvfp4(p, s, g, in_features=k), bias.float()))


def test_linear_with_a_workspace_equals_the_call_without(monkeypatch: pytest.MonkeyPatch) -> None:
    """The public path: a layer's workspace changes where the split partials are summed, not the result."""
    from hybridload.kernels import _w4a16_triton as launcher

    p, s, g = _weights(128, 32768, seed=12)  # long K over few rows: the decode GEMV splits K
    x = torch.randn(1, 32768, device=DEVICE, dtype=torch.float16)
    workspace = kw.w4a16_workspace(128, DEVICE)
    assert kw._gemv_config(1, 128, 2048, x.device)["SPLIT_K"] > 1
    two_launches = kw.w4a16_linear(x, p, s, g)
    monkeypatch.setattr(launcher, "_reduce_partials", _no_second_launch)
    assert torch.equal(kw.w4a16_linear(x, p, s, g, workspace=workspace), two_launches)
    assert not workspace.any()


def test_same_launch_split_k_replays_in_a_cuda_graph() -> None:
    """Captured with a workspace, every replay recomputes from the new input and leaves the counters zero."""
    p, s, g = _weights(128, 32768, seed=13)
    x = torch.randn(1, 32768, device="cuda", dtype=torch.bfloat16)
    workspace = kw.w4a16_workspace(128, "cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        kw.w4a16_linear(x, p, s, g, workspace=workspace)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = kw.w4a16_linear(x, p, s, g, workspace=workspace)
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, kw.w4a16_linear(x, p, s, g))
        assert not workspace.any()


@pytest.mark.parametrize("kept", [False, True], ids=["table-made-in-capture", "table-kept"])
def test_reference_dequantization_captures_in_a_cuda_graph(kept: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain-PyTorch path (dequantize, then F.linear) copies nothing from the host, so it captures: with the
    device's e2m1 table kept from an eager call, or computed on the device when the capture comes first."""
    from hybridload.quant import numerics

    monkeypatch.setattr(numerics, "_DEVICE_TABLES", {})
    p, s, g = _weights(256, 512, seed=14)
    x = torch.randn(1, 512, device="cuda", dtype=torch.bfloat16)
    plain = lambda: F.linear(x, dequantize_nvfp4(p, s, g, dtype=torch.bfloat16))  # noqa: E731
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        if kept:
            plain()
        else:  # warm cuBLAS up without dequantizing
            F.linear(x, torch.zeros(256, 512, device="cuda", dtype=torch.bfloat16))
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = plain()
    assert (torch.device("cuda", torch.cuda.current_device()) in numerics._DEVICE_TABLES) == kept
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, plain())


def test_a_layer_first_called_inside_a_cuda_graph_capture_keeps_no_workspace_made_there() -> None:
    """A workspace made inside a capture would hold no zeros until replay: the captured call sums its split
    partials with the second launch, and the first eager call makes and keeps the layer's workspace."""
    from hybridload.quant import backends
    from hybridload.quant.modules import NVFP4Linear

    p, s, g = _weights(128, 32768, seed=15)
    layer = NVFP4Linear(32768, 128, device="cuda")
    with torch.no_grad():
        layer.weight.copy_(p), layer.weight_scale.copy_(s), layer.weight_scale_2.copy_(g.reshape(()))
    layer.backend = backends.TRITON
    x = torch.randn(1, 32768, device="cuda", dtype=torch.bfloat16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        expected = kw.w4a16_linear(x, p, s, g)  # compiles the two-launch kernels outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        y = layer(x)
    assert "_kernel_workspace" not in layer.__dict__
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, expected)
    with torch.no_grad():
        assert torch.equal(layer(x), expected)
    assert layer.__dict__["_kernel_workspace"].device == x.device


def _chain(layers, x: torch.Tensor, workspaces=None, pdl: bool | None = None) -> torch.Tensor:
    """Each call reads the previous call's output: a chain that a call reading early would get wrong."""
    for i, (p, s, g) in enumerate(layers):
        x = kw.w4a16_linear(x, p, s, g, workspace=None if workspaces is None else workspaces[i], pdl=pdl)
    return x


@pytest.mark.skipif(DEVICE != "cuda", reason="programmatic dependent launch needs a GPU")
@pytest.mark.parametrize("rows", [1, 5], ids=["gemv", "mma_gemv"])
def test_decode_calls_launched_as_dependents_read_only_the_previous_calls_finished_output(rows: int) -> None:
    """Where the GPU supports it the one-row GEMV launches with programmatic dependent launch by default, the
    tensor-core decode GEMM on request: each call's programs may be scheduled (and a one-row call's first weight
    words read) while the previous kernel drains, and read their input only after it. A chain of dependent
    calls (eager and replayed in a CUDA graph, split K summed in the same launch) gives the bits of the same
    chain launched plainly, and the reference's values."""
    from hybridload.kernels import _w4a16_triton as launcher

    if not launcher.pdl_supported(torch.device("cuda")):
        pytest.skip("programmatic dependent launch needs sm_90+ and Triton >= 3.4")
    assert launcher.GEMV_PDL and not launcher.MMA_PDL  # the defaults where supported: the one-row GEMV only
    layers = [_weights(2048, 2048, seed=20 + i, gain=2048 ** -0.5) for i in range(4)]  # activations stay O(1)
    long_k = _weights(2048, 16384, seed=31, gain=16384 ** -0.5)  # K split over 16 steps, summed in the same launch
    x = torch.randn(rows, 2048, device="cuda", dtype=torch.bfloat16)
    spaces = [kw.w4a16_workspace(2048, "cuda") for _ in range(5)]

    def run(pdl: bool | None):
        y = _chain(layers, x, spaces, pdl=pdl)
        return kw.w4a16_linear(torch.cat([y] * 8, dim=-1), *long_k, workspace=spaces[4], pdl=pdl)

    def reference():
        y = x.float()
        for p, s, g in layers:
            y = F.linear(y, dequantize_nvfp4(p, s, g, in_features=2048))
        return F.linear(torch.cat([y] * 8, dim=-1), dequantize_nvfp4(*long_k, in_features=16384))

    launcher._COMPILED.clear()
    plain = run(False)
    assert not any(key[4] for key in launcher._COMPILED)
    chained = run(True)
    kernel = launcher._gemv_kernel if rows == 1 else launcher._mma_gemv_kernel
    assert any(key[4] for key in launcher._COMPILED if key[0] is kernel)
    launcher._COMPILED.clear()
    assert torch.equal(run(None), plain)
    assert any(key[4] for key in launcher._COMPILED if key[0] is kernel) == (rows == 1)
    assert torch.isfinite(plain).all() and plain.abs().max() > 0.1
    assert torch.equal(chained, plain)
    l2, _ = relative_errors(plain.float(), reference())
    assert l2 < 0.05, l2  # five bf16 layers in a row
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run(True)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run(True)
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(captured, run(False))
        assert not any(space.any() for space in spaces)


def _no_launch_path(*args: object, **kwargs: object) -> None:
    raise AssertionError("a replayed call goes through no launch helper")


@pytest.mark.parametrize("dtype,rows,workspace,bias", [
    (torch.float16, 1, False, False), (torch.float16, 1, True, True), (torch.float32, 2, False, True),
    (torch.float16, 5, True, False),  # the tensor-core decode GEMM, K split and summed in the same launch
], ids=["gemv", "gemv-split-bias", "gemv-fp32-rows", "mma-split"])
def test_a_layer_replays_the_kept_launch_of_each_input_layout_with_the_same_bits(
    dtype: torch.dtype, rows: int, workspace: bool, bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer's first call of an input layout keeps its one launch; later calls of that layout replay it with
    their own input (no launch helper, no checks past the input's key) and get what ``w4a16_linear`` computes;
    a new layout is a new first call."""
    from hybridload.kernels import _w4a16_triton as launcher

    n, k = 72, 12288 if workspace else 1200  # with a workspace, a K long enough that both kernels split it
    gemv = rows == 1 or dtype == torch.float32
    config = kw._gemv_config(rows, n, k // 16, torch.device(DEVICE), workspace) if gemv else kw._mma_config(k // 16)
    assert (config["SPLIT_K"] > 1) == workspace
    p, s, g = _weights(n, k, seed=31)
    b = torch.randn(n, device=DEVICE, dtype=dtype) if bias else None
    space = kw.w4a16_workspace(rows * n, DEVICE) if workspace else None
    layer = kw.W4A16Layer(p, s, g, b, in_features=k, workspace=space)
    first = torch.randn(rows, k, device=DEVICE, dtype=dtype)
    assert torch.equal(layer(first), kw.w4a16_linear(first, p, s, g, b, workspace=space))
    assert len(layer._launches) == 1 and None not in layer._launches.values()
    later = [torch.randn(rows, k, device=DEVICE, dtype=dtype) for _ in range(2)]
    expected = [kw.w4a16_linear(x, p, s, g, b, workspace=space) for x in later]
    with monkeypatch.context() as patched:
        patched.setattr(launcher, "_launch", _no_launch_path)
        patched.setattr(kw, "_check_packed", _no_launch_path)
        replayed = [layer(x) for x in later]
    for got, want in zip(replayed, expected):
        assert torch.equal(got, want)
    assert space is None or not space.any()
    _check(replayed[-1], F.linear(later[-1].float(), dequantize_nvfp4(p, s, g, in_features=k), None if b is None else b.float()))
    stacked = later[0].reshape(rows, 1, k)  # a 3-d input: another layout, its own first call
    assert torch.equal(layer(stacked), expected[0].reshape(rows, 1, n)) and len(layer._launches) == 2


def test_a_layer_keeps_no_launch_where_a_call_launches_twice_and_checks_what_it_is_given() -> None:
    """K split without a workspace sums its partials with a second launch: nothing is kept and every call takes
    the full path. Operands are checked when the layer is made, an input on every first call of its layout."""
    from hybridload.errors import KernelArgumentError

    n, k = 64, 32768  # long K over few rows: split
    p, s, g = _weights(n, k, seed=32)
    layer = kw.W4A16Layer(p, s, g, in_features=k)
    x = torch.randn(1, k, device=DEVICE, dtype=torch.float16)
    for _ in range(2):
        assert torch.equal(layer(x), kw.w4a16_linear(x, p, s, g))
    assert list(layer._launches.values()) == [None]
    with pytest.raises(KernelArgumentError, match="W4A16Layer"):
        layer(torch.randn(1, k + 16, device=DEVICE, dtype=torch.float16))
    with pytest.raises(KernelArgumentError, match="stride 1"):
        layer(torch.randn(k, 2, device=DEVICE, dtype=torch.float16).t()[:1])
    with pytest.raises(KernelArgumentError, match="W4A16Layer"):
        kw.W4A16Layer(p, s, g, in_features=k + 16)
    with pytest.raises(KernelArgumentError, match="W4A16Layer"):
        kw.W4A16Layer(p, s[:, :-1], g, in_features=k)
    assert layer.matches(p, s, g, None, None) and not layer.matches(p.clone(), s, g, None, None)


def test_a_replayed_call_on_an_input_that_requires_grad_refuses_backward() -> None:
    from hybridload.errors import KernelUnavailableError

    p, s, g = _weights(64, 512, seed=33)
    layer = kw.W4A16Layer(p, s, g, in_features=512)
    x = torch.randn(1, 512, device=DEVICE, dtype=torch.float16, requires_grad=True)
    layer(x.detach())  # the first call of this layout keeps the launch
    y = layer(x)
    assert torch.equal(y.detach(), kw.w4a16_linear(x.detach(), p, s, g)) and y.requires_grad
    with pytest.raises(KernelUnavailableError):
        y.sum().backward()


def test_a_served_layer_replays_its_launches_and_makes_a_new_layer_when_a_weight_is_replaced() -> None:
    """NVFP4Linear's Triton forward goes through its kept W4A16Layer; replacing a parameter makes a new one."""
    from hybridload.quant import backends
    from hybridload.quant.modules import NVFP4Linear

    p, s, g = _weights(96, 640, seed=34)
    layer = NVFP4Linear(640, 96, device=DEVICE)
    with torch.no_grad():
        layer.weight.copy_(p), layer.weight_scale.copy_(s), layer.weight_scale_2.copy_(g.reshape(()))
    layer.backend = backends.TRITON
    x = torch.randn(1, 640, device=DEVICE, dtype=torch.float16)
    with torch.no_grad():
        y = layer(x)
        kept = layer.__dict__["_kernel_layer"]
        assert torch.equal(layer(x), y) and layer.__dict__["_kernel_layer"] is kept
        workspace = layer.__dict__["_kernel_workspace"]
        assert torch.equal(y, kw.w4a16_linear(x, p, s, g.reshape(()), workspace=workspace))
        other = _weights(96, 640, seed=35)
        layer.weight = torch.nn.Parameter(other[0], requires_grad=False)
        changed = layer(x)
    assert layer.__dict__["_kernel_layer"] is not kept
    assert torch.equal(changed, kw.w4a16_linear(x, other[0], s, g.reshape(()), workspace=workspace))
