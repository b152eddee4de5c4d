"""Typed errors. Every error hybridload raises on bad input derives from HybridloadError and says what to do."""
from __future__ import annotations


class HybridloadError(Exception):
    """Base class of every error hybridload raises on purpose."""


class KernelUnavailableError(HybridloadError, ImportError, RuntimeError):
    """A stand-in for a CUDA-only kernel was called where only the real kernel can run.

    Subclasses ImportError (the root cause is an absent or broken package) and RuntimeError
    (it surfaces at run time, not at import time).
    """


class StandInReachableError(HybridloadError, RuntimeError):
    """A model meant to run for real can still reach a kernel stand-in (strict mode)."""


class PlanError(HybridloadError, ValueError):
    """A load plan could not be resolved (repo, revision, files)."""


class RevisionResolutionError(PlanError):
    """A branch or tag could not be turned into a commit (offline with no cache entry, unknown revision)."""


class TrustError(PlanError):
    """The repository needs remote code and it is not trusted."""


class ConfigError(PlanError):
    """A config.json is malformed or cannot be parsed by the class that must parse it."""


class RemoteCodeError(PlanError):
    """A remote-code file named by auto_map is missing or names an unknown class."""


class LockMismatchError(PlanError):
    """The repository no longer matches a lock file (other commit, changed code files)."""


class SignatureFormatError(HybridloadError, ValueError):
    """A signature file is corrupt or written by another schema version."""


class TreeMismatchError(HybridloadError, RuntimeError):
    """Two module trees that must be identical are not; carries the diff."""

    def __init__(self, message: str, diff: object | None = None) -> None:
        super().__init__(message)
        self.diff = diff


class CheckpointError(HybridloadError, RuntimeError):
    """A checkpoint is corrupt, truncated, incomplete or does not fit the model."""


class QuantizationError(PlanError):
    """A pre-quantized checkpoint's format is unsupported, inconsistent, or does not fit the model tree.

    Raised before any weight is read: the quantization config names an algorithm hybridload cannot build or
    serve (e.g. NVFP4_AWQ, W4A8), a required field is missing or malformed, or the config and the
    checkpoint's ``hf_quant_config.json`` disagree.
    """


__all__ = [name for name in dir() if name.endswith("Error")]
