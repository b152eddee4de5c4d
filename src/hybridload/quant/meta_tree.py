"""Turn a meta-built (unquantized) model tree into the tree a pre-quantized checkpoint is served with.

Client and server call the same :func:`quantize_meta_tree` on the same meta build, so their trees agree by
construction: module paths -- what nnsight interventions name -- stay exactly as they were, only the classes
and tensors of the quantized linears change (names, shapes and dtypes of the checkpoint). Needs no GPU and
no quantization package.

* Model Optimizer NVFP4 / FP8 and compressed-tensors NVFP4: every ``nn.Linear`` not matched by the format's
  exclude patterns becomes :class:`~.modules.NVFP4Linear` / :class:`~.modules.ModeloptFP8Linear` /
  :class:`~.modules.CompressedTensorsNVFP4Linear`. Per-expert MoE linears (Nemotron-H, DeepSeek remote code)
  are linears like any other, so experts keep the per-expert layout the checkpoint and the server hold.
* Fine-grained FP8 (DeepSeek-V3/R1): transformers' own quantizer does the replacement (its
  ``preprocess_model``, the step ``from_pretrained`` runs on the server), minus its environment check,
  which on a machine without a GPU would switch to dequantizing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import QuantizationError
from .formats import CT_NVFP4, FP8_BLOCK, MODELOPT_FP8, MODELOPT_NVFP4, QuantFormat
from .modules import QUANTIZED_LINEAR_CLASSES, CompressedTensorsNVFP4Linear, ModeloptFP8Linear, NVFP4Linear

_CLASSES: dict[str, type[nn.Module]] = {
    MODELOPT_NVFP4: NVFP4Linear,
    MODELOPT_FP8: ModeloptFP8Linear,
    CT_NVFP4: CompressedTensorsNVFP4Linear,
}


@dataclass(frozen=True)
class QuantRecord:
    """What :func:`quantize_meta_tree` did: the format, the module paths it replaced, the linears it kept."""

    format: QuantFormat
    replaced: tuple[str, ...]
    kept: tuple[str, ...]  # linears left unquantized by the format's exclude patterns

    def to_header(self) -> dict[str, Any]:
        """The signature-header block (``{"quantization": ...}``); see :func:`signature_header`."""
        return {
            "quantization": {
                **self.format.to_dict(),
                "replaced_modules": len(self.replaced),
                "kept_linears": list(self.kept),
            }
        }


def _check_meta(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise QuantizationError(f"quantize_meta_tree needs a torch.nn.Module, got {type(model).__name__}")
    real = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.device.type != "meta"]
    if real:
        raise QuantizationError(
            f"quantize_meta_tree replaces modules of a meta-built model, but {len(real)} tensor(s) hold data "
            f"(e.g. {real[0]!r}); build it with hybridload.load_meta (or under torch.device('meta')) first"
        )


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    parent._modules[name] = new  # same registration slot: module order and path unchanged


def _quantize_linears(model: nn.Module, fmt: QuantFormat) -> tuple[list[str], list[str]]:
    cls = _CLASSES[fmt.method]
    replaced, kept = [], []
    for path, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or isinstance(module, QUANTIZED_LINEAR_CLASSES):
            continue
        if fmt.excludes(path):
            kept.append(path)
            continue
        new = cls(
            module.in_features, module.out_features, bias=module.bias is not None, dtype=module.weight.dtype, device="meta"
        )
        _replace(model, path, new)
        replaced.append(path)
    return replaced, kept


def _transformers_fp8_config(model: nn.Module, fmt: QuantFormat) -> Any:
    from transformers.quantizers.auto import AutoQuantizationConfig

    raw = getattr(model.config, "quantization_config", None)
    if raw is not None and not isinstance(raw, Mapping):
        raw = raw.to_dict()
    if raw is None or raw.get("quant_method") != "fp8":
        raw = {
            "quant_method": "fp8",
            "activation_scheme": fmt.activation_scheme,
            "weight_block_size": list(fmt.block_size) if fmt.block_size else None,
            "modules_to_not_convert": list(fmt.exclude) or None,
            "scale_fmt": fmt.extra.get("scale_fmt", "float"),
        }
    return AutoQuantizationConfig.from_dict(dict(raw))


def _quantize_fp8_block(model: nn.Module, fmt: QuantFormat) -> tuple[list[str], list[str]]:
    """transformers' FineGrainedFP8 quantizer's own module replacement, as from_pretrained runs it."""
    from transformers.quantizers.auto import AutoHfQuantizer

    before = {path: type(m) for path, m in model.named_modules()}
    linears = [path for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    quantizer = AutoHfQuantizer.from_config(_transformers_fp8_config(model, fmt), pre_quantized=True)
    quantizer.quantization_config.dequantize = False  # what a GPU server decides; never the CPU fallback
    with torch.device("meta"):
        quantizer.preprocess_model(model=model, dtype=getattr(model.config, "dtype", None), device_map=None, checkpoint_files=None)
    after = {path: type(m) for path, m in model.named_modules()}
    replaced = [path for path, cls in after.items() if path in before and before[path] is not cls]
    kept = [path for path in linears if path not in replaced]
    model.hybridload_hf_quantizer = quantizer  # the server's loader needs the same instance's weight conversions
    return replaced, kept


def quantize_meta_tree(model: nn.Module, fmt: QuantFormat | Mapping[str, Any]) -> QuantRecord:
    """Replace the quantized linears of the meta-built ``model`` in place; return what was replaced.

    ``fmt``: a :class:`QuantFormat` or its ``to_dict()`` (as a load plan stores it). The model keeps every
    module path; ``model.hybridload_quant_record`` holds the returned record.
    """
    if isinstance(fmt, Mapping):
        fmt = QuantFormat.from_dict(fmt)
    if not isinstance(fmt, QuantFormat):
        raise QuantizationError(f"fmt must be a QuantFormat or its to_dict(), got {type(fmt).__name__}")
    _check_meta(model)
    if getattr(model, "hybridload_quant_record", None) is not None:
        raise QuantizationError("this model tree is already quantized (hybridload_quant_record is set); build a fresh meta tree")
    if fmt.method == FP8_BLOCK:
        replaced, kept = _quantize_fp8_block(model, fmt)
    else:
        replaced, kept = _quantize_linears(model, fmt)
    if not replaced:
        raise QuantizationError(
            f"{fmt.method}: no linear layer of {type(model).__name__} was quantized (exclude patterns "
            f"{list(fmt.exclude)} cover all of them?); the checkpoint cannot be this model's"
        )
    record = QuantRecord(fmt, tuple(replaced), tuple(kept))
    model.hybridload_quant_record = record
    return record


def signature_header(model: Any) -> dict[str, Any]:
    """Header facts for :func:`hybridload.signature` (``header=``): the quantization format and what it
    replaced, or ``{}`` for an unquantized tree. The tree digest already differs between formats (classes,
    dtypes); this makes the format readable in signature files and diffs."""
    record = getattr(model, "hybridload_quant_record", None)
    if record is None:
        inner = getattr(model, "_module", None)  # an nnsight wrapper
        record = getattr(inner, "hybridload_quant_record", None)
    return record.to_header() if record is not None else {}
