"""Every mamba_ssm reference runs on meta and fake tensors with the shapes/dtypes of the CPU run (nnsight scan)."""
from __future__ import annotations

import contextlib

import pytest
import torch

from hybridload.reference import mamba_ssm as ref


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    return FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv(assume_static_by_default=True))


def _cases(device: str) -> dict:
    """name -> (function, args, kwargs), built on ``device`` (bf16 activations, fp32 parameters)."""
    g = torch.Generator().manual_seed(0)

    def t(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, generator=g).to(dtype).to(device)

    def idx(values):
        return torch.tensor(values, dtype=torch.int32).to(device)

    b, L, h, p, ng, n, dim = 1, 11, 4, 2, 2, 3, 8
    zxbcdt = t(b, L, 2 * 3 + 2 * dim + 2 * ng * n + h)
    return {
        "rmsnorm_fn": (ref.rmsnorm_fn, (t(b, L, dim), t(dim, dtype=torch.float32), None),
                       dict(z=t(b, L, dim), group_size=4, norm_before_gate=False)),
        "layernorm_fn": (ref.layernorm_fn, (t(b, L, dim), t(dim), t(dim)), {}),
        "selective_state_update": (
            ref.selective_state_update,
            (t(3, h, p, n, dtype=torch.float32), t(2, h, p), t(2, h, p), t(h, p, n, dtype=torch.float32), t(2, ng, n), t(2, ng, n)),
            dict(D=t(h, p), z=t(2, h, p), dt_bias=t(h, p), dt_softplus=True, state_batch_indices=idx([2, -1])),
        ),
        "mamba_chunk_scan_combined": (
            ref.mamba_chunk_scan_combined,
            (t(b, L, h, p), t(b, L, h), t(h, dtype=torch.float32), t(b, L, ng, n), t(b, L, ng, n), 4),
            dict(D=t(h), z=t(b, L, h, p), dt_bias=t(h), initial_states=t(b, h, p, n, dtype=torch.float32),
                 seq_idx=idx([[0] * 5 + [1] * 6]), cu_seqlens=idx([0, 5, L]), dt_softplus=True,
                 return_final_states=True, return_varlen_states=True),
        ),
        "mamba_split_conv1d_scan_combined": (
            ref.mamba_split_conv1d_scan_combined,
            (zxbcdt, t(dim + 2 * ng * n, 4), t(dim + 2 * ng * n), t(h), t(h, dtype=torch.float32), t(h), 4),
            dict(seq_idx=idx([[0] * L]), return_final_states=True, rmsnorm_weight=t(dim), outproj_weight=t(5, 3 + dim),
                 headdim=p, ngroups=ng, norm_before_gate=False),
        ),
        "selective_scan_fn": (
            ref.selective_scan_fn,
            (t(2, dim, L), t(2, dim, L), t(dim, n, dtype=torch.float32), t(2, 2, n, L), t(2, 2, n, L)),
            dict(D=t(dim, dtype=torch.float32), z=t(2, dim, L), delta_bias=t(dim, dtype=torch.float32),
                 delta_softplus=True, return_last_state=True),
        ),
        "mamba_inner_fn": (
            ref.mamba_inner_fn,
            (t(2, 2 * dim, L), t(dim, 1, 4), t(dim), t(3 + 2 * n, dim), t(dim, 3), t(6, dim), None,
             t(dim, n, dtype=torch.float32)),
            dict(D=t(dim, dtype=torch.float32), delta_bias=t(dim, dtype=torch.float32), b_rms_weight=t(n)),
        ),
    }


def _signature(result) -> list[tuple]:
    results = result if isinstance(result, tuple) else (result,)
    return [(tuple(r.shape), r.dtype) for r in results]


@pytest.mark.parametrize("name", sorted(_cases("cpu")))
@pytest.mark.parametrize("mode", ["meta", "fake"])
def test_shapes_and_dtypes_flow_without_data(name, mode):
    fn, args, kwargs = _cases("cpu")[name]
    expected = _signature(fn(*args, **kwargs))
    with _fake_mode() if mode == "fake" else contextlib.nullcontext():
        fn, args, kwargs = _cases("meta")[name]
        result = fn(*args, **kwargs)
    assert _signature(result) == expected
    results = result if isinstance(result, tuple) else (result,)
    assert all(r.device.type == "meta" for r in results)


def test_reference_table_covers_the_real_import_paths():
    assert ref.REFERENCES["mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn"] is ref.rmsnorm_fn
    assert ref.REFERENCES["mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined"] is ref.mamba_chunk_scan_combined
    assert ref.REFERENCES["mamba_ssm.selective_scan_fn"] is ref.selective_scan_fn
    assert {fn.__name__ for fn in ref.REFERENCES.values()} == {
        "rmsnorm_fn", "layernorm_fn", "selective_state_update", "mamba_chunk_scan_combined",
        "mamba_split_conv1d_scan_combined", "selective_scan_fn", "mamba_inner_fn",
    }
