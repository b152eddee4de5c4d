"""The pure-torch path of a served model: what the GPU runs compare the real kernels against.

Kimi-style model (fla). The pure-torch reference is the *client's* build of the same plan: in a process where
fla is not importable, ``dispatch(plan, low_memory=True, strict=False)`` streams the same checkpoint into the
plan's meta build, so every fla class is hybridload's structural twin (pure torch) and every fla function a
stand-in. A stand-in refuses real tensors by design, so for this comparison only, :func:`references_bound`
rebinds the remote module's stand-in globals, inside a ``with`` block that restores them:

* a kernel function stand-in (``chunk_kda``, ``fused_recurrent_kda``, ``fused_kda_gate``) -> the
  ``hybridload.reference`` function registered for its import path;
* a user function under an fla decorator (``@tensor_cache def head_split``) -> the user function itself
  (``tensor_cache`` only memoises the last call; it does not change values).

Bundled example (mamba_ssm / causal_conv1d): the pure-torch path is ``tests/fakekernels`` on ``sys.path``
(importable ``mamba_ssm``/``causal_conv1d`` whose functions are ``hybridload.reference``) and plain
``from_pretrained`` with hybridload disabled, i.e. the same weights through transformers with pure-torch
kernel packages installed.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator


def remote_namespaces(model: Any) -> dict[str, dict[str, Any]]:
    """module name -> globals dict of every ``transformers_modules`` module whose classes are in ``model``."""
    found: dict[str, dict[str, Any]] = {}
    for module in model.modules():
        for cls in type(module).__mro__:
            name = cls.__module__
            if not name.startswith("transformers_modules.") or name in found:
                continue
            for value in vars(cls).values():
                func = getattr(value, "__func__", value)
                if inspect.isfunction(func) and func.__module__ == name:
                    found[name] = func.__globals__
                    break
    return found


def _replacement(value: Any) -> Any:
    from hybridload.substitutes import reference_for
    from hybridload.shim.standins import is_stand_in

    if not is_stand_in(value) or not isinstance(value, type):
        return None
    wrapped = value.__dict__.get("__hybridload_wrapped__")
    if wrapped is not None and inspect.isfunction(wrapped):
        return wrapped
    if "__hybridload_path__" in value.__dict__ or hasattr(value, "__hybridload_path__"):
        return reference_for(value.__hybridload_path__)
    return None


@contextlib.contextmanager
def references_bound(model: Any) -> Iterator[dict[str, str]]:
    """Rebind stand-in globals of the model's remote code to pure-torch references; yields name -> what."""
    swapped: list[tuple[dict[str, Any], str, Any]] = []
    bound: dict[str, str] = {}
    try:
        for module_name, namespace in remote_namespaces(model).items():
            for name, value in list(namespace.items()):
                replacement = _replacement(value)
                if replacement is None:
                    continue
                swapped.append((namespace, name, value))
                namespace[name] = replacement
                label = module_name.rpartition(".")[2] + "." + name
                bound[label] = f"{replacement.__module__}.{replacement.__qualname__} (for {value.__hybridload_path__})"
        yield bound
    finally:
        for namespace, name, value in reversed(swapped):
            namespace[name] = value
