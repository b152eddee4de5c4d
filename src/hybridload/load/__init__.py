"""The loads of a plan: ``resolve`` it, then its config, meta tree and tokenizer, each in one build session.

The real load (weights) is served-side: :func:`hybridload.serve.real.load_real` and
:func:`hybridload.dispatch`.
"""
from __future__ import annotations

from .config import load_config, verify_files
from .meta import load_meta
from .resolve import resolve
from .tokenizer import load_tokenizer

__all__ = ["load_config", "load_meta", "load_tokenizer", "resolve", "verify_files"]
