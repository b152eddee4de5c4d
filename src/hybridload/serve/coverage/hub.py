"""A Hub checkpoint's tensor index from its safetensors headers only (huggingface_hub's range requests).

``get_safetensors_metadata`` reads the index file and the first bytes of every shard: a 671B checkpoint's
index is a few MB, never its weights. Offline-aware, in this order:

1. an index this module cached for the same *commit* (commits never change, so the cache never goes stale);
2. with ``HF_HUB_OFFLINE=1``, or when the Hub cannot be reached: the shard headers of the local Hugging Face
   cache snapshot of that revision, when its safetensors files are there;
3. otherwise the Hub, and the result is cached for its commit when the revision is a commit.

Anything else is a :class:`~hybridload.errors.CheckpointUnavailableError` that says what to do.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ..._env import flag
from ...errors import CheckpointError, CheckpointUnavailableError
from ...build.gc_pause import collector_paused
from .index import TensorIndex, check_weight_map, local_index, tensors_from_headers

logger = logging.getLogger(__name__)

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def looks_like_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and not text.endswith((".json", ".safetensors"))


def cache_dir() -> Path:
    """Where Hub indexes are cached by commit: ``$HYBRIDLOAD_CACHE`` or ``$XDG_CACHE_HOME/hybridload``."""
    root = os.environ.get("HYBRIDLOAD_CACHE")
    if root:
        return Path(root).expanduser() / "checkpoint-index"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hybridload" / "checkpoint-index"


def cached_index_path(repo_id: str, commit: str) -> Path:
    return cache_dir() / repo_id.replace("/", "--") / f"{commit}.json"


def hub_offline() -> bool:
    from huggingface_hub import constants

    return flag("HF_HUB_OFFLINE") or flag("TRANSFORMERS_OFFLINE") or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def hub_index(repo_id: str, revision: str | None = None, *, token: Any = None) -> TensorIndex:
    """The tensor index of ``repo_id`` at ``revision`` (a commit is best: it is cached and never re-fetched)."""
    if not looks_like_repo_id(repo_id):
        raise CheckpointUnavailableError(
            f"{repo_id!r} is neither an existing local folder or index file nor a Hub repo id (org/name)."
        )
    where = f"{repo_id}@{revision or 'main'}"
    commit = revision if revision is not None and _COMMIT.match(revision) else None
    if commit is not None:
        cached = cached_index_path(repo_id, commit)
        if cached.is_file():
            return TensorIndex.read(cached)
    if hub_offline():
        return _from_local_cache(repo_id, revision, where, reason="HF_HUB_OFFLINE is set")
    try:
        metadata = _fetch(repo_id, revision, token)
    except _Unreachable as exc:
        return _from_local_cache(repo_id, revision, where, reason=f"the Hub cannot be reached ({exc})")
    index = _to_index(metadata, where)
    if commit is not None:
        _store(index, cached_index_path(repo_id, commit))
    return index


class _Unreachable(Exception):
    """The Hub did not answer (offline mode, connection or timeout): the local cache may still serve."""


def _fetch(repo_id: str, revision: str | None, token: Any) -> Any:
    import huggingface_hub
    from huggingface_hub import errors as hub_errors

    where = f"{repo_id}@{revision or 'main'}"
    try:
        return huggingface_hub.get_safetensors_metadata(repo_id, revision=revision, token=token)
    except hub_errors.NotASafetensorsRepoError:
        raise CheckpointUnavailableError(
            f"{where} has neither model.safetensors nor model.safetensors.index.json: the coverage check reads "
            "safetensors headers only. Check a local folder of the converted checkpoint instead."
        ) from None
    except hub_errors.GatedRepoError:
        raise CheckpointUnavailableError(
            f"{where} is gated: accept its terms on the Hub and log in (hf auth login, or HF_TOKEN), then retry."
        ) from None
    except hub_errors.RepositoryNotFoundError:
        raise CheckpointUnavailableError(
            f"{repo_id} was not found on the Hub (or is private): check the name, or log in (hf auth login)."
        ) from None
    except hub_errors.RevisionNotFoundError:
        raise CheckpointUnavailableError(f"{repo_id} has no revision {revision!r}: pass an existing branch, tag or commit.") from None
    except hub_errors.SafetensorsParsingError as exc:
        raise CheckpointError(f"{where}: a shard header on the Hub cannot be parsed ({exc}).") from None
    except hub_errors.OfflineModeIsEnabled as exc:
        raise _Unreachable(f"offline mode: {exc}") from None
    except hub_errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and status < 500:
            raise CheckpointUnavailableError(f"{where}: the Hub refused the header requests ({exc}).") from None
        raise _Unreachable(f"{type(exc).__name__}: {exc}") from None
    except (ConnectionError, TimeoutError, OSError) as exc:
        raise _Unreachable(f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # httpx/requests transport errors do not share a base class across versions
        if type(exc).__module__.split(".")[0] in {"httpx", "requests", "urllib3"}:
            raise _Unreachable(f"{type(exc).__name__}: {exc}") from None
        raise


def _to_index(metadata: Any, where: str) -> TensorIndex:
    with collector_paused():
        return _index_from_metadata(metadata, where)


def _index_from_metadata(metadata: Any, where: str) -> TensorIndex:
    headers = {
        file: {key: {"dtype": info.dtype, "shape": list(info.shape)} for key, info in file_metadata.tensors.items()}
        for file, file_metadata in metadata.files_metadata.items()
    }
    tensors = tensors_from_headers(headers, where)
    check_weight_map(metadata.weight_map if metadata.sharded else None, tensors, where)
    return TensorIndex(source=where, tensors=tensors, metadata=dict(metadata.metadata or {}))


def _from_local_cache(repo_id: str, revision: str | None, where: str, *, reason: str) -> TensorIndex:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError and relatives: nothing cached for this revision
        raise CheckpointUnavailableError(
            f"cannot read the tensor index of {where}: {reason}, and no copy of it is cached on this machine "
            f"({type(exc).__name__}). Run the check once where the Hub is reachable (the index of a commit is then "
            f"cached under {cache_dir()}), copy an index file written by TensorIndex.write and pass its path, or "
            "pass the checkpoint's local folder."
        ) from None
    try:
        index = local_index(folder)
    except CheckpointUnavailableError as exc:
        raise CheckpointUnavailableError(
            f"cannot read the tensor index of {where}: {reason}, and the cached snapshot is incomplete ({exc}) "
            "Run the check once where the Hub is reachable, or pass a complete local folder."
        ) from None
    return TensorIndex(source=f"{where} (local Hugging Face cache)", tensors=index.tensors, metadata=index.metadata)


def _store(index: TensorIndex, path: Path) -> None:
    """Cache atomically; a cache that cannot be written is not an error (the check already succeeded)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(index.to_json())
        os.replace(tmp, path)
    except OSError as exc:
        logger.debug("could not cache the checkpoint index at %s: %s", path, exc)
