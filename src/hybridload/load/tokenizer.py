"""``load_tokenizer``: the plan's tokenizer, from the plan's commit and with the plan's trust decision."""
from __future__ import annotations

import os
from typing import Any

from ..build.session import build_session
from ..errors import HybridloadError, PlanError, TrustError
from ..plan.model import LoadPlan
from ..plan.trust import opt_in_instructions
from .config import plan_for, ready, session_spec


def load_tokenizer(model: str | os.PathLike | LoadPlan, **resolve_kwargs: Any) -> Any:
    """``AutoTokenizer.from_pretrained`` at the plan's commit, with its trust decision, in a ``config`` session
    (tokenizer code written for transformers 4.x meets the same compatibility entries)."""
    from transformers import AutoTokenizer

    plan = plan_for(model, **resolve_kwargs)
    ready(plan)
    kwargs: dict[str, Any] = {"trust_remote_code": plan.trust_remote_code}
    if plan.load_revision is not None:
        kwargs["revision"] = plan.load_revision
    if plan.load_code_revision is not None and plan.code_repo != plan.repo:
        kwargs["code_revision"] = plan.load_code_revision
    try:
        with build_session(session_spec(plan, "config")):
            return AutoTokenizer.from_pretrained(plan.repo, **kwargs)
    except HybridloadError:
        raise
    except Exception as exc:
        if not plan.trust_remote_code and "trust_remote_code" in str(exc):
            raise TrustError(
                f"the tokenizer of {plan.repo} needs remote code and the plan does not trust it. "
                + opt_in_instructions(plan.repo, [plan.code_repo or plan.repo])
            ) from None
        raise PlanError(f"tokenizer of {plan.repo} could not be loaded: {type(exc).__name__}: {exc}") from exc
