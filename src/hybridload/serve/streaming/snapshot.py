"""Put a model back exactly as it was when a streaming load fails half-way.

The loader swaps meta tensors for real ones module by module; if any group fails, the caller must not
be left holding a half-loaded model (some weights real, some meta) or the memory of the loaded part.
The snapshot keeps only references (the meta tensors cost nothing), so taking it is free.
"""
from __future__ import annotations

from typing import Any

_UNSET = object()


class ModelSnapshot:
    """Parameters, buffers and init flags of every module, restorable in one call."""

    def __init__(self, model: Any) -> None:
        self._modules = [
            (
                module,
                dict(module._parameters),
                dict(module._buffers),
                module.__dict__.get("_is_hf_initialized", _UNSET),
            )
            for module in model.modules()
        ]
        self._model = model
        self._model_attrs = {name: model.__dict__.get(name, _UNSET) for name in ("_weight_conversions", "hf_device_map")}

    def restore(self, remove_hooks: bool = False) -> None:
        """Undo every swap, tie and flag; ``remove_hooks`` drops the accelerate hooks a dispatch added."""
        if remove_hooks:
            from accelerate.hooks import remove_hook_from_submodules

            remove_hook_from_submodules(self._model)
        for module, params, buffers, flag in self._modules:
            module._parameters.clear()
            module._parameters.update(params)
            module._buffers.clear()
            module._buffers.update(buffers)
            if flag is _UNSET:
                module.__dict__.pop("_is_hf_initialized", None)
            else:
                module._is_hf_initialized = flag
        for name, value in self._model_attrs.items():
            if value is _UNSET:
                self._model.__dict__.pop(name, None)
            else:
                self._model.__dict__[name] = value

    def clear_init_flags(self) -> None:
        """Forget module init marks a meta build may have set, so transformers' init sees a fresh model
        (from_pretrained builds without them; a flagged module would skip recomputing its buffers)."""
        for module, *_ in self._modules:
            module.__dict__.pop("_is_hf_initialized", None)
