"""What a hybridload replica on NDIF is: its deployment settings and the report it logs when it comes up.

NDIF's controller creates model actors with fixed arguments (model key, dtype, GPUs, trust); the settings of
hybridload's real load therefore come from the environment of the actor's Ray worker, per deployment:

=================================== ======= ==================================================================
variable                            default meaning
=================================== ======= ==================================================================
``HYBRIDLOAD_NDIF_STRICT``          unset   refuse a model that can still reach a kernel stand-in or twin
                                            (unset: ``HYBRIDLOAD_STRICT``, else off)
``HYBRIDLOAD_NDIF_VERIFY_TREE``     ``1``   compare the served tree with the meta build of the same plan
``HYBRIDLOAD_NDIF_LOW_MEMORY``      ``0``   stream the weights into a meta build (``dispatch(low_memory=True)``)
``HYBRIDLOAD_NDIF_KERNEL_FALLBACK`` unset   ``none`` or ``triton`` (unset: ``HYBRIDLOAD_KERNEL_FALLBACK``,
                                            else ``none``)
=================================== ======= ==================================================================

Booleans are ``1/0``, ``true/false``, ``yes/no``, ``on/off``; anything else is a
:class:`~hybridload.errors.DeploymentSettingsError` naming the variable, raised before a model loads. Every
``HYBRIDLOAD_*`` variable of the process that launches the controller is forwarded to the model actors through
Ray's ``runtime_env`` (:func:`forwarded_env`), so one place sets them for every node.

Importing this module imports neither Ray, NDIF, nnsight nor torch.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from ..errors import DeploymentSettingsError

ENV_STRICT = "HYBRIDLOAD_NDIF_STRICT"
ENV_VERIFY_TREE = "HYBRIDLOAD_NDIF_VERIFY_TREE"
ENV_LOW_MEMORY = "HYBRIDLOAD_NDIF_LOW_MEMORY"
ENV_KERNEL_FALLBACK = "HYBRIDLOAD_NDIF_KERNEL_FALLBACK"
FORWARDED_PREFIX = "HYBRIDLOAD_"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(environ: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise DeploymentSettingsError(
        f"{name}={environ[name]!r} is not a boolean; use one of {sorted(_TRUE)} or {sorted(_FALSE)} (or leave it unset)"
    )


def _fallback(environ: Mapping[str, str]) -> str | None:
    from ..serve.fallback import POLICIES

    raw = environ.get(ENV_KERNEL_FALLBACK, "").strip().lower()
    if not raw:
        return None
    if raw not in POLICIES:
        raise DeploymentSettingsError(
            f"{ENV_KERNEL_FALLBACK}={environ[ENV_KERNEL_FALLBACK]!r} is not a kernel fallback policy; use one of "
            f"{', '.join(POLICIES)} (or leave it unset)"
        )
    return raw


@dataclass(frozen=True)
class DeploymentSettings:
    """The :func:`hybridload.dispatch` arguments of one deployment's real load."""

    strict: bool | None = None  # None: dispatch's own default (HYBRIDLOAD_STRICT)
    verify_tree: bool = True
    low_memory: bool = False
    kernel_fallback: str | None = None  # None: dispatch's own default (HYBRIDLOAD_KERNEL_FALLBACK)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DeploymentSettings":
        environ = os.environ if environ is None else environ
        return cls(
            strict=_flag(environ, ENV_STRICT, None),
            verify_tree=bool(_flag(environ, ENV_VERIFY_TREE, True)),
            low_memory=bool(_flag(environ, ENV_LOW_MEMORY, False)),
            kernel_fallback=_fallback(environ),
        )

    def dispatch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`hybridload.dispatch` (a setting left unset is left to dispatch)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def forwarded_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every ``HYBRIDLOAD_*`` variable of ``environ``: what the controller's launch hands its actors."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith(FORWARDED_PREFIX)}


def replica_report(model_key: str, module: Any, settings: DeploymentSettings, deployment_trust: bool) -> dict[str, Any]:
    """What an operator needs to know about a replica that came up: plan, tree digest, kernels, settings."""
    from ..tree.signature import signature

    plan = getattr(module, "hybridload_plan", None)
    report = getattr(module, "hybridload_kernel_report", None)
    if report is None:
        from ..serve.kernel_report import kernel_report

        report = kernel_report(module)
    return {
        "model_key": model_key,
        "deployment_trust_remote_code": deployment_trust,
        "settings": asdict(settings),
        "plan": plan.to_dict() if plan is not None else None,
        "plan_text": plan.describe() if plan is not None else "not built from a hybridload plan",
        "digest": signature(module, plan).digest,
        "kernel_report": report.to_dict(),
        "kernel_report_text": report.format(),
        "stand_ins": len(report.unacceptable()),
    }


def format_replica_report(report: Mapping[str, Any]) -> str:
    """The report as the lines a replica logs when it comes up."""
    lines = [
        f"hybridload replica up: {report['model_key']}",
        f"  plan: {report['plan_text']}",
        f"  tree digest: {report['digest']}",
        f"  deployment trust_remote_code={report['deployment_trust_remote_code']}; settings: "
        + ", ".join(f"{k}={v}" for k, v in report["settings"].items()),
        "  kernel report:",
    ]
    lines += [f"    {line}" for line in report["kernel_report_text"].splitlines()]
    return "\n".join(lines)
