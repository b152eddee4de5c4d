"""Per-process verdicts on kernel packages: really importable, absent, installed but broken, or importable but
unusable here (``driverless``: triton without an active GPU driver, which a CPU-only machine with a CUDA build of
torch has).

A verdict is reached once per process (re-importing a broken CUDA extension is slow and can have side
effects) and explains itself, so errors and ``hybridload doctor`` can say *why* a stand-in was used.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.metadata
import sys
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal, Mapping

from ..hooks.sys_modules import modules_snapshot
from .ownership import suspended

Status = Literal["real", "absent", "broken", "driverless"]

_lock = threading.Lock()
_verdicts: dict[str, "Verdict"] = {}


@dataclass(frozen=True)
class Verdict:
    package: str
    status: Status
    error: str | None = None  # "ExcType: message" of the failed real import
    dist_version: str | None = None
    origin: str | None = None
    exception: BaseException | None = field(default=None, compare=False, repr=False)
    real_spec: importlib.machinery.ModuleSpec | None = field(default=None, compare=False, repr=False)
    #: driverless packages: the real modules (what everyone outside the window's own imports gets)
    real_modules: Mapping[str, ModuleType] = field(default_factory=dict, compare=False, repr=False)

    @property
    def reason(self) -> str:
        if self.status == "absent":
            return "not installed"
        if self.status == "broken":
            return f"installed but fails to import ({self.error})"
        if self.status == "driverless":
            return f"installed but unusable on this machine ({self.error})"
        return "importable"

    def import_error(self, name: str | None = None) -> ImportError:
        """The error a plain import of the package raises on this machine (what outsiders must see)."""
        if self.status == "absent":
            return ModuleNotFoundError(f"No module named {self.package!r}", name=self.package)
        if self.status == "driverless":
            wanted = name or self.package
            return ImportError(
                f"{wanted} is stood in for by the meta build running in another part of this process ({self.package} "
                f"is {self.reason}); import it after the build", name=wanted,
            )
        if isinstance(self.exception, ImportError):
            return self.exception
        return ImportError(f"{self.package} failed to import: {self.error}", name=self.package)


def known(package: str) -> Verdict | None:
    with _lock:
        return _verdicts.get(package)


def record(verdict: Verdict) -> Verdict:
    with _lock:
        return _verdicts.setdefault(verdict.package, verdict)


def reset_verdicts() -> None:
    """Forget every verdict (tests that install/uninstall fake packages between cases)."""
    with _lock:
        _verdicts.clear()


def dist_version(package: str) -> str | None:
    for candidate in dict.fromkeys((package, package.replace("_", "-"))):
        try:
            return importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
        except Exception:  # pragma: no cover - broken metadata must not break an import
            return None
    return None


def find_real_spec(package: str) -> importlib.machinery.ModuleSpec | None:
    """The spec the import system finds for ``package`` with no stand-in finder involved (no import)."""
    from .finder import StandInFinder

    for finder in list(sys.meta_path):
        if isinstance(finder, StandInFinder) or not hasattr(finder, "find_spec"):
            continue
        try:
            spec = finder.find_spec(package, None, None)
        except Exception:
            continue
        if spec is not None:
            return spec
    return None


def drop_partial_modules(package: str, keep: set[str]) -> list[str]:
    """Remove ``package`` and its submodules left in sys.modules by a failed import (not ``keep``)."""
    prefix = package + "."
    removed = [n for n in modules_snapshot() if (n == package or n.startswith(prefix)) and n not in keep]
    for name in removed:
        sys.modules.pop(name, None)
    return removed


def broken(package: str, exc: BaseException, spec: Any = None) -> Verdict:
    return Verdict(
        package,
        "broken",
        error=f"{type(exc).__name__}: {exc}",
        dist_version=dist_version(package),
        origin=getattr(spec, "origin", None),
        exception=exc,
        real_spec=spec,
    )


def usability_problem(package: str, module: ModuleType) -> str | None:
    """Why an importable ``package`` cannot run here (its registered usability check), or None."""
    from .packages import usability_check

    check = usability_check(package)
    if check is None:
        return None
    try:
        return check(module)
    except Exception as exc:  # noqa: BLE001 - a failing check is itself the answer
        return f"{type(exc).__name__}: {exc}"


def driverless(package: str, problem: str, spec: Any, modules: Mapping[str, ModuleType]) -> Verdict:
    return Verdict(
        package,
        "driverless",
        error=problem,
        dist_version=dist_version(package),
        origin=getattr(spec, "origin", None),
        real_spec=spec,
        real_modules=dict(modules),
    )


def real_or_driverless(package: str, module: ModuleType, spec: Any = None) -> Verdict:
    """The verdict for a package whose real import succeeded (usability check included)."""
    from ..hooks.sys_modules import modules_under

    problem = usability_problem(package, module)
    if problem is not None:
        return record(driverless(package, problem, spec or getattr(module, "__spec__", None), modules_under(package)))
    return record(Verdict(package, "real", dist_version=dist_version(package), origin=getattr(module, "__file__", None)))


def probe_kernel_package(package: str) -> Verdict:
    """Decide (once per process) whether ``package`` really imports here. Imports it if present.

    Used by ``hybridload doctor`` and the server-side checks; inside a window the finder reaches the same
    verdict lazily, on first import.
    """
    verdict = known(package)
    if verdict is not None:
        return verdict
    module = sys.modules.get(package)
    if module is not None and not getattr(module, "__hybridload_stand_in__", False):
        return real_or_driverless(package, module)
    spec = find_real_spec(package)
    if spec is None:
        return record(Verdict(package, "absent"))
    before = set(modules_snapshot())
    with suspended():
        try:
            module = importlib.import_module(package)
        except Exception as exc:  # any failure of a real import means "broken here"
            drop_partial_modules(package, keep=before)
            return record(broken(package, exc, spec))
    return real_or_driverless(package, module, spec)
