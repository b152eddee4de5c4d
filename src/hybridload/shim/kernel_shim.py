"""``kernel_shim()``: the scoped, reversible window in which kernel packages may be stood in for.

Entering the outermost window (per process) installs the finder, the import guards and the availability
guard; leaving it removes them, drops every stand-in module from ``sys.modules``, clears availability
caches that gained answers, and evicts remote-code modules executed meanwhile. Windows nest within a
thread and are serialized across threads.
"""
from __future__ import annotations

import functools
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from ..hooks.meta_path import MetaPathEntry
from ..hooks.sys_modules import modules_snapshot
from . import eviction
from .finder import StandInFinder
from .guards import IMPORT_PATCHES, AvailabilityGuard
from .ownership import state, window_lock
from .packages import kernel_packages, usability_check
from .probe import known
from .standins import StandInModule, add_recorder, remove_recorder

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(eq=False)  # reports are compared by identity: nested windows may hold equal contents
class ShimReport:
    """What one window served. Live while the window is open, final after it closes."""

    stand_ins: dict[str, list[str]] = field(default_factory=dict)  # package -> symbol paths
    modules: dict[str, list[str]] = field(default_factory=dict)  # package -> stand-in module names
    reasons: dict[str, str] = field(default_factory=dict)  # package -> why it was stood in for
    evicted: list[str] = field(default_factory=list)  # transformers_modules.* evicted on exit
    caches_cleared: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def packages(self) -> list[str]:
        return sorted(set(self.modules) | set(self.stand_ins))

    def __bool__(self) -> bool:
        return bool(self.modules or self.stand_ins)

    def _module(self, package: str, name: str) -> None:
        with self._lock:
            names = self.modules.setdefault(package, [])
            if name not in names:
                names.append(name)
                names.sort()
            verdict = known(package)
            self.reasons.setdefault(package, verdict.reason if verdict else "not installed")

    def _symbol(self, package: str, path: str) -> None:
        with self._lock:
            paths = self.stand_ins.setdefault(package, [])
            if path not in paths:
                paths.append(path)
                paths.sort()

    def to_dict(self) -> dict[str, Any]:
        return {
            "packages": self.packages,
            "stand_ins": {k: list(v) for k, v in sorted(self.stand_ins.items())},
            "reasons": dict(sorted(self.reasons.items())),
            "evicted": list(self.evicted),
        }

    def summary(self) -> str:
        if not self:
            return "no kernel package was stood in for"
        def symbols(count: int) -> str:
            return f"{count} symbol" if count == 1 else f"{count} symbols"

        parts = [f"{p} ({self.reasons.get(p, '?')}; {symbols(len(self.stand_ins.get(p, [])))})" for p in self.packages]
        return "stood in for: " + ", ".join(parts)


class _Outermost:
    """Everything the outermost window installs, so that exit can undo exactly that."""

    def __init__(self, evict: bool) -> None:
        self.reports: list[ShimReport] = []
        self.evict = evict
        self.finder = StandInFinder(self._on_module)
        self.modules_before = eviction.Snapshot()
        self.availability = AvailabilityGuard()
        self.patches = list(IMPORT_PATCHES)
        for patch in self.patches:
            patch.acquire()
        add_recorder(self._on_symbol)
        self.entry = MetaPathEntry(self.finder)
        self.entry.acquire()

    def stand_in_driverless(self) -> None:
        """Driverless packages imported before the window: their stand-ins take their place until it closes."""
        for package in sorted(kernel_packages()):
            if usability_check(package) is not None:
                self.finder.stand_in_for_loaded(package)

    def _on_module(self, package: str, name: str) -> None:
        for report in list(self.reports):
            report._module(package, name)

    def _on_symbol(self, package: str, path: str) -> None:
        for report in list(self.reports):
            report._symbol(package, path)

    def close(self) -> tuple[list[str], list[str]]:
        self.entry.release()
        remove_recorder(self._on_symbol)
        served_any = bool(state.served)
        for name, module in modules_snapshot().items():
            if isinstance(module, StandInModule):
                sys.modules.pop(name, None)
        for name, module in self.finder.displaced.items():
            sys.modules.setdefault(name, module)
        state.served = frozenset()
        for patch in reversed(self.patches):
            patch.release()
        cleared = self.availability.restore()
        evicted = self.modules_before.evict_changed() if served_any and self.evict else []
        return evicted, cleared


_outermost: _Outermost | None = None
entries = 0  # process-wide count of window entries (tests: a build enters the shim once)


class kernel_shim:  # noqa: N801 - used like a function: ``with kernel_shim():`` / ``@kernel_shim()``
    """Let imports of registered kernel packages succeed with inert stand-ins while the window is open.

    ``with kernel_shim() as report: ...`` or ``@kernel_shim()`` on a function. Re-entrant; serialized across
    threads. See docs/shim.md for the guarantees.

    Served side only: ``triton=True`` makes stood-in symbols that hybridload has a Triton kernel for resolve to
    that kernel, and ``evict=False`` keeps the remote-code modules imported meanwhile (they bound those kernels
    on purpose); both apply to the outermost window.
    """

    def __init__(self, *, triton: bool = False, evict: bool = True) -> None:
        self._reports: list[ShimReport] = []
        self._triton = triton
        self._evict = evict

    def __enter__(self) -> ShimReport:
        global _outermost, entries
        window_lock.acquire()
        try:
            if state.depth == 0:
                state.owner = threading.get_ident()
                state.triton = self._triton
                _outermost = _Outermost(evict=self._evict)
            state.depth += 1
            entries += 1
            report = ShimReport()
            assert _outermost is not None
            _outermost.reports.append(report)
            self._reports.append(report)
            if state.depth == 1:
                _outermost.stand_in_driverless()
            return report
        except BaseException:
            if state.depth == 0:
                if _outermost is not None:
                    _outermost.close()
                    _outermost = None
                state.owner = None
                state.triton = False
            window_lock.release()
            raise

    def __exit__(self, *exc: Any) -> None:
        global _outermost
        try:
            report = self._reports.pop()
            assert _outermost is not None
            _outermost.reports.remove(report)
            state.depth -= 1
            if state.depth == 0:
                try:
                    report.evicted, report.caches_cleared = _outermost.close()
                finally:
                    _outermost = None
                    state.owner = None
                    state.triton = False
        finally:
            window_lock.release()

    def __call__(self, fn: F) -> F:
        triton, evict = self._triton, self._evict

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with kernel_shim(triton=triton, evict=evict):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def window_open() -> bool:
    """True while any thread is inside a shim window."""
    return state.depth > 0
