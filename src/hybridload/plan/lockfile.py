"""Lock files: a plan and the tree it builds, written to disk, so every machine builds the same thing.

One format, written by ``hybridload lock``, by ``resolve(..., lock=path)`` and read by ``resolve(lock=)``,
``hybridload check --against``, the pytest plugin and ``dispatch(lock=)``::

    {"schema": "hybridload.lock/1", "plan": {...LoadPlan...}, "signature": {...tree signature...}}

``signature`` is the expected meta tree (null only in a lock written without building, which checks the plan
alone). When the file exists, a fresh resolution must agree with it, or the call fails with a
LockMismatchError that lists each difference and the fix. Code hashes are compared *before* any remote code is
imported, so changed code never runs under a lock. A lock records the trust decision; it never grants it.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..errors import LockMismatchError, SignatureFormatError
from .model import CodeFile, LoadPlan

if TYPE_CHECKING:  # pragma: no cover
    from ..tree.signature import TreeSignature

LOCK_SCHEMA = "hybridload.lock/1"


@dataclass(frozen=True)
class Lock:
    """A lock file's content: the plan, and the tree it must build (None when not recorded)."""

    plan: LoadPlan
    signature: "TreeSignature | None"
    path: Path | None = None

    def to_json(self) -> str:
        document = {
            "schema": LOCK_SCHEMA,
            "plan": self.plan.to_dict(),
            "signature": json.loads(self.signature.to_json()) if self.signature is not None else None,
        }
        return json.dumps(document, indent=2, sort_keys=True) + "\n"


def parse_lock(text: str, origin: str) -> Lock:
    """Parse a lock document; SignatureFormatError when it is not one (with what the file looks like instead)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SignatureFormatError(f"{origin} is not JSON ({exc.msg} at line {exc.lineno}); pass a file written by "
                                   "`hybridload lock`") from None
    if not isinstance(data, Mapping) or data.get("schema") != LOCK_SCHEMA:
        found = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
        hint = ""
        if isinstance(data, Mapping) and "tree" in data or (isinstance(data, Mapping) and "digest" in data):
            hint = " It looks like a signature file (`hybridload signature`): compare it with `hybridload diff`."
        elif isinstance(data, Mapping) and "repo" in data and "commit" in data:
            hint = " It looks like a bare load plan from an older hybridload: re-lock with `hybridload lock MODEL -o FILE`."
        raise SignatureFormatError(
            f"{origin} is not a hybridload lock file (schema {found!r}, expected {LOCK_SCHEMA!r}).{hint}"
        )
    plan = LoadPlan.from_dict(data.get("plan"), origin=origin)
    signature = None
    if data.get("signature") is not None:
        from ..tree.signature import TreeSignature

        signature = TreeSignature.from_json(json.dumps(data["signature"]))
    return Lock(plan, signature, Path(origin) if os.path.exists(origin) else None)


def read_lock(path: str | os.PathLike) -> Lock | None:
    """The lock stored at ``path``, or None when there is no file yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SignatureFormatError(f"cannot read lock file {path}: {exc}") from None
    return parse_lock(text, str(path))


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` via a temp file and a rename in the same folder (created if missing): never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike) -> Path:
    """Fail before any work when ``path`` cannot be written (a folder, or a parent that is a file)."""
    path = Path(path)
    if path.is_dir():
        raise SignatureFormatError(f"{path} is a folder; give a file name to write")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SignatureFormatError(f"cannot write {path}: {parent} is not a writable folder")
    return path


def write_lock(path: str | os.PathLike, plan: LoadPlan, signature: "TreeSignature | None") -> Lock:
    lock = Lock(plan, signature, Path(path))
    write_atomically(path, lock.to_json())
    return lock


def _fix(path: Path) -> str:
    return (
        f"If the change is intended, review it and refresh the lock: hybridload.resolve(..., lock={str(path)!r}, "
        "update_lock=True) or `hybridload lock MODEL -o FILE`; otherwise pin the locked commit with "
        "revision=<locked commit>."
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
            elif name == "trust_remote_code":
                line = f"the lock records trust_remote_code={old} but this process decided {value}"
                if old:
                    from .trust import ENV, how_to_trust

                    line += f": a lock never grants trust; after reviewing the code, {how_to_trust(locked.repo)} or set {ENV}"
                problems.append(line)
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
