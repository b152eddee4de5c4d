"""Pre-quantized checkpoints (NVFP4, FP8): formats, quantized meta trees, reference numerics, serving.

* :func:`detect_format` / :class:`QuantFormat` -- what a checkpoint folder holds, decided from its JSON files;
* :func:`quantize_meta_tree` -- the served tree of a quantized checkpoint, built GPU-less on a meta build;
* serving (streaming the packed shards into that tree) lives on the served side:
  :func:`hybridload.serve.quantized.load_quantized`;
* :mod:`.numerics` -- the bit-exact pure-PyTorch reference (quantize / dequantize);
* :func:`write_nvfp4_checkpoint` -- a small NVFP4 writer (Model Optimizer's layout) for tests and examples.

Attributes load lazily: importing this package imports neither torch nor transformers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_LAZY: dict[str, str] = {
    "QuantFormat": "hybridload.quant.formats",
    "detect_format": "hybridload.quant.formats",
    "read_format": "hybridload.quant.formats",
    "quantize_meta_tree": "hybridload.quant.meta_tree",
    "QuantRecord": "hybridload.quant.meta_tree",
    "signature_header": "hybridload.quant.meta_tree",
    "NVFP4Linear": "hybridload.quant.modules",
    "ModeloptFP8Linear": "hybridload.quant.modules",
    "CompressedTensorsNVFP4Linear": "hybridload.quant.modules",
    "write_nvfp4_checkpoint": "hybridload.quant.writer",
    "select_backend": "hybridload.quant.backends",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)


if TYPE_CHECKING:  # pragma: no cover
    from .backends import select_backend
    from .formats import QuantFormat, detect_format, read_format
    from .meta_tree import QuantRecord, quantize_meta_tree, signature_header
    from .modules import CompressedTensorsNVFP4Linear, ModeloptFP8Linear, NVFP4Linear
    from .writer import write_nvfp4_checkpoint
