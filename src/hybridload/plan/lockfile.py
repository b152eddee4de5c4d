"""Lock files: a plan written to disk, so every machine builds from the same commit, code and decisions.

``resolve(..., lock=path)`` writes the lock when it does not exist; when it does, the fresh resolution
must agree with it, or the call fails with a LockMismatchError that lists each difference and the fix.
Code hashes are compared *before* any remote code is imported, so changed code never runs under a lock.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import LockMismatchError, PlanError
from .model import CodeFile, LoadPlan


def read_lock(path: str | os.PathLike) -> LoadPlan | None:
    """The plan stored at ``path``, or None when there is no file yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read lock file {path}: {exc}") from None
    return LoadPlan.from_json(text, origin=f"lock file {path}")


def write_lock(path: str | os.PathLike, plan: LoadPlan) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(plan.to_json() + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fix(path: Path) -> str:
    return (
        f"If the change is intended, review it and refresh the lock: hybridload.resolve(..., lock={str(path)!r}, "
        "update_lock=True) (or delete the file); otherwise pin the locked commit with revision=<locked commit>."
    )


def _code_diff(locked: Iterable[CodeFile], fresh: Iterable[CodeFile]) -> list[str]:
    old = {(c.repo, c.path): c.sha256 for c in locked}
    new = {(c.repo, c.path): c.sha256 for c in fresh}
    lines = []
    for key in sorted(set(old) | set(new)):
        where = f"{key[0]}:{key[1]}"
        if key not in new:
            lines.append(f"remote code file {where} is no longer used (locked sha256 {old[key][:12]})")
        elif key not in old:
            lines.append(f"remote code file {where} is new (sha256 {new[key][:12]}), not in the lock")
        elif old[key] != new[key]:
            lines.append(f"remote code file {where} changed: sha256 {old[key][:12]} -> {new[key][:12]}")
    return lines


def check_static(path: Path, locked: LoadPlan, facts: Mapping[str, Any], code_files: Iterable[CodeFile]) -> None:
    """Compare what is known before any code runs: repo, commit/fingerprint, trust, classes, code hashes."""
    problems = []
    for name, value in facts.items():
        old = getattr(locked, name)
        if old != value:
            if name == "commit":
                problems.append(
                    f"{locked.repo!r} revision {locked.revision or 'main'!r} now resolves to commit {value}, "
                    f"the lock pins {old}"
                )
            elif name == "fingerprint":
                problems.append(f"the content of folder {locked.repo} changed (fingerprint {str(old)[:12]} -> {str(value)[:12]})")
            else:
                problems.append(f"{name}: locked {old!r}, now {value!r}")
    problems += _code_diff(locked.code_files, code_files)
    if problems:
        raise LockMismatchError(f"lock file {path} does not match:\n  - " + "\n  - ".join(problems) + "\n" + _fix(path))


def check_full(path: Path, locked: LoadPlan, fresh: LoadPlan) -> None:
    """Compare every pinned decision (versions and notes are allowed to differ across machines)."""
    old, new = locked.decisions(), fresh.decisions()
    problems = [f"{k}: locked {old[k]!r}, now {new[k]!r}" for k in sorted(old) if k != "code_files" and old[k] != new.get(k)]
    problems += _code_diff(locked.code_files, fresh.code_files)
    if problems:
        raise LockMismatchError(f"lock file {path} does not match:\n  - " + "\n  - ".join(problems) + "\n" + _fix(path))
