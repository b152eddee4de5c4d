"""hybridload.reference.causal_conv1d against plain per-position loops (the oracle), plus meta/fake shapes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hybridload.reference.causal_conv1d import REFERENCES, causal_conv1d_fn, causal_conv1d_update

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def conv_loop(x, weight, bias=None, seq_idx=None, initial_states=None, silu=False):
    """out[b, :, t] = bias + sum_k w[:, k] * x[b, :, t - (width - 1) + k], one position at a time, in float64."""
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    out = torch.zeros(batch, dim, seqlen, dtype=torch.float64)
    for b in range(batch):
        for t in range(seqlen):
            acc = torch.zeros(dim, dtype=torch.float64) if bias is None else bias.double().clone()
            for k in range(width):
                src = t - (width - 1) + k
                if src >= 0:
                    if seq_idx is not None and seq_idx[b, src] != seq_idx[b, t]:
                        continue
                    value = x[b, :, src]
                elif initial_states is not None:
                    value = initial_states[b, :, src + width - 1]
                else:
                    continue
                acc += weight[:, k].double() * value.double()
            out[b, :, t] = F.silu(acc) if silu else acc
    return out


def update_loop(x, conv_state, weight, bias=None, silu=False, cache_seqlens=None, indices=None):
    """Feed the tokens one by one through a shift register (or circular buffer); returns (out, new_state)."""
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    state = conv_state.clone()
    state_len = state.shape[-1]
    out = torch.zeros(batch, dim, seqlen, dtype=torch.float64)
    for b in range(batch):
        row = b if indices is None else int(indices[b])
        if row < 0:
            continue
        buf = state[row].clone()
        for t in range(seqlen):
            token = x[b, :, t]
            if cache_seqlens is None:
                window = torch.cat([buf[:, state_len - (width - 1) :], token[:, None]], dim=1)
                buf = torch.cat([buf[:, 1:], token[:, None]], dim=1)
            else:
                pos = (int(cache_seqlens[b]) + t) % state_len
                taps = [buf[:, (pos - (width - 1) + j) % state_len] for j in range(width - 1)]
                window = torch.stack(taps + [token], dim=1)
                buf[:, pos] = token
            acc = (window.double() * weight.double()).sum(-1)
            if bias is not None:
                acc += bias.double()
            out[b, :, t] = F.silu(acc) if silu else acc
        state[row] = buf
    return out, state


def close(actual, expected, dtype):
    tol = TOL[dtype]
    torch.testing.assert_close(actual.double(), expected.to(dtype).double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("activation", [None, "silu", "swish"])
def test_fn_matches_loop(dtype, width, activation):
    torch.manual_seed(width)
    x = torch.randn(2, 8, 13).to(dtype)
    weight = torch.randn(8, width).to(dtype)
    bias = torch.randn(8).to(dtype)
    out = causal_conv1d_fn(x, weight, bias, activation=activation)
    assert out.dtype == dtype and out.shape == x.shape
    close(out, conv_loop(x, weight, bias, silu=activation is not None), dtype)


def test_fn_without_bias_and_fp32_weights_on_half_input():
    torch.manual_seed(1)
    x = torch.randn(1, 16, 9).half()
    weight = torch.randn(16, 4)  # weight dtype may differ from input dtype, like the CUDA kernel allows
    out = causal_conv1d_fn(x, weight)
    assert out.dtype == torch.float16
    close(out, conv_loop(x, weight), torch.float16)


def test_seq_idx_zeroes_taps_across_subsequences():
    torch.manual_seed(2)
    x = torch.randn(2, 8, 12)
    weight = torch.randn(8, 4)
    bias = torch.randn(8)
    seq_idx = torch.tensor([[0] * 5 + [1] * 4 + [2] * 3, [0] * 12], dtype=torch.int32)
    out = causal_conv1d_fn(x.transpose(1, 2).contiguous().transpose(1, 2), weight, bias, seq_idx=seq_idx, activation="silu")
    close(out, conv_loop(x, weight, bias, seq_idx=seq_idx, silu=True), torch.float32)
    # the first token of a sub-sequence sees only itself (plus bias)
    plain = causal_conv1d_fn(x, weight, bias, activation="silu")
    assert not torch.allclose(out[0, :, 5], plain[0, :, 5])
    torch.testing.assert_close(out[1], plain[1])


def test_initial_states_and_final_states():
    torch.manual_seed(3)
    x = torch.randn(2, 8, 10)
    weight = torch.randn(8, 4)
    initial = torch.randn(2, 8, 3)
    out, final = causal_conv1d_fn(x, weight, initial_states=initial, return_final_states=True, activation="silu")
    close(out, conv_loop(x, weight, initial_states=initial, silu=True), torch.float32)
    torch.testing.assert_close(final, x[..., -3:])
    assert final.stride(1) == 1  # allocated channel-last, like the real interface


def test_short_sequence_final_states_reach_into_initial_states():
    x = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    weight = torch.ones(4, 4)
    initial = -torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3) - 1
    final_out = torch.zeros(2, 3, 4).transpose(1, 2)
    out, final = causal_conv1d_fn(x, weight, initial_states=initial, return_final_states=True, final_states_out=final_out)
    assert final is final_out  # written in place and returned
    torch.testing.assert_close(final, torch.cat([initial[..., 1:], x], dim=-1))
    close(out, conv_loop(x, weight, initial_states=initial), torch.float32)


def test_output_layout_follows_input_layout():
    x = torch.randn(2, 13, 8).transpose(1, 2)  # channel-last (stride(1) == 1)
    out = causal_conv1d_fn(x, torch.randn(8, 4))
    assert out.stride() == x.stride()


def test_argument_errors_match_the_real_kernel():
    x, weight = torch.randn(1, 8, 5), torch.randn(8, 4)
    with pytest.raises(NotImplementedError, match="activation must be None, silu, or swish"):
        causal_conv1d_fn(x, weight, activation="relu")
    with pytest.raises(RuntimeError, match="width between 2 and 4"):
        causal_conv1d_fn(x, torch.randn(8, 5))
    seq_idx = torch.zeros(1, 5, dtype=torch.int32)
    with pytest.raises(AssertionError, match="initial_states must be None"):
        causal_conv1d_fn(x, weight, seq_idx=seq_idx, initial_states=torch.zeros(1, 8, 3))
    with pytest.raises(AssertionError, match="don't return final_states"):
        causal_conv1d_fn(x, weight, seq_idx=seq_idx, return_final_states=True)
    with pytest.raises(RuntimeError, match="int32"):
        causal_conv1d_fn(x, weight, seq_idx=seq_idx.long())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("state_len", [3, 4, 6])
def test_update_decode_step_in_place(dtype, state_len):
    torch.manual_seed(state_len)
    weight = torch.randn(8, 4).to(dtype)
    bias = torch.randn(8).to(dtype)
    state = torch.randn(3, 8, state_len).to(dtype)
    x = torch.randn(3, 8).to(dtype)
    expected, expected_state = update_loop(x[..., None], state, weight, bias, silu=True)
    before = state.clone()
    out = causal_conv1d_update(x, state, weight, bias, activation="silu")
    assert out.shape == x.shape and out.dtype == dtype
    close(out, expected[..., 0], dtype)
    torch.testing.assert_close(state, expected_state)  # in place, like the real one
    assert not torch.equal(state, before)


def test_update_several_tokens_equals_one_at_a_time():
    torch.manual_seed(4)
    weight, bias = torch.randn(8, 3), torch.randn(8)
    state = torch.randn(2, 8, 5)
    x = torch.randn(2, 8, 4)
    expected, expected_state = update_loop(x, state, weight, bias)
    out = causal_conv1d_update(x, state, weight, bias)
    close(out, expected, torch.float32)
    torch.testing.assert_close(state, expected_state)


def test_update_continues_a_prefill():
    """Prefill with final states, then decode: equals the conv over the whole sequence."""
    torch.manual_seed(5)
    weight, bias = torch.randn(8, 4), torch.randn(8)
    x = torch.randn(2, 8, 9)
    full = causal_conv1d_fn(x, weight, bias, activation="silu")
    _, state = causal_conv1d_fn(x[..., :6], weight, bias, return_final_states=True, activation="silu")
    state = state.contiguous()
    steps = [causal_conv1d_update(x[..., t], state, weight, bias, activation="silu") for t in range(6, 9)]
    torch.testing.assert_close(torch.stack(steps, dim=-1), full[..., 6:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seqlen", [1, 3, 7])
def test_update_circular_buffer(seqlen):
    torch.manual_seed(seqlen)
    weight, bias = torch.randn(8, 4), torch.randn(8)
    state = torch.randn(2, 8, 5)
    cache_seqlens = torch.tensor([2, 11], dtype=torch.int32)
    x = torch.randn(2, 8, seqlen)
    expected, expected_state = update_loop(x, state, weight, bias, silu=True, cache_seqlens=cache_seqlens)
    out = causal_conv1d_update(x, state, weight, bias, activation="silu", cache_seqlens=cache_seqlens)
    close(out, expected, torch.float32)
    torch.testing.assert_close(state, expected_state)


def test_update_conv_state_indices_and_padding_rows():
    torch.manual_seed(6)
    weight, bias = torch.randn(8, 4), torch.randn(8)
    state = torch.randn(5, 8, 4)
    indices = torch.tensor([3, -1, 0], dtype=torch.int32)
    x = torch.randn(3, 8)
    expected, expected_state = update_loop(x[..., None], state, weight, bias, indices=indices)
    untouched = state[[1, 2, 4]].clone()
    out = causal_conv1d_update(x, state, weight, bias, conv_state_indices=indices)
    close(out, expected[..., 0], torch.float32)
    assert torch.count_nonzero(out[1]) == 0  # padding row: output 0
    torch.testing.assert_close(state, expected_state)
    torch.testing.assert_close(state[[1, 2, 4]], untouched)


def test_update_argument_errors():
    with pytest.raises(RuntimeError, match="dtype of x"):
        causal_conv1d_update(torch.randn(2, 8), torch.zeros(2, 8, 4, dtype=torch.float16), torch.randn(8, 4))
    with pytest.raises(RuntimeError, match="at least width - 1"):
        causal_conv1d_update(torch.randn(2, 8), torch.zeros(2, 8, 2), torch.randn(8, 4))


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    return FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv(assume_static_by_default=True))


@pytest.mark.parametrize("fake", [False, True], ids=["meta", "fake"])
def test_meta_and_fake_tensors_propagate_shapes(fake):
    import contextlib

    with _fake_mode() if fake else contextlib.nullcontext():
        x = torch.randn(2, 16, 10, device="meta", dtype=torch.bfloat16)
        weight = torch.randn(16, 4, device="meta", dtype=torch.bfloat16)
        out, final = causal_conv1d_fn(x, weight, weight[:, 0], return_final_states=True, activation="silu")
        assert out.shape == (2, 16, 10) and out.dtype == torch.bfloat16 and out.device.type == "meta"
        assert final.shape == (2, 16, 3) and final.dtype == torch.bfloat16
        seq = causal_conv1d_fn(x, weight, seq_idx=torch.zeros(2, 10, dtype=torch.int32, device="meta"))
        assert seq.shape == (2, 16, 10)
        state = torch.zeros(4, 16, 4, device="meta", dtype=torch.bfloat16)
        step = causal_conv1d_update(
            x[..., 0], state, weight, activation="silu",
            conv_state_indices=torch.tensor([3, -1], dtype=torch.int32, device="meta"),
        )
        assert step.shape == (2, 16) and step.dtype == torch.bfloat16
        circ = causal_conv1d_update(x[..., :3], state[:2], weight, cache_seqlens=torch.zeros(2, dtype=torch.int32, device="meta"))
        assert circ.shape == (2, 16, 3)


def test_reference_table_names_the_real_import_paths():
    assert REFERENCES["causal_conv1d.causal_conv1d_fn"] is causal_conv1d_fn
    assert REFERENCES["causal_conv1d.causal_conv1d_interface.causal_conv1d_update"] is causal_conv1d_update
    assert all(path.split(".")[0] in {"causal_conv1d", "causal_conv1d_cuda"} for path in REFERENCES)
