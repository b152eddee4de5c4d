"""What ``dispatch`` checks before it reads a weight: the server's device against the plan's device profile,
and the checkpoint's tensor index against the tree this server builds.

The checkpoint is checked against the *served* meta tree: the plan built in a ``stream`` session, with this
machine's own ``torch.cuda`` answers (what ``from_pretrained`` or the streaming loader will really build), not
the plan's profile (what a client built).
"""
from __future__ import annotations

import warnings
from typing import Any

from ..build.session import build_session
from ..errors import DeviceProfileMismatchError
from ..load.config import ready, session_spec
from ..load.meta import build_meta_in_session
from ..plan.model import LoadPlan


def served_meta(plan: LoadPlan, kernel_fallback: str) -> Any:
    """The meta tree this server builds for ``plan`` (the tree the weights go into)."""
    ready(plan)
    with build_session(session_spec(plan, "stream", kernel_fallback=kernel_fallback)) as record:
        return build_meta_in_session(plan, record)


def require_checkpoint_fit(meta: Any, folder: Any, *, allow_incomplete: bool = False, key_mapping: Any = None) -> Any:
    """The coverage report of ``folder`` for ``meta`` (shard headers only); raises CheckpointCoverageError,
    before a weight is read, unless it fills the tree exactly or ``allow_incomplete`` accepts a partial one."""
    from .coverage import checkpoint_coverage

    report = checkpoint_coverage(meta, folder, key_mapping=key_mapping)
    if not allow_incomplete:
        report.raise_if_incomplete()
    return report


_FIX = ("write the lock on this server (`hybridload lock MODEL -o model.lock.json` records this device) and build "
        "clients from it, or resolve with device_profile='current' here")


def check_device(plan: LoadPlan, *, strict: bool) -> list[str]:
    """The answers of this machine's device that differ from the plan's profile ([] when none do, when the
    plan records no profile, or when no remote code runs: transformers' own classes build one tree anywhere).

    Differing answers matter only if the tree depends on them: the plan's meta tree is built under its profile
    and under this machine's answers, the device being the only difference between the two builds. Different
    trees are a warning, or DeviceProfileMismatchError in
    strict mode; identical trees leave the differences on the loaded model as a record, silently.
    """
    import dataclasses

    from ..load.meta import load_meta
    from ..plan.device_profile import DeviceProfile, check_device_matches
    from ..tree.diff import compare
    from ..tree.signature import signature

    profile = plan.profile
    if profile is None or not plan.uses_remote_code:
        return []
    differences = check_device_matches(profile)
    if not differences:
        return []
    here = dataclasses.replace(plan, device_profile=DeviceProfile.current().to_dict())
    diff = compare(signature(load_meta(plan)), signature(load_meta(here)), labels=("plan's device profile", "this server"))
    if diff.identical:
        return differences
    text = "\n".join(f"  {line}" for line in differences)
    message = (
        f"this server's device differs from the device profile the plan's meta tree was built for "
        f"({profile.describe()}):\n{text}\nand the model's code builds another tree here (first difference: "
        f"{diff.first_path}); clients' interventions may not fit the served model. To fix it, {_FIX}."
    )
    if strict:
        raise DeviceProfileMismatchError("strict mode: " + message, differences)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return differences
