"""Revision -> commit: a branch or tag moves, a 40-hex commit does not, so plans only ever carry commits.

Online, the Hub answers (``HfApi().repo_info``) and the answer is written to the local cache refs, the
same place huggingface_hub keeps it. Offline (``HF_HUB_OFFLINE=1``), or when the Hub cannot be reached,
the local cache refs answer, with a note in the plan saying so. When neither can, the error says how to fix it.
Local folders have no revisions: they get a content fingerprint instead.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import PlanError, RevisionResolutionError

logger = logging.getLogger(__name__)

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class ResolvedCommit:
    commit: str
    note: str


def is_commit(revision: str | None) -> bool:
    return bool(revision) and bool(COMMIT_RE.match(str(revision)))


_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def ref_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid git ref name (``git check-ref-format --allow-onelevel`` rules), or None."""
    if not name:
        return "it is empty"
    if name == "@":
        return "'@' alone is not a ref name"
    if _REF_FORBIDDEN.search(name):
        return "it contains a space, a control character or one of ~ ^ : ? * [ \\"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "it starts or ends with '/' or contains '//' (a path, not a name)"
    if ".." in name:
        return "it contains '..'"
    if "@{" in name:
        return "it contains '@{'"
    if name.endswith("."):
        return "it ends with '.'"
    for component in name.split("/"):
        if component.startswith("."):
            return f"component {component!r} starts with '.'"
        if component.endswith(".lock"):
            return f"component {component!r} ends with '.lock'"
    return None


def check_revision(revision: str | None, *, what: str = "revision") -> None:
    """Accept None, a 40-hex commit or a valid git ref name; anything else is a PlanError, before any disk access
    (a revision is looked up as a file under the cache's ``refs/``: a path there would read any file)."""
    if revision is None or is_commit(revision):
        return
    if not isinstance(revision, str):
        raise PlanError(f"{what} must be a branch, tag or 40-hex commit, got {type(revision).__name__} {revision!r}")
    problem = ref_name_problem(revision)
    if problem is not None:
        raise PlanError(
            f"{what}={revision!r} is not a branch, tag or commit name: {problem}. Pass a branch or tag name "
            "(e.g. 'main', 'v1.0') or a 40-hex commit sha"
        )


def hub_cache_dir() -> Path:
    """The cache huggingface_hub and transformers use right now (read at call time, never cached)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def storage_folder(repo_id: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return hub_cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model")


def cached_ref(repo_id: str, revision: str | None) -> str | None:
    """The commit the local cache records for ``revision`` (refs/<revision>), or None."""
    check_revision(revision)
    ref = storage_folder(repo_id) / "refs" / (revision or DEFAULT_REVISION)
    try:
        value = ref.read_text().strip()
    except OSError:
        return None
    return value if is_commit(value) else None


def _write_ref(repo_id: str, revision: str, commit: str) -> None:
    """Record revision -> commit in the cache the way huggingface_hub does (best effort)."""
    if revision == commit:
        return
    ref = storage_folder(repo_id) / "refs" / revision
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.exists() or ref.read_text().strip() != commit:
            ref.write_text(commit)
    except OSError as exc:  # read-only cache: the plan still carries the commit
        logger.debug("could not cache ref %s of %s: %s", revision, repo_id, exc)


def _fix_hint(repo_id: str, revision: str | None) -> str:
    rev = revision or DEFAULT_REVISION
    return (
        f"To fix: pass revision=<40-hex commit sha> (a pinned commit needs no lookup), populate the cache "
        f"online once (huggingface_hub.snapshot_download({repo_id!r}, revision={rev!r})), or unset "
        "HF_HUB_OFFLINE and reach the Hub."
    )


def resolve_commit(repo_id: str, revision: str | None) -> ResolvedCommit:
    """Turn ``revision`` of Hub repo ``repo_id`` into the commit it points to now."""
    check_revision(revision)
    if is_commit(revision):
        return ResolvedCommit(str(revision), "revision is a pinned commit")
    rev = revision or DEFAULT_REVISION
    if offline():
        commit = cached_ref(repo_id, rev)
        if commit is None:
            raise RevisionResolutionError(
                f"cannot resolve revision {rev!r} of {repo_id!r}: offline mode (HF_HUB_OFFLINE) and the local "
                f"cache has no ref {storage_folder(repo_id) / 'refs' / rev}. " + _fix_hint(repo_id, revision)
            )
        return ResolvedCommit(commit, f"offline: local cache ref refs/{rev}")

    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        sha = HfApi().repo_info(repo_id, revision=revision).sha
    except RevisionNotFoundError:
        raise RevisionResolutionError(
            f"the Hub has no revision {rev!r} in {repo_id!r}; pass an existing branch, tag or commit sha"
        ) from None
    except RepositoryNotFoundError:
        raise RevisionResolutionError(
            f"the Hub has no repository {repo_id!r} (or it is private/gated and you are not logged in); "
            "check the name, or log in with `hf auth login` / HF_TOKEN"
        ) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", 0) or 0
        if status < 500:
            raise RevisionResolutionError(
                f"the Hub refused to resolve {rev!r} of {repo_id!r} (HTTP {status}: {exc}). "
                + _fix_hint(repo_id, revision)
            ) from None
        return _from_cache_after(repo_id, revision, exc)
    except Exception as exc:  # network down, DNS, timeouts: fall back to the cache, saying so
        return _from_cache_after(repo_id, revision, exc)
    if not is_commit(sha):
        raise RevisionResolutionError(f"the Hub answered {sha!r} for {rev!r} of {repo_id!r}, not a commit sha")
    _write_ref(repo_id, rev, sha)
    return ResolvedCommit(sha, f"Hub: {rev} -> {sha}")


def _from_cache_after(repo_id: str, revision: str | None, error: BaseException) -> ResolvedCommit:
    rev = revision or DEFAULT_REVISION
    commit = cached_ref(repo_id, rev)
    why = f"{type(error).__name__}: {error}"
    if commit is None:
        raise RevisionResolutionError(
            f"cannot resolve revision {rev!r} of {repo_id!r}: the Hub could not be reached ({why}) and the "
            "local cache has no matching ref. " + _fix_hint(repo_id, revision)
        ) from error
    logger.warning("Hub unreachable (%s); using cached ref refs/%s -> %s for %s", why, rev, commit, repo_id)
    return ResolvedCommit(commit, f"Hub unreachable ({why}); used local cache ref refs/{rev}")


def fingerprint(folder: Path, files: Iterable[str]) -> str:
    """sha256 over (relative path, bytes) of ``files`` in ``folder``: a local folder's 'commit'."""
    digest = hashlib.sha256()
    for rel in sorted(set(files)):
        digest.update(rel.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256((folder / rel).read_bytes()).digest())
    return digest.hexdigest()


def fingerprint_files(folder: Path) -> list[str]:
    """The files a local fingerprint covers: config.json, a Model Optimizer ``hf_quant_config.json`` (it decides
    the tree of a pre-quantized checkpoint) and every Python file (the code that may run)."""
    found = [name for name in ("config.json", "hf_quant_config.json") if (folder / name).is_file()]
    for path in folder.rglob("*.py"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        found.append(rel.as_posix())
    return sorted(found)
