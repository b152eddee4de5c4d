"""The dtype both builds use, made concrete once: explicit argument, else config.json, else checkpoint header.

``None`` and ``"auto"`` mean what they mean to ``from_pretrained`` (config first, then the weights), but the
plan stores the answer, so a meta build (which has no weights) and the real load cannot disagree.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ..errors import PlanError
from .files import RepoFiles


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _checkpoint_dtype(files: RepoFiles) -> tuple[str, str] | None:
    """First floating dtype in the checkpoint header, read only when the file is already local."""
    names = ["model.safetensors"]
    index = _local_file(files, "model.safetensors.index.json")
    if index is not None:
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))[:1]
        except (ValueError, KeyError, TypeError):
            return None
    for name in names:
        path = _local_file(files, name)
        if path is None:
            continue
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():
                    found = _SAFETENSORS_DTYPES.get(handle.get_slice(key).get_dtype())
                    if found:
                        return found, f"checkpoint header of {name}"
        except Exception:  # an unreadable header is the real load's business (CheckpointError there)
            return None
    return None


def _local_file(files: RepoFiles, name: str) -> Path | None:
    if files.local:
        path = Path(files.repo) / name
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(files.repo, name, revision=files.commit)
    return Path(found) if isinstance(found, str) else None


def resolve_dtype(dtype: Any, config: Mapping[str, Any], files: RepoFiles) -> tuple[str, str]:
    import torch

    if dtype is None or dtype == "auto":
        for key in ("dtype", "torch_dtype"):
            value = config.get(key)
            if isinstance(value, str) and value != "auto":
                name = value.removeprefix("torch.")
                if isinstance(getattr(torch, name, None), torch.dtype):
                    return name, f"config.json {key}"
        found = _checkpoint_dtype(files)
        if found is not None:
            return found
        return str(torch.get_default_dtype()).removeprefix("torch."), "torch default (no dtype in config.json or a local checkpoint)"
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch."), "explicit argument"
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype.removeprefix("torch."), None), torch.dtype):
        return dtype.removeprefix("torch."), "explicit argument"
    raise PlanError(f"dtype={dtype!r} is not a torch dtype; use e.g. torch.bfloat16, 'bfloat16' or 'auto'")
