"""The trust decision: may this load execute a repository's own Python code?

Order: an explicit ``trust_remote_code`` argument (the CLI's ``--trust-remote-code``), else the
``HYBRIDLOAD_TRUST_REMOTE_CODE`` policy (``1``/``0`` or comma-separated globs such as ``nvidia/*``; ``0`` denies
everything but an explicit argument), else deny, as transformers does. hybridload never turns remote code on by
itself, and a file never does either: a plan or lock file *records* the decision, and every load checks that
this process grants it (:func:`require_trust`).
"""
from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from ..errors import PlanError, TrustError

if TYPE_CHECKING:  # pragma: no cover
    from .model import LoadPlan

ENV = "HYBRIDLOAD_TRUST_REMOTE_CODE"
EXPLICIT = "explicit argument"
_ON = {"1", "true", "yes", "on"}
_OFF = {"0", "false", "no", "off"}


_spelling: contextvars.ContextVar[str | None] = contextvars.ContextVar("hybridload_trust_spelling", default=None)


@contextlib.contextmanager
def explicit_spelling(flag: str) -> Iterator[None]:
    """How the explicit trust argument is spelled where the user is (the CLI: ``--trust-remote-code``), so every
    message says what to type there, not a Python call."""
    token = _spelling.set(flag)
    try:
        yield
    finally:
        _spelling.reset(token)


def how_to_trust(repo: str) -> str:
    flag = _spelling.get()
    if flag is not None:
        return f"pass {flag}"
    return f"pass trust_remote_code=True (e.g. hybridload.resolve({repo!r}, trust_remote_code=True))"


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
        return TrustDecision(explicit, f"{EXPLICIT} trust_remote_code={explicit}")
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
        f"hybridload never enables remote code by itself. After reviewing the code, {how_to_trust(repo)}, or set "
        f"the policy {ENV}={glob_value} (comma-separated globs such as 'org/*' are accepted)."
    )



def code_repos_of(plan: "LoadPlan") -> list[str]:
    """The repositories whose code the plan runs (its own, or the upstream code repository)."""
    return sorted({plan.code_repo or plan.repo}) if plan.uses_remote_code else []


def require_trust(plan: "LoadPlan", explicit: bool | None = None) -> None:
    """Refuse (TrustError) to run a plan's remote code unless this process grants it now.

    A plan records its trust decision; it grants nothing by itself (a lock file or a request could carry any
    value). Running its code needs, in order: ``explicit`` at this call, or the explicit argument the plan was
    resolved with in this process, or the ``HYBRIDLOAD_TRUST_REMOTE_CODE`` policy now. An explicit value that
    contradicts the plan is a conflict.
    """
    if explicit is not None and not isinstance(explicit, bool):
        raise PlanError(f"trust_remote_code must be True, False or None, got {explicit!r}")
    if explicit is not None and explicit != plan.trust_remote_code:
        raise TrustError(
            f"trust_remote_code={explicit} conflicts with the plan of {plan.repo}, which records "
            f"trust_remote_code={plan.trust_remote_code} ({plan.trust_reason}); a plan is never edited: re-resolve it "
            f"with hybridload.resolve({plan.repo!r}, trust_remote_code={explicit})"
        )
    if not plan.trust_remote_code or not plan.uses_remote_code:
        return
    if explicit or plan.trust_confirmation == EXPLICIT:
        return
    decision = decide_trust(None, code_repos_of(plan))
    if decision.trusted:
        return
    raise TrustError(
        f"the plan of {plan.repo} records trust_remote_code=True ({plan.trust_reason}), but nothing in this process "
        f"grants it ({decision.reason}): a plan or lock file records the decision, it never grants trust. After "
        f"reviewing the code, {how_to_trust(plan.repo)}, or set the policy {ENV}={','.join(code_repos_of(plan))}."
    )
