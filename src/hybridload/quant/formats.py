"""Which pre-quantized format a checkpoint is in, as one frozen, JSON-serialisable record.

The record is decided from the files alone (``config.json``'s ``quantization_config`` and, for checkpoints
exported by NVIDIA Model Optimizer, ``hf_quant_config.json``), before any weight is read, so a client with
no GPU and no quantization package knows exactly which modules the server holds. The load plan stores
:meth:`QuantFormat.to_dict`; both sides rebuild the record with :meth:`QuantFormat.from_dict`.

Formats:

* ``modelopt-nvfp4`` -- NVIDIA Model Optimizer NVFP4: per linear ``weight`` uint8 (two e2m1 codes a byte, low
  nibble first), ``weight_scale`` float8_e4m3fn per ``group_size`` (16) input elements, ``weight_scale_2``
  float32 per tensor, ``input_scale`` float32 per tensor;
* ``modelopt-fp8`` -- Model Optimizer FP8: ``weight`` float8_e4m3fn, ``weight_scale`` and ``input_scale``
  float32 per tensor;
* ``fp8-block`` -- transformers' fine-grained FP8 (``quant_method: fp8``) as DeepSeek-V3/R1 ship it:
  ``weight`` float8_e4m3fn and ``weight_scale_inv`` float32 per ``weight_block_size`` block (128 x 128);
* ``compressed-tensors-nvfp4`` -- compressed-tensors ``nvfp4-pack-quantized``: ``weight_packed`` uint8,
  ``weight_scale`` float8_e4m3fn per 16, ``weight_global_scale`` / ``input_global_scale`` float32 (1,),
  global scales stored as reciprocals.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Mapping

from ..errors import QuantizationError

MODELOPT_NVFP4 = "modelopt-nvfp4"
MODELOPT_FP8 = "modelopt-fp8"
FP8_BLOCK = "fp8-block"
CT_NVFP4 = "compressed-tensors-nvfp4"
METHODS = (MODELOPT_NVFP4, MODELOPT_FP8, FP8_BLOCK, CT_NVFP4)
NVFP4_METHODS = (MODELOPT_NVFP4, CT_NVFP4)

HF_QUANT_CONFIG = "hf_quant_config.json"
_SCHEMA = 1

# modelopt algorithms hybridload can build and serve, and what to say about the ones it cannot
_MODELOPT_ALGOS = {"NVFP4": MODELOPT_NVFP4, "FP8": MODELOPT_FP8}
_MODELOPT_HINTS = {
    "NVFP4_AWQ": "its pre_quant_scale (AWQ smoothing) is not modelled",
    "W4A8_AWQ": "int4 AWQ weights with FP8 activations are not modelled",
    "W4A16_AWQ": "int4 AWQ weights are not modelled",
    "MIXED_PRECISION": "per-layer mixed algorithms are not modelled",
}


@dataclass(frozen=True)
class QuantFormat:
    """How a checkpoint's linear layers are quantized; identical on client and server."""

    method: str  # one of METHODS
    group_size: int | None = None  # NVFP4: input elements per fp8 scale (16)
    block_size: tuple[int, int] | None = None  # fp8-block: (out, in) elements per scale; None = per tensor
    exclude: tuple[str, ...] = ()  # module-name patterns kept unquantized ('*' matches any run of characters)
    activation_scheme: str = "static"  # "static" (a stored input scale) or "dynamic"
    kv_cache: str | None = None  # kv-cache quantization the exporter declared (its scales are not loaded)
    producer: str | None = None  # e.g. "modelopt 0.47.0"
    extra: Mapping[str, Any] = field(default_factory=dict)  # method-specific facts (fp8-block: scale_fmt)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantizationError(f"unknown quantization method {self.method!r}; hybridload knows {', '.join(METHODS)}")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if self.block_size is not None:
            object.__setattr__(self, "block_size", tuple(int(v) for v in self.block_size))
        object.__setattr__(self, "extra", dict(sorted(dict(self.extra).items())))
        if self.method in NVFP4_METHODS and self.group_size != 16:
            raise QuantizationError(
                f"{self.method} needs group_size 16 (one fp8 scale per 16 e2m1 values), got {self.group_size!r}"
            )

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def is_nvfp4(self) -> bool:
        return self.method in NVFP4_METHODS

    def excludes(self, module_path: str) -> bool:
        """True when ``module_path`` (or a module above it) matches an exclude pattern: it stays unquantized."""
        if any(re.match(pattern, module_path) for pattern in self.extra.get("ignore_regex", ())):
            return True  # compressed-tensors "re:" entries
        parts = module_path.split(".")
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            if any(fnmatchcase(prefix, pattern) for pattern in self.exclude):
                return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": _SCHEMA,
            "method": self.method,
            "group_size": self.group_size,
            "block_size": list(self.block_size) if self.block_size is not None else None,
            "exclude": list(self.exclude),
            "activation_scheme": self.activation_scheme,
            "kv_cache": self.kv_cache,
            "producer": self.producer,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QuantFormat":
        if not isinstance(data, Mapping):
            raise QuantizationError(f"a quantization format is a JSON object, got {type(data).__name__}")
        if data.get("schema") != _SCHEMA:
            raise QuantizationError(
                f"quantization format schema {data.get('schema')!r} is not this hybridload's ({_SCHEMA}); "
                "re-resolve the plan with this version"
            )
        known = {"schema", "method", "group_size", "block_size", "exclude", "activation_scheme", "kv_cache", "producer", "extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise QuantizationError(f"quantization format has unknown fields {unknown}; it was written by another version")
        return cls(
            method=data["method"],
            group_size=data.get("group_size"),
            block_size=tuple(data["block_size"]) if data.get("block_size") is not None else None,
            exclude=tuple(data.get("exclude") or ()),
            activation_scheme=data.get("activation_scheme", "static"),
            kv_cache=data.get("kv_cache"),
            producer=data.get("producer"),
            extra=data.get("extra") or {},
        )


def _as_mapping(config: Any) -> Mapping[str, Any]:
    if isinstance(config, Mapping):
        return config
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise QuantizationError(f"detect_format needs config.json as a dict (or a config object), got {type(config).__name__}")


def _producer(*sources: Mapping[str, Any] | None) -> str | None:
    for source in sources:
        producer = (source or {}).get("producer")
        if isinstance(producer, Mapping) and producer.get("name"):
            return f"{producer['name']} {producer.get('version', '')}".strip()
    return None


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise QuantizationError(f"{where} must be a list of module-name patterns, got {value!r}")
    return tuple(value)


def _modelopt(qc: Mapping[str, Any] | None, hf: Mapping[str, Any] | None) -> QuantFormat:
    quantization = (hf or {}).get("quantization") if hf is not None else None
    if hf is not None and not isinstance(quantization, Mapping):
        raise QuantizationError(f"{HF_QUANT_CONFIG} has no 'quantization' object; the export is incomplete")
    algo = (qc or {}).get("quant_algo") or (quantization or {}).get("quant_algo")
    if qc and quantization and qc.get("quant_algo") and quantization.get("quant_algo") and qc["quant_algo"] != quantization["quant_algo"]:
        raise QuantizationError(
            f"config.json says quant_algo {qc['quant_algo']!r} but {HF_QUANT_CONFIG} says {quantization['quant_algo']!r}; "
            "the checkpoint folder mixes two exports"
        )
    method = _MODELOPT_ALGOS.get(str(algo).upper()) if algo else None
    if method is None:
        hint = _MODELOPT_HINTS.get(str(algo).upper(), "it is not among the formats hybridload builds")
        raise QuantizationError(
            f"Model Optimizer quant_algo {algo!r} is not supported: {hint}. hybridload builds and serves modelopt "
            f"{', '.join(sorted(_MODELOPT_ALGOS))}; load this checkpoint with its own runtime (TensorRT-LLM, vLLM)."
        )
    exclude = _patterns((quantization or {}).get("exclude_modules"), f"{HF_QUANT_CONFIG} exclude_modules")
    if qc and qc.get("ignore") is not None:
        exclude = tuple(dict.fromkeys(exclude + _patterns(qc.get("ignore"), "quantization_config.ignore")))
    group_size = None
    if method == MODELOPT_NVFP4:
        group_size = (quantization or {}).get("group_size") or (qc or {}).get("group_size")
        if group_size is None:
            for group in ((qc or {}).get("config_groups") or {}).values():
                group_size = ((group or {}).get("weights") or {}).get("group_size") or group_size
        group_size = 16 if group_size is None else group_size
    kv_cache = (quantization or {}).get("kv_cache_quant_algo") or (qc or {}).get("kv_cache_quant_algo")
    return QuantFormat(
        method=method,
        group_size=group_size,
        exclude=exclude,
        activation_scheme="static",
        kv_cache=kv_cache,
        producer=_producer(hf, qc),
    )


def _fp8_block(qc: Mapping[str, Any]) -> QuantFormat:
    fmt = qc.get("fmt", "e4m3")
    if fmt != "e4m3":
        raise QuantizationError(f"fine-grained FP8 with fmt {fmt!r} is not supported; transformers loads e4m3 only")
    block = qc.get("weight_block_size")
    if block is not None and (
        not isinstance(block, (list, tuple)) or len(block) != 2 or not all(isinstance(v, int) and v > 0 for v in block)
    ):
        raise QuantizationError(f"quantization_config.weight_block_size must be two positive ints, got {block!r}")
    scheme = qc.get("activation_scheme", "dynamic")
    if scheme not in ("dynamic", "static"):
        raise QuantizationError(f"quantization_config.activation_scheme must be 'dynamic' or 'static', got {scheme!r}")
    extra = {"scale_fmt": qc.get("scale_fmt", "float")}
    if qc.get("expert_dtype") not in (None, "fp8"):
        extra["expert_dtype"] = qc["expert_dtype"]
    return QuantFormat(
        method=FP8_BLOCK,
        block_size=tuple(block) if block is not None else None,
        exclude=_patterns(qc.get("modules_to_not_convert"), "quantization_config.modules_to_not_convert"),
        activation_scheme=scheme,
        extra=extra,
    )


def _compressed_tensors(qc: Mapping[str, Any]) -> QuantFormat:
    groups = qc.get("config_groups") or {}
    formats = {qc.get("format")} | {(g or {}).get("format") for g in groups.values()}
    formats.discard(None)
    if formats != {"nvfp4-pack-quantized"}:
        raise QuantizationError(
            f"compressed-tensors format(s) {sorted(formats) or 'unspecified'} are not supported; hybridload builds "
            "'nvfp4-pack-quantized' only"
        )
    for name, group in groups.items():
        weights = (group or {}).get("weights") or {}
        if (weights.get("num_bits"), weights.get("type"), weights.get("group_size")) != (4, "float", 16):
            raise QuantizationError(
                f"compressed-tensors group {name!r} is not NVFP4 (num_bits 4, type float, group_size 16): {weights}"
            )
        targets = (group or {}).get("targets") or []
        if any(t != "Linear" for t in targets):
            raise QuantizationError(f"compressed-tensors group {name!r} targets {targets}; only Linear layers are built")
    ignore = _patterns(qc.get("ignore"), "quantization_config.ignore")
    regexes = [p[3:] for p in ignore if p.startswith("re:")]
    return QuantFormat(
        method=CT_NVFP4,
        group_size=16,
        exclude=tuple(p for p in ignore if not p.startswith("re:")),
        activation_scheme="static",
        extra={"ignore_regex": regexes} if regexes else {},
        producer=_producer(qc),
    )


def detect_format(config: Mapping[str, Any] | Any, hf_quant_config: Mapping[str, Any] | None = None) -> QuantFormat | None:
    """The checkpoint's quantization format, or None for an unquantized checkpoint.

    ``config``: config.json as a dict (or a transformers config); ``hf_quant_config``: the folder's
    ``hf_quant_config.json`` if it has one (older Model Optimizer exports carry the format only there).
    Raises QuantizationError for a format hybridload cannot build (which algorithm, and why).
    """
    config = _as_mapping(config)
    qc = config.get("quantization_config")
    if qc is not None and not isinstance(qc, Mapping):
        qc = _as_mapping(qc)
    if hf_quant_config is not None and not isinstance(hf_quant_config, Mapping):
        raise QuantizationError(f"{HF_QUANT_CONFIG} must be a JSON object, got {type(hf_quant_config).__name__}")
    if qc is None:
        return _modelopt(None, hf_quant_config) if hf_quant_config is not None else None
    method = qc.get("quant_method")
    if method == "modelopt":
        return _modelopt(qc, hf_quant_config)
    if hf_quant_config is not None:
        raise QuantizationError(
            f"the folder has {HF_QUANT_CONFIG} (Model Optimizer) but config.json says quant_method {method!r}; "
            "the checkpoint folder mixes two exports"
        )
    if method == "fp8":
        return _fp8_block(qc)
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    raise QuantizationError(
        f"quant_method {method!r} is not one hybridload builds quantized trees for (modelopt NVFP4/FP8, "
        "fine-grained fp8, compressed-tensors nvfp4-pack-quantized). transformers' own quantizers for it run "
        "on the server only; its meta tree would not match the served one."
    )


def read_format(checkpoint_dir: str | os.PathLike[str]) -> QuantFormat | None:
    """:func:`detect_format` of a local model folder (``config.json`` plus ``hf_quant_config.json`` if present)."""
    root = Path(checkpoint_dir)
    try:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuantizationError(f"cannot read {root / 'config.json'}: {exc}") from None
    hf = None
    if (root / HF_QUANT_CONFIG).is_file():
        try:
            hf = json.loads((root / HF_QUANT_CONFIG).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise QuantizationError(f"{root / HF_QUANT_CONFIG} is not valid JSON: {exc}") from None
    return detect_format(config, hf)

