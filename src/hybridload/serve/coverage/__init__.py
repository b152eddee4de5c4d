"""Checkpoint coverage without weights: does a checkpoint fill a meta tree exactly, by the real load's rules?

``checkpoint_coverage(meta_model, checkpoint)`` reads the checkpoint's tensor index (local safetensors
headers, ``model.safetensors.index.json``, or the Hub's safetensors metadata: headers only), maps it with the
conversions ``from_pretrained`` applies (transformers' conversion mapping and key renames, expert fusion,
base-model prefix, tied weights, the class's ignore-on-load patterns), recognises quantization scales, and
returns a :class:`CoverageReport`. See docs/signatures.md and docs/ci.md.
"""
from __future__ import annotations

from .check import checkpoint_coverage, coverage_for_plan, require_coverage, resolve_index
from .hub import hub_index
from .index import IndexedTensor, TensorIndex, local_index
from .report import Allowed, CoverageReport, Mismatch, UnconsumedTensor, UnfilledTensor

__all__ = [
    "Allowed",
    "CoverageReport",
    "IndexedTensor",
    "Mismatch",
    "TensorIndex",
    "UnconsumedTensor",
    "UnfilledTensor",
    "checkpoint_coverage",
    "coverage_for_plan",
    "hub_index",
    "local_index",
    "require_coverage",
    "resolve_index",
]
