"""Load plans: every loading decision (commit, trust, classes, dtype, attention) resolved once, then obeyed.

Module-level imports here stay light: ``import hybridload`` must not import torch or transformers.
"""
from __future__ import annotations

from .model import CodeFile, LoadPlan

__all__ = ["CodeFile", "LoadPlan"]
