"""Read one file of a repository *at one commit* (or of a local folder), whichever the source.

Hub files go through ``hf_hub_download`` with the commit as revision, so a pinned commit is served from
the local cache without a network call and offline mode works exactly as in transformers.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import PlanError


class MissingFile(LookupError):
    """Internal signal, never seen by users: a requested file does not exist at that commit (each caller
    raises its own typed error, e.g. ConfigError for config.json, RemoteCodeError for a code file)."""


@dataclass(frozen=True)
class RepoFiles:
    """Files of ``repo`` at ``commit`` (Hub) or of the folder ``repo`` (local, commit None)."""

    repo: str
    commit: str | None
    local: bool

    def where(self, filename: str) -> str:
        if self.local:
            return str(Path(self.repo) / filename)
        return f"{self.repo}@{self.commit}:{filename}"

    def path(self, filename: str) -> Path:
        """Local path of ``filename``; raises MissingFile (with the reason) when it is not there."""
        if self.local:
            candidate = Path(self.repo) / filename
            if not candidate.is_file():
                raise MissingFile(f"{candidate} does not exist")
            return candidate
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(self.repo, filename, revision=self.commit))
        except LocalEntryNotFoundError:
            raise MissingFile(
                f"{self.where(filename)} is not in the local Hub cache and the Hub cannot be reached "
                "(offline?); download the snapshot once online or pass a local folder"
            ) from None
        except EntryNotFoundError:
            raise MissingFile(f"{self.where(filename)} does not exist in the repository") from None
        except Exception as exc:  # auth, network or cache errors: typed, with what to do
            raise PlanError(
                f"could not fetch {self.where(filename)}: {type(exc).__name__}: {exc}. Check the repo name and "
                "your login (hf auth login), or work offline from a populated cache (HF_HUB_OFFLINE=1)"
            ) from None

    def exists(self, filename: str) -> bool:
        try:
            self.path(filename)
        except MissingFile:
            return False
        return True


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
