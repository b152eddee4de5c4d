"""Each Triton kernel against the pure-torch reference (hybridload.reference), over shapes, dtypes, options
and layouts, within hybridload.kernels.TOLERANCES. GPU only (marked ``gpu``).

HYBRIDLOAD_KERNELS_TEST_DEVICE=cpu with TRITON_INTERPRET=1 runs the same checks in Triton's interpreter
(slow; for debugging kernels without a GPU: ``pytest --confcutdir=tests/kernels -k "not large and not
deterministic"``). Outputs are poisoned (NaN in the allocator block they will reuse, NaN in caller-provided buffers) so that an
element the kernel forgets to write fails the test; in-place state updates are compared too.
"""
from __future__ import annotations

import itertools
import os
from typing import Callable

import pytest
import torch

from hybridload import kernels
from hybridload.errors import KernelUnavailableError
from hybridload.reference import causal_conv1d as ref_conv
from hybridload.reference import mamba_ssm as ref_mamba

pytestmark = pytest.mark.gpu

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEV = os.environ.get("HYBRIDLOAD_KERNELS_TEST_DEVICE", "cuda")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)


def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, device=DEV, dtype=dtype)


def out_bytes(*shape: int, dtype: torch.dtype) -> int:
    return int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()


# --------------------------------------------------------------------------- gated norms

# (x shape, group_size, with z, norm_before_gate, with bias, rms, layout)
NORM_CASES = [
    ((4, 2688), None, False, True, False, True, "contiguous"),  # Nemotron-H-like block norm
    ((2, 33, 4096), 512, True, False, False, True, "z-slice"),  # Mamba2 gated norm: z split off a projection
    ((1, 1, 8192), None, True, True, True, True, "contiguous"),  # one decode token
    ((17, 1000), 250, True, True, True, False, "contiguous"),  # LayerNorm, non-power-of-2 groups
    ((6, 5, 256), 64, True, False, True, False, "transposed"),  # x not viewable as rows: reshape copies
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", NORM_CASES, ids=lambda c: f"{c[0]}-g{c[1]}-z{c[2]}-nbg{c[3]}-b{c[4]}-rms{c[5]}-{c[6]}")
def test_norm_matches_reference(case: tuple, dtype: torch.dtype, poison: Callable, assert_close: Callable) -> None:
    shape, group_size, with_z, nbg, with_bias, rms, layout = case
    n = shape[-1]
    x = randn(*shape, dtype=dtype)
    z = randn(*shape, dtype=dtype) if with_z else None
    if layout == "z-slice":
        proj = randn(*shape[:-1], 3 * n + 7, dtype=dtype)
        z = proj[..., n + 3 : 2 * n + 3]
        assert not z.is_contiguous()
    if layout == "transposed":
        x = randn(shape[1], shape[0], n, dtype=dtype).transpose(0, 1)
        assert not x.is_contiguous()
    weight = randn(n, dtype=dtype if dtype != torch.float16 else torch.float32)  # mixed weight dtype for fp16
    bias = randn(n, dtype=weight.dtype) if with_bias else None
    poison(out_bytes(*shape, dtype=dtype))
    fn = kernels.rmsnorm_fn if rms else (lambda *a, **k: kernels.layernorm_fn(*a, **k, is_rms_norm=False))
    ref_fn = ref_mamba.rmsnorm_fn if rms else ref_mamba.layernorm_fn
    out = fn(x, weight, bias, z=z, eps=1e-5, group_size=group_size, norm_before_gate=nbg)
    ref = ref_fn(x, weight, bias, z=z, eps=1e-5, group_size=group_size, norm_before_gate=nbg)
    assert_close(out, ref, f"norm {case}")


def test_norm_large_input_matches_reference(assert_close: Callable) -> None:
    x = randn(8192, 4096, dtype=torch.bfloat16)
    z = randn(8192, 4096, dtype=torch.bfloat16)
    w = randn(4096, dtype=torch.bfloat16)
    out = kernels.rmsnorm_fn(x, w, None, z=z, group_size=512, norm_before_gate=False)
    assert_close(out, ref_mamba.rmsnorm_fn(x, w, None, z=z, group_size=512, norm_before_gate=False), "large norm")


def test_norm_backward_raises_but_forward_runs_with_grad() -> None:
    w = randn(64, dtype=torch.float32).requires_grad_()
    out = kernels.rmsnorm_fn(randn(3, 64), w, None)
    assert out.requires_grad
    with pytest.raises(KernelUnavailableError, match="forward-only"):
        out.sum().backward()


# --------------------------------------------------------------------------- causal_conv1d_fn

# (batch, dim, seqlen, width, layout, bias, activation, extra)
CONV_CASES = [
    (2, 1536, 300, 4, "channel-last", True, "silu", None),  # Mamba2 prefill layout
    (2, 256, 1000, 3, "contiguous", False, None, None),  # Mamba1 layout
    (2, 512, 257, 4, "channel-last", True, "silu", "seq_idx"),
    (2, 256, 129, 4, "channel-last", True, "swish", "states"),
    (3, 64, 2, 4, "contiguous", False, None, "states"),  # seqlen < width - 1: final states reach into initial
    (1, 200, 77, 2, "contiguous", True, "silu", "seq_idx"),
    (2, 128, 70, 4, "channel-last", True, None, "fp32-weight"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv_fn_matches_reference(case: tuple, dtype: torch.dtype, poison: Callable, assert_close: Callable) -> None:
    batch, dim, seqlen, width, layout, with_bias, activation, extra = case
    x = randn(batch, seqlen, dim, dtype=dtype).transpose(1, 2) if layout == "channel-last" else randn(batch, dim, seqlen, dtype=dtype)
    wdtype = torch.float32 if extra == "fp32-weight" else dtype
    weight = randn(dim, width, dtype=wdtype)
    bias = randn(dim, dtype=wdtype) if with_bias else None
    kwargs: dict = dict(activation=activation)
    if extra == "seq_idx":
        # three packed sub-sequences per row, boundaries at random places
        cuts = torch.sort(torch.randint(1, seqlen, (batch, 2), device=DEV), dim=1).values
        pos = torch.arange(seqlen, device=DEV)
        kwargs["seq_idx"] = ((pos[None, :] >= cuts[:, :1]).int() + (pos[None, :] >= cuts[:, 1:]).int()).to(torch.int32)
    if extra == "states":
        kwargs["initial_states"] = randn(batch, width - 1, dim, dtype=dtype).transpose(1, 2)
        kwargs["return_final_states"] = True
    poison(out_bytes(batch, dim, seqlen, dtype=dtype))
    if extra == "states":
        final_buf = torch.full((batch, dim, width - 1), float("nan"), device=DEV, dtype=dtype)
        out, final = kernels.causal_conv1d_fn(x, weight, bias, final_states_out=final_buf, **kwargs)
        ref_final_buf = torch.empty_like(final_buf)
        ref, ref_final = ref_conv.causal_conv1d_fn(x, weight, bias, final_states_out=ref_final_buf, **kwargs)
        assert final is final_buf
        assert torch.equal(final, ref_final), "final states are copies of inputs: they must match exactly"
        _, alloc_final = kernels.causal_conv1d_fn(x, weight, bias, **kwargs)
        assert torch.equal(alloc_final, ref_final) and alloc_final.stride(1) == 1
    else:
        out = kernels.causal_conv1d_fn(x, weight, bias, **kwargs)
        ref = ref_conv.causal_conv1d_fn(x, weight, bias, **kwargs)
    assert out.stride() == ref.stride(), "output is laid out like torch.empty_like(x)"
    assert_close(out, ref, f"conv {case}")


# --------------------------------------------------------------------------- causal_conv1d_update

# (batch, dim, seqlen or None, width, state_len, mode)
UPDATE_CASES = [
    (8, 1536, None, 4, 4, "shift"),  # HF Mamba2 decode: (batch, dim) and a width-long state
    (4, 512, 3, 3, 6, "shift"),  # a few tokens, a longer state
    (3, 256, 2, 4, 8, "circular"),
    (3, 256, 11, 4, 8, "circular"),  # more tokens than the buffer holds
    (4, 384, None, 4, 5, "indices"),  # continuous batching with a padding slot
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", UPDATE_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv_update_matches_reference(case: tuple, dtype: torch.dtype, poison: Callable, assert_close: Callable) -> None:
    batch, dim, seqlen, width, state_len, mode = case
    x = randn(batch, dim, dtype=dtype) if seqlen is None else randn(batch, dim, seqlen, dtype=dtype)
    n_states = batch + 3 if mode == "indices" else batch
    state = randn(n_states, dim, state_len, dtype=dtype)
    weight, bias = randn(dim, width, dtype=dtype), randn(dim, dtype=dtype)
    kwargs: dict = {}
    if mode == "circular":
        kwargs["cache_seqlens"] = torch.randint(0, 100, (batch,), device=DEV, dtype=torch.int32)
    if mode == "indices":
        kwargs["conv_state_indices"] = torch.tensor([5, -1, 0, 2], device=DEV, dtype=torch.int32)
    ref_state = state.clone()
    poison(out_bytes(*x.shape, dtype=dtype))
    out = kernels.causal_conv1d_update(x, state, weight, bias, "silu", **kwargs)
    ref = ref_conv.causal_conv1d_update(x, ref_state, weight, bias, "silu", **kwargs)
    assert_close(out, ref, f"update out {case}")
    assert torch.equal(state, ref_state), "the state holds copied inputs: it must match exactly"


# --------------------------------------------------------------------------- selective_state_update

# (batch, nheads, dim, dstate, ngroups, state dtype, form)
SSU_CASES = [
    (3, 16, 64, 128, 2, torch.float32, "tied"),  # HF Mamba2/Nemotron-H: A, dt, D, dt_bias expanded per head
    (2, 8, 32, 64, 8, torch.bfloat16, "untied"),
    (3, 256, 16, 16, 1, torch.float32, "no-heads"),  # Mamba1: (batch, dim, dstate)
    (4, 8, 32, 128, 4, torch.float32, "indices"),
    (2, 4, 32, 32, 2, torch.float32, "large-dt"),  # softplus threshold (dt > 20 is kept as is)
]


def _ssu_inputs(case: tuple, dtype: torch.dtype) -> tuple[dict, torch.Tensor]:
    batch, nheads, dim, dstate, ngroups, sdtype, form = case
    n_states = batch + 2 if form == "indices" else batch
    state = randn(n_states, nheads, dim, dstate, dtype=sdtype)
    args = dict(
        x=randn(batch, nheads, dim, dtype=dtype), dt=randn(batch, nheads, dim, dtype=dtype),
        A=-torch.exp(randn(nheads, dim, dstate)), B=randn(batch, ngroups, dstate, dtype=dtype),
        C=randn(batch, ngroups, dstate, dtype=dtype), D=randn(nheads, dim), z=randn(batch, nheads, dim, dtype=dtype),
        dt_bias=randn(nheads, dim), dt_softplus=True,
    )
    if form == "tied":
        args["A"] = -torch.exp(randn(nheads))[:, None, None].expand(nheads, dim, dstate)
        args["dt"] = randn(batch, nheads, dtype=dtype)[..., None].expand(batch, nheads, dim)
        args["D"] = randn(nheads)[:, None].expand(nheads, dim)
        args["dt_bias"] = randn(nheads)[:, None].expand(nheads, dim)
    if form == "no-heads":
        state = state[:, 0]
        for k in ("x", "dt", "z"):
            args[k] = args[k][:, 0]
        args.update(A=args["A"][0], B=args["B"][:, 0], C=args["C"][:, 0], D=args["D"][0], dt_bias=args["dt_bias"][0])
    if form == "indices":
        args["state_batch_indices"] = torch.tensor([4, -1, 0, 2], device=DEV, dtype=torch.int32)
    if form == "large-dt":
        args["dt"] = args["dt"] * 15.0  # many dt + dt_bias values above the threshold of 20
        args["A"] = args["A"] * 0.01
    return args, state


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SSU_CASES, ids=lambda c: "-".join(map(str, c)))
def test_ssu_matches_reference(case: tuple, dtype: torch.dtype, poison: Callable, assert_close: Callable) -> None:
    args, state = _ssu_inputs(case, dtype)
    ref_state = state.clone()
    poison(out_bytes(*args["x"].shape, dtype=dtype))
    out = kernels.selective_state_update(state, **args)
    ref = ref_mamba.selective_state_update(ref_state, **args)
    assert_close(out, ref, f"ssu out {case}")
    assert_close(state, ref_state, f"ssu state {case}")
    if "state_batch_indices" in args:
        untouched = [i for i in range(state.shape[0]) if i not in args["state_batch_indices"].tolist()]
        assert torch.equal(state[untouched], ref_state[untouched])


# --------------------------------------------------------------------------- races and defaults


@pytest.mark.parametrize("kernel", ["norm", "conv-cl", "conv-contig", "update", "ssu"])
def test_kernels_are_deterministic(kernel: str) -> None:
    """Two runs on the same inputs agree bit for bit (a moving result would be a race)."""
    bf16 = torch.bfloat16
    if kernel == "norm":
        x, z, w = randn(4096, 4096, dtype=bf16), randn(4096, 4096, dtype=bf16), randn(4096, dtype=bf16)
        run = lambda: kernels.rmsnorm_fn(x, w, None, z=z, group_size=1024, norm_before_gate=False)  # noqa: E731
    elif kernel.startswith("conv"):
        x = randn(2, 4096, 2048, dtype=bf16).transpose(1, 2) if kernel == "conv-cl" else randn(2, 2048, 4096, dtype=bf16)
        w, b = randn(2048, 4, dtype=bf16), randn(2048, dtype=bf16)
        run = lambda: kernels.causal_conv1d_fn(x, w, b, activation="silu")  # noqa: E731
    elif kernel == "update":
        x, w, b = randn(64, 4096, 2, dtype=bf16), randn(4096, 4, dtype=bf16), randn(4096, dtype=bf16)
        state = randn(64, 4096, 4, dtype=bf16)

        def run() -> torch.Tensor:
            s = state.clone()
            return torch.cat([kernels.causal_conv1d_update(x, s, w, b, "silu").flatten(), s.flatten()])
    else:
        args, state = _ssu_inputs((64, 32, 64, 128, 8, torch.float32, "tied"), bf16)

        def run() -> torch.Tensor:
            s = state.clone()
            return torch.cat([kernels.selective_state_update(s, **args).float().flatten(), s.flatten()])
    first, second = run(), run()
    torch.cuda.synchronize()
    assert torch.equal(first, second)


def test_available_on_the_gpu_host() -> None:
    assert kernels.available() == (DEV == "cuda")


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_combinations_of_norm_flags(dtype: torch.dtype, assert_close: Callable) -> None:
    """Every (z, norm_before_gate, bias, rms) combination on one small shape."""
    x, z = randn(9, 128, dtype=dtype), randn(9, 128, dtype=dtype)
    w, b = randn(128, dtype=dtype), randn(128, dtype=dtype)
    for with_z, nbg, with_b, rms in itertools.product([False, True], repeat=4):
        kw = dict(z=z if with_z else None, eps=1e-6, group_size=32, norm_before_gate=nbg, is_rms_norm=rms)
        out = kernels.layernorm_fn(x, w, b if with_b else None, **kw)
        ref = ref_mamba.layernorm_fn(x, w, b if with_b else None, **kw)
        assert_close(out, ref, f"norm flags z={with_z} nbg={nbg} b={with_b} rms={rms}")
