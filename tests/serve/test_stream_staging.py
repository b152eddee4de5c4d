"""Chunked file-to-tensor copies (the path a GPU load takes through pinned buffers), exercised on the CPU
with pageable buffers: same chunking, slot reuse and error handling; CUDA adds only pinning and events."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from hybridload.serve.streaming.staging import StagedCopier, pread_into, read_into_host


@pytest.fixture
def data_file(tmp_path: Path):
    payload = torch.randint(0, 256, (10_000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(payload.tolist()))
    fd = os.open(path, os.O_RDONLY)
    yield path, payload, pread_into(fd)
    os.close(fd)


@pytest.mark.parametrize("nbytes", [1, 63, 64, 65, 640, 6_999])
def test_copy_spans_chunks_exactly(data_file, nbytes: int) -> None:
    _, payload, read_at = data_file
    copier = StagedCopier(torch.device("cpu"), chunk_bytes=64, slots=2)
    out = torch.zeros(nbytes, dtype=torch.uint8)
    copier.copy_into(out, read_at, 1000, nbytes)
    assert torch.equal(out, payload[1000 : 1000 + nbytes])


def test_typed_tensors_receive_their_raw_bytes(data_file) -> None:
    _, payload, read_at = data_file
    copier = StagedCopier(torch.device("cpu"), chunk_bytes=48, slots=2)
    out = torch.empty(3, 50, dtype=torch.bfloat16)
    copier.copy_into(out, read_at, 8, out.numel() * 2)
    assert torch.equal(out.view(-1).view(torch.uint8), payload[8 : 8 + 300])


def test_threads_share_few_slots_without_mixing_bytes(data_file) -> None:
    """8 threads, 2 slots: each slot is reused many times, every tensor still gets its own bytes."""
    _, payload, read_at = data_file
    copier = StagedCopier(torch.device("cpu"), chunk_bytes=32, slots=2)
    outs = [torch.zeros(1000, dtype=torch.uint8) for _ in range(8)]
    threads = [
        threading.Thread(target=copier.copy_into, args=(out, read_at, 1000 * i, 1000)) for i, out in enumerate(outs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, out in enumerate(outs):
        assert torch.equal(out, payload[1000 * i : 1000 * (i + 1)])
    assert copier.host_bytes == 64


def test_file_ending_early_raises_and_returns_the_slot(data_file) -> None:
    _, payload, read_at = data_file
    copier = StagedCopier(torch.device("cpu"), chunk_bytes=64, slots=1)
    with pytest.raises(EOFError, match="short"):
        copier.copy_into(torch.zeros(200, dtype=torch.uint8), read_at, 9_900, 200)
    out = torch.zeros(10, dtype=torch.uint8)  # the only slot is free again: no deadlock
    copier.copy_into(out, read_at, 0, 10)
    assert torch.equal(out, payload[:10])


def test_host_read_goes_straight_into_the_tensor(data_file) -> None:
    _, payload, read_at = data_file
    out = torch.empty(2, 100, dtype=torch.int16)
    read_into_host(out, read_at, 500, 400)
    assert torch.equal(out.view(-1).view(torch.uint8), payload[500:900])
    with pytest.raises(EOFError):
        read_into_host(torch.empty(100, dtype=torch.uint8), read_at, 9_950, 100)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        StagedCopier(torch.device("cpu"), chunk_bytes=0)


def test_pinned_chunks_stay_a_small_fraction_of_the_largest_group() -> None:
    from hybridload.serve.streaming.staging import CHUNK_BYTES, MIN_CHUNK_BYTES, SLOTS, chunk_bytes_for

    for group in (12 * 2**20, 96 * 2**20, 1 * 2**30):
        chunk = chunk_bytes_for(group)
        assert SLOTS * chunk <= group / 4 and chunk % (64 * 2**10) == 0
    assert chunk_bytes_for(2**40) == CHUNK_BYTES
    assert chunk_bytes_for(1024) == MIN_CHUNK_BYTES
