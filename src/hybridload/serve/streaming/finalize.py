"""After the last group: what ``from_pretrained`` does once the checkpoint is in, with the same model methods.

Non-persistent buffers (rotary ``inv_freq``...) are not in checkpoints: transformers gives them a fresh
tensor on their device and recomputes them in ``_init_weights``; keys a model allows to be missing get
their init the same way; tied parameters are tied last. Calling the model's own
``mark_tied_weights_as_initialized`` / ``_initialize_missing_keys`` / ``tie_weights`` keeps the result
bit-identical to from_pretrained. Placeholders are NaN-filled instead of ``empty`` so that a tensor the
model's init does *not* recompute is caught instead of silently holding garbage (kept from the build when
the build computed it, an error otherwise).
"""
from __future__ import annotations

from typing import Any

import torch
from accelerate.utils import set_module_tensor_to_device
from transformers.utils.loading_report import LoadStateDictInfo

from ...errors import CheckpointError
from .conversion import ConversionPlan, natural_order
from .devices import DevicePlacement


def finalize_model(model: Any, plan: ConversionPlan, placement: DevicePlacement, not_loaded: set[str]) -> None:
    """Materialise non-persistent buffers and allowed-missing keys, run transformers' init, tie, verify."""
    info = LoadStateDictInfo(
        missing_keys=set(not_loaded),
        unexpected_keys=set(),
        mismatched_keys=set(),
        error_msgs=[],
        conversion_errors={},
        skipped_pp_keys=set(),
    )
    model.mark_tied_weights_as_initialized(info)

    placeholders: dict[str, str] = {}
    for key in natural_order(plan.initialized - set(plan.tied)):
        placeholders[key] = "allowed missing (model's _keys_to_ignore_on_load_missing)"
    for key, _ in model.named_non_persistent_buffers():
        placeholders.setdefault(key, "non-persistent buffer")
    built: dict[str, torch.Tensor] = {}  # values a non-meta build already computed: the fallback
    for key in placeholders:
        current = model.get_parameter_or_buffer(key)
        if current.device.type != "meta":
            built[key] = current
        device = placement.device_for(key)
        set_module_tensor_to_device(
            model, key, device, value=_placeholder(current, device), dtype=current.dtype, clear_cache=False
        )

    model._initialize_missing_keys(False)
    model.tie_weights(missing_keys=set(info.missing_keys), recompute_mapping=False)

    _verify(model, placeholders, built, placement)


def _placeholder(like: torch.Tensor, device: torch.device) -> torch.Tensor:
    if like.is_floating_point() or like.is_complex():
        return torch.full(like.shape, float("nan"), dtype=like.dtype, device=device)
    return torch.zeros(like.shape, dtype=like.dtype, device=device)


def _verify(
    model: Any, placeholders: dict[str, str], built: dict[str, torch.Tensor], placement: DevicePlacement
) -> None:
    on_meta = [
        name
        for name, tensor in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False))
        if tensor is not None and tensor.device.type == "meta"
    ]
    if on_meta:
        raise CheckpointError(
            f"{len(on_meta)} tensor(s) are still on meta after loading: {', '.join(natural_order(on_meta)[:10])}. "
            "The checkpoint does not cover them and transformers' init did not create them; check that the "
            "checkpoint belongs to this config."
        )
    not_computed = []
    for key, why in placeholders.items():
        tensor = model.get_parameter_or_buffer(key)
        if (tensor.is_floating_point() or tensor.is_complex()) and tensor.numel() > 0 and bool(tensor.isnan().all()):
            if key in built:  # init does not recompute it, but the build did: keep the build's value
                set_module_tensor_to_device(model, key, placement.device_for(key), value=built[key], clear_cache=False)
            else:
                not_computed.append(f"{key} ({why})")
    if not_computed:
        raise CheckpointError(
            f"{type(model).__name__}._init_weights does not compute {', '.join(not_computed[:10])}, and the "
            "checkpoint does not hold them; from_pretrained would leave them uninitialised. Fix the modeling "
            "code's _init_weights (or add the tensors to the checkpoint)."
        )
