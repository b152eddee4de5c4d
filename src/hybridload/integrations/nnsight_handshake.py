"""The tree-digest handshake: a remote request says which module tree it was traced against.

Client side, the request environment nnsight already carries (``RequestModel.env``, filled by
``_remoteable_get_env``) gains one key::

    "hybridload": {"digest": <sha256 of the client's tree>, "plan": <the client's LoadPlan as a dict>, "schema": 1}

Server side, ``_remoteable_set_env`` receives it before the request is deserialized and run. A server with
hybridload compares the digest with the signature of the model it serves and refuses a different tree with
:class:`~hybridload.errors.TreeMismatchError`; to show *where* the trees differ it rebuilds the client's meta
tree from the client's plan (config and code only, no weights) and diffs the two, but only when that runs no
code the server does not already trust. A server without hybridload never reads the key: nnsight's
``_remoteable_set_env`` only looks at the keys it knows.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any, Mapping

from ..errors import SignatureFormatError, TreeMismatchError

logger = logging.getLogger(__name__)

ENV_KEY = "hybridload"
SCHEMA = 1

#: plan facts whose difference matters even when the two trees are identical (weights or code may differ)
_FACTS = ("repo", "commit", "fingerprint", "model_class", "trust_remote_code", "dtype", "attn_implementation_built")

_rebuilt_lock = threading.Lock()
_rebuilt: "OrderedDict[str, tuple[Any, str | None]]" = OrderedDict()  # client plan json -> (signature, error)
_REBUILT_MAX = 8


def client_entry(module: Any) -> dict[str, Any] | None:
    """The handshake a client sends for ``module`` (its meta tree, or its dispatched tree: the same tree).

    None for a module hybridload did not build from a plan (a ``config=`` object, a diffusion pipeline, a
    ready module): without a plan the server could neither rebuild nor explain the client's tree.
    """
    plan = getattr(module, "hybridload_plan", None) if module is not None else None
    if plan is None:
        return None
    from ..tree.signature import signature

    return {"digest": signature(module, plan).digest, "plan": plan.to_dict(), "schema": SCHEMA}


def _checked(entry: Any) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise SignatureFormatError(
            f"the request's {ENV_KEY!r} handshake is a {type(entry).__name__}, not an object; the client's "
            "hybridload is broken or not hybridload"
        )
    if entry.get("schema") != SCHEMA:
        raise SignatureFormatError(
            f"the request's {ENV_KEY!r} handshake has schema {entry.get('schema')!r}; this server's hybridload reads "
            f"schema {SCHEMA}. Use the same hybridload version on the client and the server"
        )
    if not isinstance(entry.get("digest"), str) or not (entry.get("plan") is None or isinstance(entry["plan"], Mapping)):
        raise SignatureFormatError(f"the request's {ENV_KEY!r} handshake is malformed (digest/plan); refusing to guess")
    return entry


def plan_differences(client_plan: Mapping[str, Any] | None, server_plan: Any) -> list[str]:
    """Human lines for the plan facts that differ (client -> server)."""
    if client_plan is None or server_plan is None:
        missing = "client" if client_plan is None else "server"
        return [f"the {missing} model was not built from a hybridload plan; plan facts cannot be compared"]
    server = server_plan.to_dict()
    lines = []
    for name in _FACTS:
        if client_plan.get(name) != server.get(name):
            lines.append(f"{name}: client {_short(client_plan.get(name))} -> server {_short(server.get(name))}")
    client_code = {f"{c['repo']}:{c['path']}": c["sha256"] for c in client_plan.get("code_files") or []}
    server_code = {f"{c['repo']}:{c['path']}": c["sha256"] for c in server.get("code_files") or []}
    if sorted(client_code.values()) != sorted(server_code.values()):
        lines.append("remote-code files: the sha256 of the code the client built differs from the server's")
    return lines


def _short(value: Any) -> str:
    """Hashes cut to 12 characters; everything else as repr."""
    if isinstance(value, str) and len(value) >= 40 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    return repr(value)


def _untrusted_code(client_plan: Mapping[str, Any], server_plan: Any) -> str | None:
    """Why rebuilding the client's plan here would run code this server does not trust (None: it would not).

    The plan comes from the request, so it may name any repository. A plan that trusts remote code is rebuilt
    only when every repository whose code it could run (its repo and its code repo) is one the server already
    runs code from (the served plan trusts it) or one the server's own ``HYBRIDLOAD_TRUST_REMOTE_CODE`` policy
    trusts; the client's trust flag counts for nothing here. An untrusted plan runs no repository code.
    """
    from ..plan.trust import ENV, decide_trust

    if not client_plan.get("trust_remote_code"):
        return None
    repo = str(client_plan.get("repo"))
    wanted = sorted({repo, str(client_plan.get("code_repo") or repo)})
    served: set[str] = set()
    if server_plan is not None and server_plan.trust_remote_code:
        served = {server_plan.repo, server_plan.code_repo or server_plan.repo}
    untrusted = [r for r in wanted if r not in served and not decide_trust(None, [r]).trusted]
    if not untrusted:
        return None
    return (
        f"the client's plan would run remote code of {', '.join(untrusted)}, which this server neither serves nor "
        f"trusts by its {ENV} policy; the operator can allow rebuilding it with {ENV}={','.join(untrusted)}"
    )


def _client_signature(client_plan: Mapping[str, Any]) -> tuple[Any, str | None]:
    """Rebuild the client's meta tree here from its plan (cached); (signature, None) or (None, why not)."""
    import json

    key = json.dumps(client_plan, sort_keys=True)
    with _rebuilt_lock:
        if key in _rebuilt:
            _rebuilt.move_to_end(key)
            return _rebuilt[key]
    from ..load.meta import load_meta
    from ..plan.model import LoadPlan
    from ..tree.signature import signature

    try:
        plan = LoadPlan.from_dict(client_plan, origin="the request's client plan")
        # _untrusted_code() allowed rebuilding this plan: the server trusts its code repositories
        result: tuple[Any, str | None] = (signature(load_meta(plan, trust_remote_code=plan.trust_remote_code or None), plan), None)
    except Exception as exc:  # noqa: BLE001 - typed or not, the reason goes into the refusal, never a crash
        result = (None, f"{type(exc).__name__}: {exc}")
    with _rebuilt_lock:
        _rebuilt[key] = result
        while len(_rebuilt) > _REBUILT_MAX:
            _rebuilt.popitem(last=False)
    return result


def check_request(module: Any, entry: Any) -> None:
    """Refuse (TreeMismatchError) a request traced against another tree than ``module``'s; warn on plan drift."""
    from ..tree.diff import compare
    from ..tree.signature import signature

    entry = _checked(entry)
    server_plan = getattr(module, "hybridload_plan", None)
    _check_deployment_trust(module, entry.get("plan"), server_plan)
    served = signature(module, server_plan)
    client_plan = entry.get("plan")
    facts = plan_differences(client_plan, server_plan)
    if served.digest == entry["digest"]:
        if facts and client_plan is not None and server_plan is not None:
            logger.warning("hybridload: same module tree as the client traced, but the plans differ: %s", "; ".join(facts))
        return

    diff = None
    if client_plan is None:
        rebuilt, why_not = None, "the client sent no plan"
    else:
        why_not = _untrusted_code(client_plan, server_plan)
        rebuilt = None
        if why_not is None:
            rebuilt, why_not = _client_signature(client_plan)
    lines = [
        "hybridload: this request was traced against another module tree than the model this server runs; "
        "refusing to run it.",
        f"  client tree {entry['digest'][:16]}: {_plan_text(client_plan)}",
        f"  server tree {served.digest[:16]}: {_plan_text(server_plan.to_dict() if server_plan is not None else None)}",
    ]
    lines += [f"  plan difference: {line}" for line in facts]
    if rebuilt is not None:
        diff = compare(rebuilt, served, labels=("client", "server"))
        if rebuilt.digest != entry["digest"]:
            lines.append(
                f"  note: the client's plan rebuilt here gives tree {rebuilt.digest[:16]}, not the client's "
                f"{entry['digest'][:16]} (different library versions?); the differences below are against that rebuild"
            )
        if diff.identical:
            lines.append("  the rebuilt client tree equals the served tree: the client built its tree differently")
        else:
            lines.append(f"  first differing path: {diff.first_path}")
            lines.append(diff.report())
    else:
        lines.append(f"  the client's tree could not be rebuilt on this server to list the differing paths ({why_not})")
    lines.append(
        "To fix: build the client model from the plan the server runs (same repo, commit, trust_remote_code, dtype "
        "and attn_implementation), or deploy the model the client traced."
    )
    raise TreeMismatchError("\n".join(lines), diff)


#: set on a served module by a server that decides trust per deployment (NDIF): the deployment's trust_remote_code
DEPLOYMENT_TRUST_ATTR = "hybridload_deployment_trust"


def _runs_remote_code(plan: Mapping[str, Any]) -> bool:
    return "remote" in (plan.get("model_class_source"), plan.get("config_class_source"))


def _check_deployment_trust(module: Any, client_plan: Mapping[str, Any] | None, server_plan: Any) -> None:
    """Refuse (DeploymentTrustError) a request whose plan decided trust otherwise than the serving deployment.

    Only where the decision matters: the client's plan or the served plan runs the repository's remote code.
    For a repository without remote code both decisions load the same classes, so they never disagree.
    """
    deployment_trust = getattr(module, DEPLOYMENT_TRUST_ATTR, None) if module is not None else None
    if deployment_trust is None or client_plan is None:
        return
    client_trust = bool(client_plan.get("trust_remote_code"))
    served_code = server_plan is not None and server_plan.uses_remote_code
    if client_trust == bool(deployment_trust) or not (_runs_remote_code(client_plan) or served_code):
        return
    from ..errors import DeploymentTrustError

    repo = client_plan.get("repo")
    if client_trust:
        why = (
            f"the request was traced against {client_plan.get('model_class')} from the remote code of {repo} "
            "(trust_remote_code=True), and this deployment does not run remote code (trust_remote_code=False)"
        )
        fix = "trace against the model built with trust_remote_code=False, or ask the operator for a trusted deployment"
    else:
        why = (
            f"this deployment runs the remote code of {repo} (trust_remote_code=True), and the request was traced "
            f"against a plan that does not trust it (trust_remote_code=False, {client_plan.get('model_class')})"
        )
        fix = "build the client model with trust_remote_code=True after reviewing the code"
    raise DeploymentTrustError(
        f"hybridload: refusing to run this request: {why}. The server decides trust per deployment; {fix}."
    )


def _plan_text(plan: Mapping[str, Any] | None) -> str:
    if plan is None:
        return "built without a hybridload plan"
    where = f"{plan.get('repo')}@{plan.get('commit')}" if plan.get("commit") else f"{plan.get('repo')} (fingerprint {str(plan.get('fingerprint'))[:12]})"
    return (
        f"{where}: {plan.get('model_class_source')} {plan.get('model_class')}, trust_remote_code="
        f"{plan.get('trust_remote_code')}, dtype={plan.get('dtype')}, attention={plan.get('attn_implementation_built')}"
    )


def forget_rebuilt() -> None:
    """Drop the cached rebuilds of client trees (tests; a server whose Hub cache was refreshed)."""
    with _rebuilt_lock:
        _rebuilt.clear()
