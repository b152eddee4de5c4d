"""The trust decision: may this load execute a repository's own Python code?

Order: an explicit ``trust_remote_code`` argument, else the ``HYBRIDLOAD_TRUST_REMOTE_CODE`` policy
(``1``/``0`` or comma-separated globs such as ``nvidia/*``), else transformers' default, which never runs
remote code. hybridload never turns remote code on by itself: running a repo's code is the user's call,
made once and recorded in the plan with its reason.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..errors import PlanError

ENV = "HYBRIDLOAD_TRUST_REMOTE_CODE"
_ON = {"1", "true", "yes", "on"}
_OFF = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class TrustDecision:
    trusted: bool
    reason: str


def policy_globs() -> tuple[bool | None, list[str]]:
    """(blanket answer or None, repo globs) from the environment, read now (never cached)."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None, []
    if raw.lower() in _ON:
        return True, []
    if raw.lower() in _OFF:
        return False, []
    return None, [part.strip() for part in raw.split(",") if part.strip()]


def decide_trust(explicit: bool | None, code_repos: Sequence[str]) -> TrustDecision:
    """Decide once whether the code of ``code_repos`` (repo ids or local folders) may run."""
    if explicit is not None:
        if not isinstance(explicit, bool):
            raise PlanError(f"trust_remote_code must be True, False or None, got {explicit!r}")
        return TrustDecision(explicit, f"explicit argument trust_remote_code={explicit}")
    blanket, globs = policy_globs()
    if blanket is not None:
        return TrustDecision(blanket, f"policy {ENV}={os.environ.get(ENV, '').strip()}")
    if globs:
        unmatched = [repo for repo in code_repos if not _matches(repo, globs)]
        if code_repos and not unmatched:
            return TrustDecision(True, f"policy {ENV}={','.join(globs)} matches {', '.join(code_repos)}")
        who = ", ".join(unmatched) if unmatched else "this repository"
        return TrustDecision(False, f"policy {ENV}={','.join(globs)} does not match {who}")
    return TrustDecision(False, "default: transformers never runs remote code unless it is trusted")


def _matches(repo: str, globs: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(repo, pattern) for pattern in globs)


def opt_in_instructions(repo: str, code_repos: Sequence[str]) -> str:
    """How to trust the code of ``repo``: the exact argument and policy value, after a review."""
    glob_value = ",".join(dict.fromkeys(code_repos or [repo]))
    return (
        "hybridload never enables remote code by itself. After reviewing the code, opt in with "
        f"hybridload.resolve({repo!r}, trust_remote_code=True) (or trust_remote_code=True on the load call), "
        f"or set the policy {ENV}={glob_value} (comma-separated globs such as 'org/*' are accepted)."
    )
