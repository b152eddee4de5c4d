"""A checkpoint's tensor index: every tensor's name, shard, shape and dtype, known without reading a weight.

Built from the safetensors headers of a local folder (through the streaming reader's header parser), from the
Hub's safetensors metadata (:mod:`.hub`), or read back from a JSON file written by :meth:`TensorIndex.write`
(so CI can check coverage offline against an index recorded once). Dtypes are kept as the safetensors names
(``BF16``, ``F8_E4M3``, ``U8``...): quantized and packed formats torch cannot hold are still described.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

from ...errors import CheckpointError, CheckpointUnavailableError
from ...build.gc_pause import collector_paused

SCHEMA = "hybridload.checkpoint-index/1"

# safetensors dtype name -> torch dtype name (those torch holds; others stay safetensors names)
TORCH_DTYPE_NAMES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
}


class IndexedTensor(NamedTuple):
    """One checkpoint tensor as its shard header describes it (``shape`` is what the conversions read).

    A NamedTuple: an index of a 671B MoE holds 100k of them, and a tuple is built several times faster than a
    frozen dataclass."""

    key: str
    file: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name

    @property
    def numel(self) -> int:
        numel = 1
        for dim in self.shape:
            numel *= dim
        return numel


@dataclass(frozen=True)
class TensorIndex:
    """Every tensor of one checkpoint, by key; ``source`` says where it was read (folder, repo@commit, file)."""

    source: str
    tensors: Mapping[str, IndexedTensor]
    metadata: Mapping[str, Any] = field(default_factory=dict)  # the index file's "metadata" (e.g. total_size)

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def files(self) -> list[str]:
        return sorted({t.file for t in self.tensors.values()})

    # -- serialization -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        by_file: dict[str, dict[str, list[Any]]] = {}
        for key in sorted(self.tensors):
            tensor = self.tensors[key]
            by_file.setdefault(tensor.file, {})[key] = [tensor.dtype, list(tensor.shape)]
        return {"schema": SCHEMA, "source": self.source, "metadata": dict(self.metadata), "files": by_file}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")) + "\n"

    def write(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "checkpoint index") -> "TensorIndex":
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(
                f"{origin} is not a hybridload checkpoint index (schema {found!r}, expected {SCHEMA!r}); write it "
                "again with TensorIndex.write (or pass the checkpoint folder or Hub repo id instead)."
            )
        tensors: dict[str, IndexedTensor] = {}
        try:
            for file, entries in data["files"].items():
                for key, (dtype, shape) in entries.items():
                    if key in tensors:
                        raise ValueError(f"{key!r} is listed under {tensors[key].file} and {file}")
                    tensors[key] = IndexedTensor(key, str(file), tuple(int(d) for d in shape), str(dtype))
            metadata = dict(data.get("metadata") or {})
            source = str(data["source"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{origin} is malformed ({type(exc).__name__}: {exc}); write it again.") from None
        return cls(source=source, tensors=tensors, metadata=metadata)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> "TensorIndex":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read checkpoint index {path} ({type(exc).__name__}: {exc}).") from None
        return cls.from_dict(data, origin=f"checkpoint index {path}")


def tensors_from_headers(headers: Mapping[str, Mapping[str, Any]], where: str) -> dict[str, IndexedTensor]:
    """``{file: safetensors header}`` -> tensors by key; a key stored in two shards is an error (as for loading)."""
    tensors: dict[str, IndexedTensor] = {}
    for file in sorted(headers):
        header = headers[file]
        try:
            found = {
                key: IndexedTensor(key, file, tuple(map(int, info["shape"])), str(info["dtype"]))
                for key, info in header.items()
                if key != "__metadata__"
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{where}: shard {file} describes a tensor without a valid shape and dtype ({exc!r}); the shard is "
                "corrupt: download it again."
            ) from None
        if not tensors.keys().isdisjoint(found):
            key = next(k for k in found if k in tensors)
            raise CheckpointError(
                f"{where}: {key!r} is stored twice, in {tensors[key].file} and in {file}; the checkpoint is "
                "ambiguous. Re-save it so each tensor is in one shard."
            )
        tensors.update(found)
    return tensors


def check_weight_map(weight_map: Mapping[str, str] | None, tensors: Mapping[str, IndexedTensor], where: str) -> None:
    """The index file and the shard headers must agree, as the loaders require."""
    if weight_map is None:
        return
    wrong = [
        f"{key} (index says {file}, " + (f"found in {tensors[key].file})" if key in tensors else "in no shard)")
        for key, file in weight_map.items()
        if key not in tensors or tensors[key].file != file
    ]
    unlisted = sorted(set(tensors) - set(weight_map))
    wrong.extend(f"{key} (in shard {tensors[key].file}, not in the index)" for key in unlisted)
    if wrong:
        raise CheckpointError(
            f"{where}: the safetensors index does not match its shards for {len(wrong)} tensor(s): "
            f"{', '.join(sorted(wrong)[:10])}. The index or a shard is stale or corrupt; re-download it."
        )


def local_index(folder: str | os.PathLike[str]) -> TensorIndex:
    """The index of a local checkpoint folder from its shard headers (and ``model.safetensors.index.json``)."""
    from ..streaming.checkpoint import INDEX_FILE, SINGLE_FILE, read_header, shard_layout

    root = Path(folder)
    if not root.is_dir():
        raise CheckpointUnavailableError(f"checkpoint folder {root} does not exist; pass a folder, an index file or a Hub repo id.")
    if not (root / INDEX_FILE).is_file() and not (root / SINGLE_FILE).is_file():
        others = sorted(p.name for p in root.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".gguf", ".safetensors"})
        raise CheckpointUnavailableError(
            f"{root} has neither {SINGLE_FILE} nor {INDEX_FILE}"
            + (f" (it holds {', '.join(others[:5])})" if others else "")
            + ": the coverage check reads safetensors headers only. Convert the checkpoint with "
            "save_pretrained(safe_serialization=True), or download its safetensors files."
        )
    with collector_paused():
        files, weight_map, metadata = shard_layout(root)
        missing = [file for file in files if not (root / file).is_file()]
        if missing:
            raise CheckpointUnavailableError(
                f"{root}: {len(missing)} shard(s) named by {INDEX_FILE} are not there ({', '.join(missing[:5])}); "
                "their headers are needed. Download them, or check against the Hub repo id (headers only)."
            )
        headers = {file: read_header(root / file) for file in files}
        tensors = tensors_from_headers(headers, str(root))
        check_weight_map(weight_map, tensors, str(root))
    return TensorIndex(source=str(root), tensors=tensors, metadata=dict(metadata))


def index_of(items: Iterable[IndexedTensor], source: str) -> TensorIndex:
    """A TensorIndex from tensors described in code (tests, benchmarks, other formats)."""
    tensors: dict[str, IndexedTensor] = {}
    for item in items:
        if item.key in tensors:
            raise CheckpointError(f"{source}: {item.key!r} is listed twice")
        tensors[item.key] = item
    return TensorIndex(source=source, tensors=tensors)
