"""A safetensors checkpoint folder read one tensor at a time.

Every shard header is opened and checked up front with ``safe_open`` (so a corrupt, truncated or missing
shard fails before a single weight lands in the model). Tensors are then read on demand with ``preadv``
at the byte ranges the header gives, straight into the memory that keeps them: a CPU tensor, a slice of a
stacked expert tensor, or (through :mod:`.staging`) a GPU tensor. No file page stays mapped into the
process, so host memory tracks what the loader holds, not what it has read. safetensors has no API that
reads into a caller's buffer; the header's offsets are the format's public contract (8-byte length, JSON
header, data), and they are checked against safe_open's view of the same file.
"""
from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from ...errors import CheckpointError
from .staging import CHUNK_BYTES, ReadAt, StagedCopier, pread_into, read_into_host

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# safetensors header dtype names -> torch dtypes (the ones torch can hold)
_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorEntry:
    """Where one checkpoint tensor lives and what it looks like, from the shard header alone."""

    key: str
    file: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int  # absolute byte offset of the tensor's data in its shard

    @property
    def nbytes(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel * self.dtype.itemsize


class CheckpointReader:
    """The tensors of a local safetensors checkpoint folder; use as a context manager to close the shards."""

    def __init__(self, checkpoint_dir: str | os.PathLike[str]) -> None:
        self.root = Path(checkpoint_dir)
        self.files = _shard_files(self.root)
        self._fds: dict[str, tuple[int, ReadAt]] = {}
        self._copiers: dict[torch.device, StagedCopier] = {}
        self.staging_chunk_bytes = CHUNK_BYTES  # pinned chunk size for reads onto an accelerator
        self._lock = threading.Lock()
        self.entries: dict[str, TensorEntry] = {}
        for file in self.files:
            self._index_shard(file)
        self._check_index_agrees()

    # -- discovery -------------------------------------------------------------------------------
    def _index_shard(self, file: str) -> None:
        with self._validated(file) as handle:  # used for discovery only, then closed: reads use preadv
            offsets = _data_offsets(self.root / file)
            for key in handle.keys():
                if key in self.entries:
                    raise CheckpointError(
                        f"{key!r} is stored twice, in {self.entries[key].file} and in {file} "
                        f"(folder {self.root}); the checkpoint is ambiguous. Re-save it so each tensor is in one shard."
                    )
                view = handle.get_slice(key)
                dtype_name = view.get_dtype()
                dtype = _DTYPES.get(dtype_name)
                if dtype is None:
                    raise CheckpointError(
                        f"{file}: tensor {key!r} has dtype {dtype_name}, which torch cannot hold; "
                        "convert the checkpoint to a torch dtype (e.g. BF16) first."
                    )
                begin, end = offsets.get(key, (0, 0))
                entry = TensorEntry(key, file, tuple(view.get_shape()), dtype, begin)
                if end - begin != entry.nbytes:  # safe_open checks this too; the reads below rely on it
                    raise CheckpointError(
                        f"{file}: the header of tensor {key!r} gives {end - begin} bytes of data for shape {entry.shape} "
                        f"{dtype_name} ({entry.nbytes} bytes); the shard is corrupt: download it again."
                    )
                self.entries[key] = entry

    def _check_index_agrees(self) -> None:
        index = self.root / INDEX_FILE
        if not index.is_file():
            return
        weight_map = _read_index(index)
        wrong = [
            f"{key} (index says {file}, "
            + (f"found in {self.entries[key].file})" if key in self.entries else "in no shard)")
            for key, file in weight_map.items()
            if key not in self.entries or self.entries[key].file != file
        ]
        if wrong:
            raise CheckpointError(
                f"{index} does not match its shards for {len(wrong)} tensor(s): {', '.join(sorted(wrong)[:10])}. "
                "The index or a shard is stale or corrupt; re-download or re-save the checkpoint."
            )

    def _validated(self, file: str) -> Any:
        """safe_open of one shard (a context manager): the format check a corrupt or truncated shard fails."""
        path = self.root / file
        if not path.is_file():
            raise CheckpointError(
                f"shard {file} is missing from {self.root} (named by {INDEX_FILE}); "
                "the download is incomplete: fetch the missing shard (e.g. snapshot_download again)."
            )
        try:
            return safe_open(str(path), framework="pt", device="cpu", backend="pread")
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"shard {file} in {self.root} is not a readable safetensors file ({exc}); it is corrupt or "
                "truncated: delete it and download it again."
            ) from None

    # -- reading ---------------------------------------------------------------------------------
    def read(self, key: str) -> torch.Tensor:
        """Read one tensor into a fresh CPU buffer (the only copy the loader makes of it)."""
        return self.read_to(key, torch.device("cpu"))

    def read_to(self, key: str, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Read one tensor onto ``device`` (no host copy on CUDA but the pinned chunks), then cast it there."""
        entry = self.entries[key]
        out = torch.empty(entry.shape, dtype=entry.dtype, device=device)
        self.read_into(key, out)
        return out if dtype is None or dtype == entry.dtype else out.to(dtype)

    def read_into(self, key: str, out: torch.Tensor) -> None:
        """Read one tensor into ``out`` (same shape; any dtype, device and strides -- casts happen on its device)."""
        entry = self.entries[key]
        if tuple(out.shape) != entry.shape:
            raise CheckpointError(
                f"{entry.file}: {key!r} has shape {entry.shape} in the header, but its destination has shape "
                f"{tuple(out.shape)}; the checkpoint does not match the model."
            )
        if out.dtype != entry.dtype or not out.is_contiguous():
            out.copy_(self.read_to(key, out.device))
            return
        read_at = self._reader_for(entry.file)
        try:
            if out.device.type == "cpu":
                read_into_host(out, read_at, entry.offset, entry.nbytes)
            else:
                self._copier(out.device).copy_into(out, read_at, entry.offset, entry.nbytes)
        except (OSError, EOFError) as exc:
            raise CheckpointError(
                f"reading {key!r} from shard {entry.file} in {self.root} failed ({exc}); the file changed or is "
                "damaged: download it again."
            ) from None

    def _reader_for(self, file: str) -> ReadAt:
        with self._lock:
            opened = self._fds.get(file)
            if opened is None:
                try:
                    fd = os.open(self.root / file, os.O_RDONLY | getattr(os, "O_BINARY", 0))
                except OSError as exc:
                    raise CheckpointError(
                        f"shard {file} in {self.root} can no longer be opened ({exc}); download it again."
                    ) from None
                opened = self._fds[file] = (fd, pread_into(fd))
            return opened[1]

    def _copier(self, device: torch.device) -> StagedCopier:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        with self._lock:
            copier = self._copiers.get(device)
            if copier is None:
                copier = self._copiers[device] = StagedCopier(device, chunk_bytes=self.staging_chunk_bytes)
            return copier

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
            copiers, self._copiers = self._copiers, {}
        for copier in copiers.values():
            copier.close()
        for fd, _ in fds.values():
            os.close(fd)

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shard_files(root: Path) -> list[str]:
    if not root.is_dir():
        raise CheckpointError(f"checkpoint folder {root} does not exist; pass the local snapshot folder of the model.")
    index = root / INDEX_FILE
    if index.is_file():
        files = sorted(set(_read_index(index).values()))
        if not files:
            raise CheckpointError(f"{index} names no shard; the index is corrupt: download it again.")
        return files
    if (root / SINGLE_FILE).is_file():
        return [SINGLE_FILE]
    others = sorted(p.name for p in root.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".gguf"})
    hint = (
        f" It holds {', '.join(others[:5])}: the streaming loader reads safetensors only; convert the "
        "checkpoint with save_pretrained(safe_serialization=True) or load it with from_pretrained."
        if others
        else " Download the weights (snapshot_download with allow_patterns=['*.safetensors*'])."
    )
    raise CheckpointError(f"{root} has neither {SINGLE_FILE} nor {INDEX_FILE}.{hint}")


def shard_layout(root: Path) -> tuple[list[str], dict[str, str] | None, dict[str, Any]]:
    """The shard files of a checkpoint folder, its index's weight map (None for a single-file checkpoint) and the
    index's ``metadata``; the index is read once."""
    index = root / INDEX_FILE
    if not index.is_file():
        return _shard_files(root), None, {}
    weight_map, metadata = _read_index_document(index)
    files = sorted(set(weight_map.values()))
    if not files:
        raise CheckpointError(f"{index} names no shard; the index is corrupt: download it again.")
    return files, weight_map, metadata


def _read_index(index: Path) -> dict[str, str]:
    return _read_index_document(index)[0]


def _read_index_document(index: Path) -> tuple[dict[str, str], dict[str, Any]]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        weight_map = data["weight_map"]
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise TypeError("weight_map must map tensor names to shard file names")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise TypeError("metadata must be a JSON object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{index} is not a valid safetensors index ({type(exc).__name__}: {exc}); download it again."
        ) from None
    for file in set(weight_map.values()):  # each shard name once: an index lists one per tensor
        if Path(file).name != file:
            raise CheckpointError(f"{index} names shard {file!r} outside the folder; the index is corrupt.")
    return weight_map, metadata


MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit on the JSON header


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of one safetensors file (tensor name -> dtype, shape, data_offsets; plus ``__metadata__``),
    read without touching tensor data."""
    return _header(path)[1]


def _header(path: Path) -> tuple[int, dict[str, Any]]:
    """(byte offset where tensor data starts, header): the 8-byte length, then that many bytes of JSON."""
    try:
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > MAX_HEADER_BYTES:
                raise ValueError(f"header length {header_len} exceeds the format's limit of {MAX_HEADER_BYTES} bytes")
            raw = fh.read(header_len)
        if len(raw) != header_len:
            raise EOFError(f"the header needs {header_len} bytes, the file holds {len(raw)}")
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise TypeError("the header is not a JSON object")
        return 8 + header_len, header
    except (OSError, EOFError, ValueError, TypeError, struct.error) as exc:
        raise CheckpointError(
            f"shard {path.name} in {path.parent} has an unreadable header ({type(exc).__name__}: {exc}); it is "
            "corrupt or truncated: delete it and download it again."
        ) from None


def _data_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Absolute [begin, end) byte range of every tensor, from the safetensors header (safe_open checked it)."""
    base, header = _header(path)
    try:
        return {
            key: (base + int(info["data_offsets"][0]), base + int(info["data_offsets"][1]))
            for key, info in header.items()
            if key != "__metadata__"
        }
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(
            f"shard {path.name} in {path.parent} has an unreadable header ({type(exc).__name__}: {exc}); it is "
            "corrupt or truncated: delete it and download it again."
        ) from None
