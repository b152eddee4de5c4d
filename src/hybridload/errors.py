"""Every error class hybridload raises, in one place and one flat hierarchy.

Each class derives from :class:`HybridloadError` and from the builtin exception a caller would naturally
catch (``ValueError`` for bad input, ``ImportError`` for missing code, ``RuntimeError`` for run-time refusals),
and from nothing else: ``except HybridloadError`` catches all of them, ``except PlanError`` catches exactly the
plan errors, not trust or revision errors. Every message says what to do.
"""
from __future__ import annotations


class HybridloadError(Exception):
    """Base class of every error hybridload raises on purpose."""


class InternalError(HybridloadError, RuntimeError):
    """hybridload itself failed (a bug): never blamed on the model's code or the user's input."""


# -- plans: repository, revision, trust, config, code, locks ---------------------------------------------------
class PlanError(HybridloadError, ValueError):
    """A load plan could not be resolved or obeyed (arguments, repository, files)."""


class RevisionResolutionError(HybridloadError, ValueError):
    """A branch or tag could not be turned into a commit (offline with no cache entry, unknown revision)."""


class TrustError(HybridloadError, ValueError):
    """The repository needs remote code and it is not trusted, or a trust decision conflicts with another."""


class ConfigError(HybridloadError, ValueError):
    """A config.json is malformed or cannot be parsed by the class that must parse it."""


class RemoteCodeError(HybridloadError, ImportError):
    """A repository's remote code is missing, names an unknown class, or fails to import or build."""


class LockMismatchError(HybridloadError, ValueError):
    """The repository (or the tree it builds) no longer matches a lock file."""


# -- kernels and stand-ins ------------------------------------------------------------------------------------
class KernelUnavailableError(HybridloadError, ImportError, RuntimeError):
    """A stand-in for a CUDA-only kernel was called where only the real kernel can run.

    An ImportError (the root cause is an absent or broken package) and a RuntimeError (it surfaces at run time).
    """


class StandInReachableError(HybridloadError, RuntimeError):
    """A model meant to run for real can still reach a kernel stand-in (strict mode)."""


class KernelArgumentError(HybridloadError, ValueError):
    """A hybridload kernel was called with arguments the real kernel would reject (shape, dtype, device)."""


# -- transformers 4.x remote code -----------------------------------------------------------------------------
class RemovedTransformersAPIError(HybridloadError, ImportError, RuntimeError):
    """Remote code used a transformers API that this transformers release removed.

    The compatibility layer served a stand-in so the module could be imported and the model built; using it
    (calling, instantiating) raises this.
    """


class ValueDependentInitError(HybridloadError, RuntimeError):
    """Remote ``__init__`` needed a value a meta build does not have (``.item()`` of a meta tensor, a CPU
    constant combined with meta parameters). ``location`` is ``"file:line (function)"`` of the remote line."""

    def __init__(self, message: str, location: str | None = None, operation: str | None = None) -> None:
        super().__init__(message)
        self.location = location
        self.operation = operation


class CompatEntryError(HybridloadError, ValueError):
    """A compatibility entry given to the registry is malformed or clashes with an existing one."""


# -- trees and signatures -------------------------------------------------------------------------------------
class SignatureFormatError(HybridloadError, ValueError):
    """A signature or lock file is corrupt or written by another schema version."""


class SignatureInputError(HybridloadError, TypeError):
    """signature()/compare()/layer_kinds() got something that is not a model, a signature or a signature file."""


class TreeMismatchError(HybridloadError, RuntimeError):
    """Two module trees that must be identical are not; carries the diff."""

    def __init__(self, message: str, diff: object | None = None) -> None:
        super().__init__(message)
        self.diff = diff


# -- weights --------------------------------------------------------------------------------------------------
class CheckpointError(HybridloadError, RuntimeError):
    """A checkpoint is corrupt, truncated, incomplete or does not fit the model."""


class CheckpointUnavailableError(HybridloadError, RuntimeError):
    """A checkpoint's tensor index cannot be read here (offline without a cached copy, the Hub unreachable,
    no safetensors files); the message says where the index can come from instead."""


class CheckpointCoverageError(HybridloadError, RuntimeError):
    """A checkpoint does not fill the module tree exactly (raised before any weight is read); carries the
    :class:`~hybridload.serve.coverage.CoverageReport` as ``report``."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class QuantizationError(HybridloadError, ValueError):
    """A pre-quantized checkpoint's format is unsupported, inconsistent, or does not fit the model tree.

    Raised before any weight is read: the quantization config names an algorithm hybridload cannot build or
    serve (e.g. NVFP4_AWQ, W4A8), a required field is missing or malformed, or the config and the
    checkpoint's ``hf_quant_config.json`` disagree.
    """


# -- device profiles ------------------------------------------------------------------------------------------
class DeviceProfileError(HybridloadError, ValueError):
    """A device profile (JSON, dict or argument) is malformed or names an answer it cannot give."""


class DeviceProfileMismatchError(HybridloadError, RuntimeError):
    """The device a server really has differs from the device profile the plan's meta tree was built for;
    carries the differing answers as ``differences``."""

    def __init__(self, message: str, differences: list[str] | None = None) -> None:
        super().__init__(message)
        self.differences = list(differences or [])


# -- served-side deployments (NDIF) ---------------------------------------------------------------------------
class DeploymentSettingsError(HybridloadError, ValueError):
    """A deployment setting (an environment variable a served-side integration reads) has an unreadable value."""


class DeploymentTrustError(HybridloadError, ValueError):
    """A request's load plan decided trust_remote_code differently from the deployment that serves it."""


__all__ = [name for name in dir() if name.endswith("Error")]
