"""One pass over a module tree: every module, parameter and buffer with the facts a signature keeps.

This is the hot path of :func:`hybridload.signature`: it reads ``_modules``/``_parameters``/``_buffers``
directly (one traversal instead of the three ``named_*`` generators) and names each class once per call.
Objects reachable under several paths (tied parameters, shared modules) are recorded once, at their first
path in tree order, and every further path becomes an alias of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .naming import class_name
from .specs import BufferSpec, ParamSpec


@dataclass
class TreeWalk:
    """Raw result of a walk, in tree order (pre-order; a module's own tensors right after it)."""

    modules: dict[str, str] = field(default_factory=dict)  # path -> class name
    parameters: dict[str, ParamSpec] = field(default_factory=dict)
    buffers: dict[str, BufferSpec] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias path -> canonical path
    declared_ties: dict[str, str] = field(default_factory=dict)  # target -> source, from transformers' tie map


def walk(root: Any) -> TreeWalk:
    """Walk ``root`` (a torch.nn.Module) once, depth-first in registration order.

    The hot path of signing: the per-tensor steps are written out inline (a helper call per tensor costs
    more than the step itself).
    """
    result = TreeWalk()
    modules, parameters, buffers, aliases = result.modules, result.parameters, result.buffers, result.aliases
    declared_ties = result.declared_ties
    new_tuple = tuple.__new__  # NamedTuple construction without its Python-level __new__
    class_names: dict[type, str] = {}
    # one (immutable) spec per distinct (shape, dtype[, persistent]): expert stacks repeat a handful of them
    param_specs: dict[tuple, ParamSpec] = {}
    buffer_specs: dict[tuple, BufferSpec] = {}
    seen_modules: dict[int, str] = {}
    seen_tensors: dict[int, str] = {}

    def visit(path: str, module: Any, under_tie_owner: bool) -> None:
        first = seen_modules.setdefault(id(module), path)
        if first is not path:  # a shared module: checked when visited, so the first path in tree order wins
            aliases[path] = first
            return
        state = module.__dict__
        cls = module.__class__
        name = class_names.get(cls)
        if name is None:
            name = class_names[cls] = class_name(cls)
        modules[path] = name
        prefix = path + "." if path else ""
        own = state["_parameters"]
        if own:
            for key, tensor in own.items():
                if tensor is None:
                    continue
                tensor_path = prefix + key
                first = seen_tensors.setdefault(id(tensor), tensor_path)
                if first is not tensor_path:  # tied: the same Parameter object under another path
                    aliases[tensor_path] = first
                    continue
                fact = (tensor.shape, tensor.dtype)
                spec = param_specs.get(fact)
                if spec is None:
                    spec = param_specs[fact] = new_tuple(
                        ParamSpec, (tuple(fact[0]), str(fact[1]).removeprefix("torch."))
                    )
                parameters[tensor_path] = spec
        own = state["_buffers"]
        if own:
            non_persistent = state["_non_persistent_buffers_set"]
            for key, tensor in own.items():
                if tensor is None:
                    continue
                tensor_path = prefix + key
                first = seen_tensors.setdefault(id(tensor), tensor_path)
                if first is not tensor_path:
                    aliases[tensor_path] = first
                    continue
                fact = (tensor.shape, tensor.dtype, key not in non_persistent)
                spec = buffer_specs.get(fact)
                if spec is None:
                    spec = buffer_specs[fact] = new_tuple(
                        BufferSpec, (tuple(fact[0]), str(fact[1]).removeprefix("torch."), fact[2])
                    )
                buffers[tensor_path] = spec
        # transformers' tie map, from the top-most models that carry one (each holds its children's, prefixed)
        if not under_tie_owner:
            declared = state.get("all_tied_weights_keys")
            if isinstance(declared, dict):
                under_tie_owner = True
                for target, source in declared.items():
                    declared_ties[prefix + target] = prefix + source
        for key, child in state["_modules"].items():
            if child is not None:
                visit(prefix + key, child, under_tie_owner)

    visit("", root, False)
    return result
