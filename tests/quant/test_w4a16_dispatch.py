"""Which W4A16 kernel serves which call: rows, activation dtype, storage alignment, routed pairs.

Runs without a GPU or triton: the launcher module is replaced by a recorder, and CPU tensors are accepted as
they are under Triton's interpreter. The kernels' numerics are tested in test_w4a16_gpu.py.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hybridload.kernels import _runtime
from hybridload.kernels import w4a16 as kw
from hybridload.quant.numerics import quantize_nvfp4


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    record: list[tuple[str, dict]] = []

    def recorder(name: str, out_index: int):
        def launch(*args, **kwargs):
            record.append((name, {"args": args, **kwargs}))
            return args[out_index]
        return launch

    launcher = SimpleNamespace(
        gemv=recorder("gemv", 5), mma_gemv=recorder("mma_gemv", 5), gemm=recorder("gemm", 5),
        dequantize=recorder("dequantize", 3), moe=recorder("moe", 4),
    )
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(_runtime, "load_launcher", lambda name: launcher)
    return record


def _packed(n: int = 32, k: int = 256, aligned: bool = True):
    p, s, g = quantize_nvfp4(torch.randn(n, k))
    if not aligned:
        storage = torch.empty(p.numel() + 1, dtype=torch.uint8)
        shifted = storage[1:].view(p.shape)
        shifted.copy_(p)
        p = shifted
    return p, s, g.reshape(1)


@pytest.mark.parametrize("m,dtype,kernel", [
    (1, torch.bfloat16, "gemv"), (2, torch.bfloat16, "mma_gemv"), (16, torch.float16, "mma_gemv"),
    (4, torch.float32, "gemv"), (16, torch.float32, "gemv"), (17, torch.bfloat16, "dequantize"),
    (300, torch.float32, "dequantize"),
])
def test_rows_and_dtype_pick_the_kernel(calls, m: int, dtype: torch.dtype, kernel: str) -> None:
    p, s, g = _packed()
    out = kw.w4a16_linear(torch.randn(m, 256, dtype=dtype), p, s, g)
    assert out.shape == (m, 32) and out.dtype == dtype
    assert [name for name, _ in calls] == [kernel]
    if kernel == "dequantize":  # handed the int64 words: the vectorised dequantize
        assert calls[0][1]["args"][6] is not None and calls[0][1]["args"][6].dtype == torch.int64


@pytest.mark.parametrize("m,kernel", [(1, "gemm"), (64, "gemm"), (65, "dequantize")])
def test_unaligned_storage_takes_the_bytewise_kernels(calls, m: int, kernel: str) -> None:
    p, s, g = _packed(aligned=False)
    assert kw.packed_words(p) is None and kw.packed_words(_packed()[0]) is not None
    kw.w4a16_linear(torch.randn(m, 256, dtype=torch.bfloat16), p, s, g)
    assert [name for name, _ in calls] == [kernel]
    if kernel == "dequantize":
        assert calls[0][1]["args"][6] is None


def test_packed_words_are_one_int64_per_scale_group() -> None:
    p, _, _ = _packed(n=3, k=48)
    words = kw.packed_words(p)
    assert words.shape == (3, 3) and words.dtype == torch.int64
    assert words.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()  # a view, no copy


@pytest.mark.parametrize("tokens,kernel,per_pair", [(1, "gemv", None), (5, "gemv", None), (8, "moe", True), (11, "moe", False)])
def test_routed_pairs_pick_the_moe_kernel(calls, tokens: int, kernel: str, per_pair: bool | None) -> None:
    experts, n, k, topk = 9, 32, 64, 6
    banks = [_packed(n, k) for _ in range(experts)]
    W = torch.stack([b[0] for b in banks]); S = torch.stack([b[1] for b in banks]); G = torch.cat([b[2] for b in banks])  # noqa: E702
    ids = torch.stack([torch.randperm(experts)[:topk] for _ in range(tokens)]).to(torch.int32)
    out = kw.w4a16_moe(torch.randn(tokens, k, dtype=torch.bfloat16), ids, W, S, G)
    assert out.shape == (tokens, topk, n)
    assert [name for name, _ in calls] == [kernel]
    if kernel == "gemv":
        assert torch.equal(calls[0][1]["topk_ids"], ids.reshape(-1)) and calls[0][1]["topk"] == topk
    else:
        row_map = calls[0][1]["args"][6]
        assert (row_map is None) == per_pair


def test_tile_configs_split_k_within_bounds() -> None:
    cpu = torch.device("cpu")
    for n, kg in ((4096, 256), (21504, 256), (4096, 1344), (1856, 168), (64, 4)):
        gemv, mma = kw._gemv_config(1, n, kg, cpu), kw._mma_config(kg)
        for config in (gemv, mma):
            steps = kg / config["SPLIT_K"] / config["BLOCK_G"]
            assert config["SPLIT_K"] == 1 or steps >= 2, (n, kg, config)
        assert 1 <= mma["SPLIT_K"] <= kw.MMA_SPLIT_K


def test_gemv_tiles_by_rows_and_splits_k_only_for_a_long_k_over_few_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kw, "_sm_count", lambda index: 132)
    cuda = torch.device("cuda", 0)

    def tile(n: int, k: int, same_launch_split: bool = False) -> tuple[int, int, int, int]:
        config = kw._gemv_config(1, n, k // 16, cuda, same_launch_split)
        return config["BLOCK_N"], config["BLOCK_G"], config["PREFETCH"], config["SPLIT_K"]

    for n, k in ((4096, 4096), (4096, 14336)):  # at most 4 programs of 8 rows per SM
        assert tile(n, k) == (*kw.GEMV_NARROW_TILE, 1), (n, k)
    for n, k in ((21504, 4096), (8192, 8192), (16384, 21504)):
        assert tile(n, k) == (*kw.GEMV_TILE, 1), (n, k)
        assert tile(n, k, True) == (*kw.GEMV_TILE, 1), (n, k)  # many rows: never split
    assert tile(4096, 21504) == (*kw.GEMV_SPLIT_TILE, 8)  # 128 programs of the split tile: about 8 per SM
    assert tile(1024, 21504)[3] == 16  # capped
    # a split summed in the same launch pays from a shorter K: 14 steps of 64 groups split, 8 do not
    assert tile(4096, 14336, True) == (*kw.GEMV_SPLIT_TILE, 8)
    assert tile(4096, 12288, True) == (*kw.GEMV_SPLIT_TILE, 8)
    for n, k in ((4096, 4096), (4096, 8192)):
        assert tile(n, k, True) == (*kw.GEMV_NARROW_TILE, 1), (n, k)


def test_gemv_decodes_ahead_only_a_short_k_over_few_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to 2 programs per SM and 4 steps: 8 rows x 64 groups where that fits, else 16 x 32; 8 warps; the rest
    keeps its tiles, without the early decode."""
    monkeypatch.setattr(kw, "_sm_count", lambda index: 132)
    cuda = torch.device("cuda", 0)

    def choice(n: int, k: int, same_launch_split: bool = False) -> tuple:
        config = kw._gemv_config(1, n, k // 16, cuda, same_launch_split)
        return (config["BLOCK_N"], config["BLOCK_G"], config["PREFETCH"], config["SPLIT_K"], config["num_warps"],
                config.get("DECODE_AHEAD", False))

    for same_launch_split in (False, True):
        assert choice(1856, 2688, same_launch_split) == (8, 64, 2, 1, 8, True)  # 232 programs, 3 steps
        assert choice(1024, 4096, same_launch_split) == (8, 64, 2, 1, 8, True)  # 128 programs, 4 steps
        assert choice(2112, 4096, same_launch_split) == (8, 64, 2, 1, 8, True)  # 264 programs: the bound
        assert choice(2688, 1856, same_launch_split) == (16, 32, 2, 1, 8, True)  # 8 x 64: 336 programs
        assert choice(4096, 2048, same_launch_split) == (16, 32, 2, 1, 8, True)  # 8 x 64: 512 programs
        assert not choice(4096, 4096, same_launch_split)[5]  # 16 x 32: 256 programs but 8 steps
        assert not choice(1856, 4112, same_launch_split)[5]  # 8 x 64: 5 steps; 16 x 32: 9
        assert not choice(4232, 2048, same_launch_split)[5]  # 16 x 32: 265 programs
        assert not choice(21504, 1024, same_launch_split)[5]
