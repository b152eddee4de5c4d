"""Which keyword arguments a plan owns, which place weights, which pass through to transformers.

One table, read by ``resolve``, the loads, ``dispatch`` and the nnsight integration, so no two entry points
disagree about an argument:

* ``PLAN``: decisions a plan records (``resolve`` takes them; a load given a plan only accepts the same value);
* ``LOCK``: how ``resolve`` reads or writes a lock file;
* ``PLACEMENT``: where weights land; may differ per machine; real loads only;
* ``PASS_THROUGH``: other ``from_pretrained`` arguments a real load forwards unchanged;
* ``SERVING``: ``dispatch``'s own options;
* ``REJECTED``: arguments that would make a load disagree with its plan, each with what to do instead.

Anything else given to ``resolve`` is a config override (recorded in the plan, JSON only); anything else given
to a load or ``dispatch`` is a ``TypeError``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..errors import PlanError

PLAN = ("revision", "trust_remote_code", "code_revision", "dtype", "attn_implementation", "auto_class", "device_profile")
LOCK = ("lock", "update_lock")
PLACEMENT = frozenset({
    "device_map", "max_memory", "offload_folder", "offload_buffers", "offload_state_dict", "low_cpu_mem_usage",
    "tp_plan", "tp_size", "device_mesh", "distributed_config",
})
PASS_THROUGH = frozenset({
    "token", "use_safetensors", "variant", "weights_only", "key_mapping", "quantization_config", "adapter_name",
    "adapter_kwargs", "gguf_file",
})
SERVING = frozenset({"strict", "verify_tree", "low_memory", "kernel_fallback", "allow_incomplete_checkpoint"})
REJECTED: Mapping[str, str] = {
    "torch_dtype": "use dtype=",
    "config": "the plan builds the config itself; pass config overrides to hybridload.resolve(...) as keyword arguments",
    "cache_dir": "set HF_HUB_CACHE instead (plans read the same cache as transformers)",
    "local_files_only": "set HF_HUB_OFFLINE=1 instead",
    "force_download": "not part of a load plan",
    "proxies": "configure proxies in the environment",
    "subfolder": "load plans do not support subfolders",
    "state_dict": "not part of a load plan",
    "output_loading_info": "hybridload checks the loading info itself (missing and unexpected tensors are refused)",
}


def kind_of(name: str) -> str:
    """``plan``, ``lock``, ``placement``, ``pass_through``, ``serving``, ``rejected`` or ``other``."""
    if name in PLAN:
        return "plan"
    if name in LOCK:
        return "lock"
    if name in PLACEMENT:
        return "placement"
    if name in PASS_THROUGH:
        return "pass_through"
    if name in SERVING:
        return "serving"
    if name in REJECTED:
        return "rejected"
    return "other"


def refuse_rejected(names: Iterable[str], call: str) -> None:
    for name in names:
        if name in REJECTED:
            raise PlanError(f"{call} does not take {name}=: {REJECTED[name]}")


def check_load_kwargs(kwargs: Mapping[str, Any], call: str, *, allowed: Iterable[str]) -> None:
    """A load's keyword arguments: rejected ones explained, unknown ones a TypeError naming the valid ones."""
    allowed = set(allowed)
    refuse_rejected(kwargs, call)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(
            f"{call} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; it takes "
            f"{', '.join(sorted(allowed))}"
        )


def plan_conflicts(plan: Any, given: Mapping[str, Any]) -> list[str]:
    """Plan decisions given at load time that differ from the plan's (each: 'name=given (the plan has value)')."""
    accepted = {
        "revision": (plan.revision, plan.commit),
        "code_revision": (plan.code_commit,),
        "dtype": (plan.dtype,),
        "attn_implementation": (plan.attn_implementation, plan.attn_implementation_built),
        "auto_class": (plan.auto_class,),
        "trust_remote_code": (plan.trust_remote_code,),
    }
    conflicts = []
    for name, value in given.items():
        if value is None:
            continue
        if name == "device_profile":
            conflicts.extend(_profile_conflict(plan, value))
            continue
        if name == "dtype":
            value = str(value).removeprefix("torch.")
        options = accepted[name]
        if value not in options:
            conflicts.append(f"{name}={value!r} (the plan has {options[-1] if name != 'revision' else plan.commit or plan.fingerprint!r})")
    return conflicts


def _profile_conflict(plan: Any, value: Any) -> list[str]:
    from .device_profile import choose_profile

    given = choose_profile(value)
    recorded = plan.profile
    if given == recorded:
        return []
    return [f"device_profile={given.describe() if given else 'none'} (the plan has {recorded.describe() if recorded else 'none'})"]
