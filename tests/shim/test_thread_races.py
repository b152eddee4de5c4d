"""Bounded stress tests of the shim under threads (8 building threads, thousands of imports, a few seconds).

* A thread outside any window never receives a stand-in, however its import interleaves with a window that is
  putting one into ``sys.modules`` (the guard checks before *and after* the real import machinery).
* Scans of ``sys.modules`` inside a window never fail while other threads import (they start from a copy).
* A failure inside hybridload itself is an InternalError, never blamed on the model's code.
* The served-side Triton fallback holds the kernel-shim window only while it imports the model's code, not for
  the whole load.
"""
from __future__ import annotations

import importlib
import sys
import threading
import time
import types
from contextlib import contextmanager
from typing import Iterator

import pytest

import hybridload
from hybridload.shim.standins import StandInModule

PACKAGE = "hl_race_kernel"  # a made-up kernel package: absent here, registered for the test


@contextmanager
def fast_switching() -> Iterator[None]:
    """Switch threads every microsecond, so interleavings that are rare in production happen in a test."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.fixture
def race_package():
    from hybridload.shim.packages import unregister_kernel_package

    hybridload.register_kernel_package(PACKAGE)
    try:
        yield PACKAGE
    finally:
        unregister_kernel_package(PACKAGE)


def _run(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a stress thread did not finish"


def test_a_thread_outside_the_windows_never_gets_a_stand_in(race_package):
    stop = threading.Event()
    errors: list[BaseException] = []
    leaks: list[str] = []
    imports = [0]

    def window_thread() -> None:
        try:
            while not stop.is_set():
                with hybridload.kernel_shim():
                    importlib.import_module(f"{race_package}.ops.kernel")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def outsider() -> None:
        namespace: dict = {}
        for index in range(4000):
            try:
                if index % 2:
                    module = importlib.import_module(race_package)
                else:
                    exec(f"import {race_package} as module", namespace)  # the import statement's path
                    module = namespace["module"]
                leaks.append(repr(module))
            except ImportError:
                pass
            imports[0] += 1
        stop.set()

    with fast_switching():
        _run([*(threading.Thread(target=window_thread) for _ in range(8)), threading.Thread(target=outsider)])
    assert not errors, errors[0]
    assert imports[0] == 4000
    assert leaks == [], f"{len(leaks)} of 4000 imports outside any window got a stand-in: {leaks[0]}"
    assert not isinstance(sys.modules.get(race_package), StandInModule)


def test_scanning_sys_modules_survives_concurrent_imports(race_package):
    stop = threading.Event()
    errors: list[BaseException] = []
    windows = [0]

    def window_thread() -> None:
        try:
            for _ in range(100):
                with hybridload.kernel_shim() as report:
                    importlib.import_module(f"{race_package}.a.b")
                assert report.packages == [race_package]
                windows[0] += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def importer(worker: int) -> None:
        while not stop.is_set():  # entries appear in and leave sys.modules all the time, a few at a time
            names = [f"hl_race_fresh_{worker}_{index}" for index in range(16)]
            for name in names:
                sys.modules[name] = types.ModuleType(name)
            for name in names:
                sys.modules.pop(name, None)

    churn = [threading.Thread(target=importer, args=(n,)) for n in range(2)]
    builders = [threading.Thread(target=window_thread) for _ in range(8)]
    with fast_switching():
        for thread in churn:
            thread.start()
        try:
            _run(builders)
        finally:
            stop.set()
            for thread in churn:
                thread.join()
    assert not errors, f"{type(errors[0]).__name__}: {errors[0]}"
    assert windows[0] == 8 * 100


def test_an_internal_failure_is_an_internal_error_not_the_models_fault(monkeypatch):
    from hybridload.shim import finder

    plan = hybridload.resolve(str(hybridload.examples.path("hybrid_tiny")), trust_remote_code=True)
    # a bug inside the shim: its sys.modules scan gets no mapping (the error is raised in hybridload's own frame)
    monkeypatch.setattr(finder, "modules_snapshot", lambda: None)
    with pytest.raises(hybridload.InternalError, match="hybridload bug") as info:
        hybridload.load_meta(plan)
    assert not isinstance(info.value, hybridload.RemoteCodeError)
    assert "install" not in str(info.value)


def test_the_triton_fallback_holds_the_window_only_while_importing(monkeypatch):
    """Another thread's meta build can enter the shim while a Triton-fallback real load reads its weights."""
    from transformers import PreTrainedModel

    from hybridload.shim.kernel_shim import window_open

    original = PreTrainedModel.__dict__["from_pretrained"].__func__
    seen: dict = {}

    def from_pretrained(cls, *args, **kwargs):
        seen["window_open"] = window_open()
        entered = threading.Event()

        def other_build() -> None:
            with hybridload.kernel_shim():
                entered.set()

        thread = threading.Thread(target=other_build)
        thread.start()
        seen["other_thread_entered"] = entered.wait(timeout=10)
        thread.join(timeout=10)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(from_pretrained))
    plan = hybridload.resolve(str(hybridload.examples.path("hybrid_tiny")), trust_remote_code=True)
    started = time.perf_counter()
    model = hybridload.load_real(plan, kernel_fallback="triton")
    assert seen == {"window_open": False, "other_thread_entered": True}
    assert time.perf_counter() - started < 60
    report = hybridload.kernel_report(model)
    assert [e.status for e in report.entries if e.target.endswith("rmsnorm_fn")] == ["hybridload triton fallback"]
    from hybridload.shim.eviction import evict_tainted

    assert any(name.endswith("modeling_nemotron_h") for name in evict_tainted())  # bound to a fallback: evictable
