"""Serve a pre-quantized checkpoint: stream its packed shards into the quantized meta tree.

:func:`load_quantized` is what ``hybridload.dispatch`` calls for a plan with a quantization format:

1. the meta build becomes the quantized tree (:func:`~.meta.quantize_meta_tree`, the client's tree too);
2. the checkpoint is streamed with :func:`hybridload.serve.streaming.stream_load`: packed uint8 weights,
   float8 scales and float32 global scales are read verbatim (never cast to the model dtype), one tensor
   group at a time, straight onto their device -- the weights stay packed in GPU memory;
3. every quantized module gets its backend for its device (:func:`~.backends.select_backend`);
4. with ``moe="grouped"``, Nemotron-H-style MoE blocks run the grouped W4A16 kernel (:mod:`.moe`).
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError, QuantizationError
from ..quant import backends
from ..quant.formats import FP8_BLOCK, QuantFormat, read_format
from ..quant.meta_tree import quantize_meta_tree
from ..quant.modules import QUANTIZED_LINEAR_CLASSES

MOE_MODES = ("grouped", "modules")
# kv-cache scales an exporter may write next to the attention projections; the cache stays in the model dtype
_KV_CACHE_SCALE = re.compile(r"\.(k_scale|v_scale|kv_scale|k_proj\.output_scale|v_proj\.output_scale)$")


def _quantized_keys(model: nn.Module) -> set[str]:
    keys = set()
    for path, module in model.named_modules():
        if isinstance(module, QUANTIZED_LINEAR_CLASSES):
            keys.update(f"{path}.{name}" for name, _ in module.named_parameters(recurse=False) if name != "bias")
    return keys


def _check_stored_dtypes(model: nn.Module, checkpoint_dir: str | os.PathLike[str], keys: set[str]) -> None:
    """Packed tensors must already have their module's dtype in the checkpoint: a cast would corrupt them."""
    from .streaming.checkpoint import CheckpointReader

    state = model.state_dict(keep_vars=True)
    with CheckpointReader(checkpoint_dir) as reader:
        wrong = [
            f"{key} ({reader.entries[key].dtype} in the checkpoint, {state[key].dtype} in the tree)"
            for key in sorted(keys)
            if key in reader.entries and reader.entries[key].dtype != state[key].dtype
        ]
    if wrong:
        raise CheckpointError(
            f"{len(wrong)} quantized tensor(s) have another dtype in the checkpoint than the format prescribes: "
            f"{', '.join(wrong[:8])}. The checkpoint is not in the format its config declares."
        )


def assign_backends(model: nn.Module, *, capability: tuple[int, int] | None = None) -> dict[str, int]:
    """Give each quantized module the backend for the device its weight is on; returns backend -> count."""
    counts: dict[str, int] = {}
    chosen: dict[torch.device, str] = {}
    for module in model.modules():
        if not isinstance(module, QUANTIZED_LINEAR_CLASSES):
            continue
        device = next(module.parameters()).device
        if device not in chosen:
            chosen[device] = backends.select_backend(device, capability=capability)
        backend = chosen[device]
        if backend == backends.NATIVE and not hasattr(module, "packed"):
            backend = backends.REFERENCE  # FP8 modules have no NVFP4 path
        if backend == backends.TRITON and not hasattr(module, "packed"):
            backend = backends.REFERENCE
        module.backend = backend
        counts[backend] = counts.get(backend, 0) + 1
    return counts


def load_quantized(
    meta_model: nn.Module,
    checkpoint_dir: str | os.PathLike[str],
    *,
    device_map: Any = None,
    dtype: torch.dtype | str | None = None,
    fmt: QuantFormat | Mapping[str, Any] | None = None,
    moe: str = "grouped",
) -> nn.Module:
    """Load the pre-quantized checkpoint in ``checkpoint_dir`` into ``meta_model`` (a meta build) and return it.

    ``fmt``: the plan's format (default: read from the folder); ``device_map``/``dtype`` as for
    :func:`~hybridload.serve.streaming.stream_load` (``dtype`` applies to the unquantized tensors only);
    ``moe``: ``"grouped"`` (Nemotron-H-style blocks run the grouped kernel) or ``"modules"`` (the model's
    own per-expert calls, every expert submodule's hooks fire).
    """
    if moe not in MOE_MODES:
        raise QuantizationError(f"moe must be one of {MOE_MODES}, got {moe!r}")
    if isinstance(fmt, Mapping):
        fmt = QuantFormat.from_dict(fmt)
    detected = read_format(checkpoint_dir)
    if fmt is None:
        fmt = detected
    if fmt is None:
        raise QuantizationError(f"{checkpoint_dir} is not a pre-quantized checkpoint (no quantization_config, no hf_quant_config.json)")
    if detected is not None and detected.method != fmt.method:
        raise QuantizationError(f"the plan says {fmt.method} but {checkpoint_dir} holds {detected.method}; re-resolve the plan")
    if fmt.method == FP8_BLOCK:
        raise QuantizationError(
            "fine-grained FP8 checkpoints are served by transformers' own quantizer (from_pretrained, dispatch's "
            "default path), which builds the same tree quantize_meta_tree builds on the client"
        )
    record = getattr(meta_model, "hybridload_quant_record", None)
    if record is None:
        quantize_meta_tree(meta_model, fmt)
    elif record.format != fmt:
        raise QuantizationError("the model tree was quantized for another format than the checkpoint's")
    keys = _quantized_keys(meta_model)
    _check_stored_dtypes(meta_model, checkpoint_dir, keys)
    from .streaming import stream_load

    model = stream_load(
        meta_model,
        checkpoint_dir,
        device_map=device_map,
        dtype=dtype,
        keep_dtype=keys,
        skip_keys=_KV_CACHE_SCALE.search if fmt.kv_cache else None,
        allow_quantization_config=True,
    )
    model.hybridload_quant_backends = assign_backends(model)
    model.hybridload_grouped_moe = []
    if moe == "grouped":
        from ..quant.moe import bind_grouped_moe

        model.hybridload_grouped_moe = bind_grouped_moe(model)
    return model


def packed_weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (what the weights take in memory), tied tensors counted once."""
    seen, total = set(), 0
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.data_ptr() in seen and tensor.numel():
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total
