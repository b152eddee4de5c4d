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


class CheckpointUnavailableError(CheckpointError):
    """A checkpoint's tensor index cannot be read here (offline without a cached copy, the Hub unreachable,
    no safetensors files); the message says where the index can come from instead."""


class CheckpointCoverageError(CheckpointError):
    """A checkpoint does not fill the module tree exactly (raised before any weight is read); carries the
    :class:`~hybridload.coverage.CoverageReport` as ``report``."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class DeviceProfileError(HybridloadError, ValueError):
    """A device profile (JSON, dict or argument) is malformed or names an answer it cannot give."""


class DeviceProfileMismatchError(HybridloadError, RuntimeError):
    """The device a server really has differs from the device profile the plan's meta tree was built for;
    carries the differing answers as ``differences``."""

    def __init__(self, message: str, differences: list[str] | None = None) -> None:
        super().__init__(message)
        self.differences = list(differences or [])


__all__ = [name for name in dir() if name.endswith("Error")]
