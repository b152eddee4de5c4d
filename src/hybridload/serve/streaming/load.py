"""Low-memory load: stream a safetensors checkpoint into a meta-built model, one converted group at a time.

``accelerate.load_checkpoint_and_dispatch`` copies checkpoint keys verbatim, so on transformers 5 the
fused MoE parameters (``experts.gate_up_proj``...) that checkpoints store per expert stay on meta. The
usual fix reads every expert into CPU RAM first. :func:`stream_load` instead

1. plans from names and shard headers only: transformers' own conversion mapping for the model
   renames each checkpoint key and groups it with the transform that consumes it
   (:mod:`.conversion`); every model tensor must be covered and every checkpoint key used, shapes are
   checked by running each conversion on meta tensors -- all before a byte of weight is read;
2. streams group by group: read the group's tensors (``preadv`` at the header's offsets; to an accelerator
   through small pinned buffers) straight onto the group's device -- stacked experts straight into their
   slices of the fused tensor --, cast them there, run transformers' conversion there, place the results
   with accelerate's ``set_module_tensor_to_device``, drop everything else -- host memory holds at most one
   converted group;
3. finishes like ``from_pretrained`` (non-persistent buffers, init of allowed-missing keys, ties) and
   dispatches with accelerate hooks when the device map spans several devices.

Any failure restores the model to its meta state before the error propagates: nothing half-loaded.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping

import torch
from accelerate.utils import set_module_tensor_to_device

from ...errors import CheckpointError, HybridloadError, PlanError
from .conversion import ConversionPlan, LoadGroup, natural_order, plan_conversion
from .checkpoint import CheckpointReader, TensorEntry
from .devices import DevicePlacement, resolve_device_map
from .dtypes import TargetDtypes, parse_dtype
from .finalize import finalize_model
from .memory import release_freed_host_memory
from .prefetch import PlannedRead, Prefetcher
from .snapshot import ModelSnapshot
from .staging import chunk_bytes_for
from .sources import MetaSource, StreamSource

logger = logging.getLogger(__name__)

__all__ = ["StreamPlan", "plan_stream", "stream_load"]

_MAX_LISTED = 12


@dataclass(frozen=True)
class StreamPlan:
    """What a streaming load will do, known before any weight is read."""

    conversion: ConversionPlan
    entries: Mapping[str, TensorEntry]
    group_bytes: tuple[int, ...]  # bytes of the model tensors each group writes, in load order

    @property
    def largest_group_bytes(self) -> int:
        return max(self.group_bytes, default=0)

    @property
    def total_bytes(self) -> int:
        return sum(self.group_bytes)

    @property
    def converted_groups(self) -> int:
        return sum(1 for group in self.conversion.groups if group.is_conversion)


def plan_stream(
    model: Any,
    checkpoint_dir: str | os.PathLike[str],
    *,
    dtype: torch.dtype | str | None = None,
    key_mapping: dict[str, str] | None = None,
    keep_dtype: Collection[str] = (),
    skip_keys: Callable[[str], bool] | None = None,
    allow_quantization_config: bool = False,
) -> StreamPlan:
    """Check that ``checkpoint_dir`` loads into ``model`` and return the plan (reads headers only)."""
    _check_model(model, allow_quantization_config)
    with CheckpointReader(checkpoint_dir) as reader:
        return _plan(model, reader, TargetDtypes(model, parse_dtype(dtype), keep_dtype), key_mapping, skip_keys)


def stream_load(
    model: Any,
    checkpoint_dir: str | os.PathLike[str],
    *,
    device_map: Any = None,
    dtype: torch.dtype | str | None = None,
    key_mapping: dict[str, str] | None = None,
    max_memory: Mapping[Any, Any] | None = None,
    keep_dtype: Collection[str] = (),
    skip_keys: Callable[[str], bool] | None = None,
    allow_quantization_config: bool = False,
) -> Any:
    """Load ``checkpoint_dir`` into the meta-built ``model`` in place and return it.

    ``device_map``: None (CPU), "cpu", "cuda", "cuda:N", an int, a torch.device, a dict of module prefix
    -> device, or "auto"/"balanced"/"balanced_low_0"/"sequential" (accelerate's ``infer_auto_device_map``).
    ``dtype``: None keeps the dtypes of the meta build (the plan's); a floating dtype re-targets the
    tensors that followed the build default. ``key_mapping``: regex -> replacement renames applied before
    the model's own conversions (``from_pretrained``'s ``key_mapping``). ``keep_dtype``: model keys loaded
    verbatim in their meta dtype whatever ``dtype`` says (packed quantized weights and their scales);
    ``skip_keys``: checkpoint keys to leave unread (e.g. kv-cache scales no module holds);
    ``allow_quantization_config``: the caller (``hybridload.quant``) has built the quantized tree itself.
    Raises CheckpointError (bad, incomplete or mismatched checkpoint) or PlanError (bad arguments); the
    model is then back on meta, exactly as passed.
    """
    _check_model(model, allow_quantization_config)
    target_dtype = parse_dtype(dtype)
    placement = resolve_device_map(model, device_map, max_memory)
    dtypes = TargetDtypes(model, target_dtype, keep_dtype)
    with CheckpointReader(checkpoint_dir) as reader:
        plan = _plan(model, reader, dtypes, key_mapping, skip_keys)
        reader.staging_chunk_bytes = chunk_bytes_for(plan.largest_group_bytes)
        snapshot = ModelSnapshot(model)
        dispatched = False
        try:
            snapshot.clear_init_flags()
            written: set[str] = set()
            with _prefetcher(plan, reader, placement, dtypes) as prefetcher:
                for group in plan.conversion.groups:
                    written.update(_load_group(model, group, prefetcher, reader, placement, dtypes))
            not_loaded = set(dtypes.keys()) - written
            finalize_model(model, plan.conversion, placement, not_loaded)
            model._weight_conversions = plan.conversion.used_transforms()
            model.eval()  # as from_pretrained returns it
            if len(placement.devices) > 1:
                dispatched = True
                _dispatch(model, placement)
        except BaseException:
            snapshot.restore(remove_hooks=dispatched)
            raise
    if target_dtype is not None:
        model.config.dtype = target_dtype
    logger.debug(
        "streamed %d groups (%d converted) from %s; largest group %.1f MiB",
        len(plan.conversion.groups), plan.converted_groups, checkpoint_dir, plan.largest_group_bytes / 2**20,
    )
    return model


# -- planning ----------------------------------------------------------------------------------------


def _check_model(model: Any, allow_quantization_config: bool = False) -> None:
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise PlanError(
            f"stream_load needs a transformers PreTrainedModel built on meta (hybridload.load_meta), "
            f"got {type(model).__name__}."
        )
    if getattr(model.config, "quantization_config", None) is not None and not allow_quantization_config:
        raise PlanError(
            f"{type(model).__name__} has a quantization_config: pre-quantized checkpoints need their quantized "
            "tree, which stream_load does not build. Use hybridload.quant.load_quantized (NVFP4, FP8) or "
            "from_pretrained."
        )


def _plan(
    model: Any,
    reader: CheckpointReader,
    dtypes: TargetDtypes,
    key_mapping: dict | None,
    skip_keys: Callable[[str], bool] | None = None,
) -> StreamPlan:
    entries = reader.entries if skip_keys is None else {k: v for k, v in reader.entries.items() if not skip_keys(k)}
    conversion = plan_conversion(model, entries, key_mapping)
    _raise_if_incomplete(model, conversion, reader)
    meta_state = model.state_dict()
    _check_shapes(model, conversion, entries, meta_state, dtypes)
    group_bytes = tuple(
        sum(meta_state[t].numel() * dtypes.for_key(t).itemsize for t in group.targets)
        for group in conversion.groups
    )
    return StreamPlan(conversion=conversion, entries=entries, group_bytes=group_bytes)


def _raise_if_incomplete(model: Any, plan: ConversionPlan, reader: CheckpointReader) -> None:
    if not plan.missing and not plan.unexpected:
        return
    parts = []
    if plan.missing:
        missing = natural_order(plan.missing)
        parts.append(
            f"{len(missing)} model tensor(s) would stay on meta (no checkpoint key converts to them): "
            f"{_listing(missing)}"
        )
    if plan.unexpected:
        unexpected = natural_order(plan.unexpected)
        parts.append(f"{len(unexpected)} checkpoint key(s) match no model tensor: {_listing(unexpected)}")
    raise CheckpointError(
        f"checkpoint {reader.root} does not fit {type(model).__name__} "
        f"(model_type {model.config.model_type!r}): " + "; ".join(parts) + ". Check that the checkpoint belongs to "
        "this config (same architecture, layer and expert counts), or pass key_mapping for renamed keys. "
        "Nothing was loaded."
    )


def _check_shapes(
    model: Any,
    plan: ConversionPlan,
    entries: Mapping[str, TensorEntry],
    meta_state: Mapping[str, torch.Tensor],
    dtypes: TargetDtypes,
) -> None:
    """Run every group's conversion on meta tensors of the header shapes; compare with the model's shapes."""
    problems: list[str] = []
    for group in plan.groups:
        source = MetaSource(entries, dtypes.for_key(group.first_target))
        try:
            produced = group.convert(source, model)
        except Exception as exc:  # noqa: BLE001 - reported with the keys involved
            problems.append(
                f"{_describe_sources(group, entries)} cannot be converted into {group.first_target} "
                f"({type(exc).__name__}: {exc})"
            )
            continue
        problems.extend(_compare(group, produced, meta_state, entries))
    if problems:
        raise CheckpointError(
            f"{len(problems)} checkpoint tensor group(s) do not fit the model's shapes: {_listing(problems)}. "
            "The config does not match the checkpoint (hidden size, expert count, vocab?). Nothing was loaded."
        )


def _compare(
    group: LoadGroup,
    produced: Mapping[str, torch.Tensor],
    meta_state: Mapping[str, torch.Tensor],
    entries: Mapping[str, TensorEntry],
) -> list[str]:
    problems = []
    for name, tensor in produced.items():
        if name not in meta_state:
            problems.append(f"{_describe_sources(group, entries)} converts to {name}, which the model does not have")
        elif tuple(tensor.shape) != tuple(meta_state[name].shape):
            problems.append(
                f"{name}: checkpoint gives {tuple(tensor.shape)} (from {_describe_sources(group, entries)}), "
                f"model expects {tuple(meta_state[name].shape)}"
            )
    absent = [t for t in group.targets if t not in produced]
    if absent:
        problems.append(f"{_describe_sources(group, entries)} did not produce {', '.join(absent)}")
    return problems


# -- streaming ---------------------------------------------------------------------------------------


def _read_device(group: LoadGroup, placement: DevicePlacement) -> torch.device:
    # converters transformers marks force_cpu convert on the CPU (huge tensors), the rest on the target device
    return torch.device("cpu") if group.force_cpu else placement.device_for(group.first_target)


def _prefetcher(
    plan: StreamPlan, reader: CheckpointReader, placement: DevicePlacement, dtypes: TargetDtypes
) -> Prefetcher:
    """Reads ahead in load order. The budget bounds unconsumed results. On an accelerator they sit in device
    memory; more read-ahead is faster but the worker threads' freed host buffers linger in their malloc
    arenas (on an H100: two groups ahead loaded 15-25% faster than half a group but peaked at 1.5 groups of
    host memory against 1.0): one group is the compromise. On CPU the results are host memory on top of the
    group being converted: one read ahead only."""
    reads = []
    host_only = True
    for group in plan.conversion.groups:
        device, dtype = _read_device(group, placement), dtypes.for_key(group.first_target)
        host_only = host_only and device.type == "cpu"
        if group.stacks_in_place:  # read straight into the stacked tensor when the group converts
            continue
        for key in group.read_order():
            entry = reader.entries[key]
            reads.append(PlannedRead(key, device, dtype, entry.nbytes // entry.dtype.itemsize * dtype.itemsize))
    budget = 0 if host_only else plan.largest_group_bytes
    return Prefetcher(reader, reads, budget)


def _load_group(
    model: Any,
    group: LoadGroup,
    prefetcher: Prefetcher,
    reader: CheckpointReader,
    placement: DevicePlacement,
    dtypes: TargetDtypes,
) -> list[str]:
    """Convert and place one group; returns the model keys written. Host memory peaks here."""
    source = StreamSource(prefetcher, _read_device(group, placement), dtypes.for_key(group.first_target))
    try:
        produced = group.convert(source, model)
    except HybridloadError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"converting {_describe_sources(group, reader.entries)} into {group.first_target} failed "
            f"({type(exc).__name__}: {exc}); the checkpoint data does not fit the conversion. The model is back "
            "on meta."
        ) from exc
    written = []
    for name in list(produced):
        tensor = produced.pop(name)
        device = placement.device_for(name)
        set_module_tensor_to_device(model, name, device, value=tensor, dtype=dtypes.for_key(name), clear_cache=False)
        model.get_parameter_or_buffer(name)._is_hf_initialized = True  # transformers' init must skip it
        written.append(name)
        del tensor
    if _read_device(group, placement).type == "cpu":  # on an accelerator, host buffers are freed one by one
        release_freed_host_memory(sum(reader.entries[key].nbytes for key in group.source_keys()))
    return written


def _dispatch(model: Any, placement: DevicePlacement) -> None:
    """Several devices: add accelerate's hooks (what from_pretrained does for a multi-device map)."""
    from accelerate import dispatch_model

    device_map = {prefix: _accelerate_device(dev) for prefix, dev in placement.device_map.items()}
    dispatch_model(model, device_map=device_map, skip_keys=getattr(model, "_skip_keys_device_placement", None))


def _accelerate_device(device: torch.device) -> int | str:
    if device.type == "cuda" and device.index is not None:
        return device.index
    return str(device)


# -- messages ----------------------------------------------------------------------------------------


def _describe_sources(group: LoadGroup, entries: Mapping[str, TensorEntry]) -> str:
    keys = group.source_keys()
    files = sorted({entries[k].file for k in keys})
    shown = keys[0] if len(keys) == 1 else f"{keys[0]} (+{len(keys) - 1} more)"
    if group.is_conversion and len(keys) > 1:  # per pattern counts make a missing expert visible
        counts: dict[str, int] = {}
        for pattern, _ in group.sources:
            counts[pattern] = counts.get(pattern, 0) + 1
        shown += " [" + ", ".join(f"{pattern} x{n}" for pattern, n in counts.items()) + "]"
    return f"{shown} in {', '.join(files)}"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown if len(items) <= _MAX_LISTED else f"{shown}, ... ({len(items) - _MAX_LISTED} more)"
