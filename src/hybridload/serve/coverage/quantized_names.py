"""Recognise the tensors a pre-quantized checkpoint stores next to its weights (scales, zero points, packed
blocks, quantization state), so a report can say "a quantized weight with scales the tree has no place for"
instead of listing anonymous leftovers.

The names are the ones transformers' quantizers read: fine-grained FP8 (``weight_scale_inv``), compressed-tensors
and ModelOpt FP8/NVFP4 (``weight_scale``, ``weight_scale_2``, ``input_scale``, ``weight_zero_point``...), GPTQ/AWQ
(``qweight``, ``qzeros``, ``scales``, ``g_idx``), bitsandbytes (``weight.absmax``, ``weight.quant_map``,
``weight.quant_state.*``, ``SCB``) and MXFP4 (``*_blocks`` / ``*_scales``). A scale is only called one when
the weight it belongs to is in the checkpoint too.
"""
from __future__ import annotations

from typing import Any, Mapping

# last name component -> what it is (the weight it belongs to is "<module>.weight")
_MODULE_LEVEL = {
    "weight_scale_inv": "scale",
    "weight_scale": "scale",
    "weight_scale_2": "scale",
    "input_scale": "activation scale",
    "input_scale_inv": "activation scale",
    "weight_zero_point": "zero point",
    "input_zero_point": "zero point",
    "weight_global_scale": "scale",
    "input_global_scale": "activation scale",
    "weight_shape": "quantization state",
    "weight_packed": "packed weight",
    "SCB": "scale",
    "weight_format": "quantization state",
    "scales": "scale",
    "qzeros": "zero point",
    "g_idx": "group index",
}
_WEIGHT_LEVEL = ("absmax", "quant_map", "nested_absmax", "nested_quant_map")  # "<module>.weight.<x>"
_PACKED_WEIGHTS = ("qweight", "weight_packed")
FLOAT_FAMILY = {"F64", "F32", "F16", "BF16"}
QUANTIZED_DTYPES = {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "I4", "U4"}


def quant_method(config: Any) -> str | None:
    quantization = getattr(config, "quantization_config", None)
    if quantization is None:
        return None
    if isinstance(quantization, Mapping):
        return str(quantization.get("quant_method") or "unnamed method")
    return str(getattr(quantization, "quant_method", None) or type(quantization).__name__)


def quantization_role(key: str, checkpoint_keys: Mapping[str, Any]) -> tuple[str, str] | None:
    """(role, the weight it belongs to) when ``key`` is a quantization tensor of a weight in the checkpoint."""
    module, _, last = key.rpartition(".")
    if ".weight.quant_state." in key:
        base = key.split(".weight.quant_state.")[0] + ".weight"
        return ("quantization state", base) if base in checkpoint_keys else None
    if last in _WEIGHT_LEVEL and module.endswith(".weight"):
        return ("quantization state", module) if module in checkpoint_keys else None
    role = _MODULE_LEVEL.get(last)
    if role is not None and module:
        for weight in (f"{module}.weight", *(f"{module}.{packed}" for packed in _PACKED_WEIGHTS)):
            if weight in checkpoint_keys and weight != key:
                return role, weight
        return None
    for suffix, role in (("_blocks", "packed blocks"), ("_scales", "block scales")):
        if last.endswith(suffix):
            stem = f"{module}.{last[: -len(suffix)]}" if module else last[: -len(suffix)]
            partner = stem + ("_scales" if suffix == "_blocks" else "_blocks")
            if partner in checkpoint_keys:
                return role, stem
    return None


def describe_method(config: Any) -> str:
    method = quant_method(config)
    return f"quantization_config: {method}" if method else "the config declares no quantization_config"
