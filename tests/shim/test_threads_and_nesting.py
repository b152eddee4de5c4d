"""Windows nest within a thread, serialize across threads, and never leak stand-ins to other threads."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import hybridload
from fixtures.building import build, load_config, parameter_shapes
from fixtures.remote_code import describe, expected_parameter_shapes
from fixtures.shim_state import interpreter_state, stand_in_modules
from hybridload.shim.standins import is_stand_in

CONCURRENT = ["nemotron_h", "hymba", "kimi_linear_imports_only", "triton_kernels", "fast_path_guard", "broken_install"]
WAIT = 20.0  # seconds; generous for a loaded 2-core CI box, never reached when things work


def test_nested_windows_in_one_thread():
    with hybridload.kernel_shim() as outer:
        importlib.import_module("flash_attn")
        with hybridload.kernel_shim() as inner:
            importlib.import_module("mamba_ssm.ops.triton.layernorm_gated").rmsnorm_fn  # noqa: B018
        # leaving the inner window keeps the outer one's stand-ins
        assert is_stand_in(sys.modules["flash_attn"]) and is_stand_in(sys.modules["mamba_ssm"])
        from flash_attn import flash_attn_func

        assert is_stand_in(flash_attn_func)
    assert inner.packages == ["mamba_ssm"]
    assert outer.packages == ["flash_attn", "mamba_ssm"]
    assert "flash_attn.flash_attn_func" in outer.stand_ins["flash_attn"]
    assert stand_in_modules() == []


def test_nested_windows_with_equal_reports():
    """An outer window around a build (which opens its own window) whose reports end up equal in content."""
    with hybridload.kernel_shim() as outer:
        with hybridload.kernel_shim() as first:
            importlib.import_module("flash_attn").flash_attn_func  # noqa: B018
        with hybridload.kernel_shim() as second:
            importlib.import_module("fla.ops.kda").chunk_kda  # noqa: B018
    assert first.packages == ["flash_attn"] and second.packages == ["fla"]
    assert outer.packages == ["fla", "flash_attn"]


def test_decorator_form(remote_model):
    folder = remote_model("hymba")
    config = load_config(folder)

    @hybridload.kernel_shim()
    def import_inside():
        return importlib.import_module("flash_attn").flash_attn_func

    assert is_stand_in(import_inside())
    assert stand_in_modules() == []
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("flash_attn")
    assert config.model_type == "hl_fixture_hymba"


def test_concurrent_builds_do_not_leak(tmp_path):
    from fixtures.remote_code import write_remote_model

    folders = {p: write_remote_model(tmp_path, p) for p in CONCURRENT}
    configs = {p: load_config(f) for p, f in folders.items()}
    for pattern in CONCURRENT:  # warm-up: lazy framework imports, transformers_modules.<folder> packages
        build(folders[pattern], config=configs[pattern])
    before = interpreter_state()
    barrier = threading.Barrier(len(CONCURRENT))

    def one(pattern: str):
        barrier.wait(timeout=WAIT)
        with hybridload.kernel_shim() as report:
            model = build(folders[pattern], config=configs[pattern])
        return pattern, report.packages, parameter_shapes(model)

    with ThreadPoolExecutor(len(CONCURRENT)) as pool:
        results = list(pool.map(one, CONCURRENT * 2))
    for pattern, packages, shapes in results:
        assert packages == sorted(describe(pattern).kernel_packages), pattern  # no cross-talk between windows
        assert shapes == expected_parameter_shapes(folders[pattern])
    assert interpreter_state() == before


def test_other_threads_see_imports_as_without_hybridload():
    inside, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def window_owner():
        try:
            with hybridload.kernel_shim():
                importlib.import_module("mamba_ssm.ops.triton.layernorm_gated").rmsnorm_fn  # noqa: B018
                importlib.import_module("flash_attn")
                inside.set()
                release.wait(WAIT)
                assert is_stand_in(importlib.import_module("flash_attn"))  # still served to the owner
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            inside.set()

    owner = threading.Thread(target=window_owner)
    owner.start()
    try:
        assert inside.wait(WAIT)
        assert "mamba_ssm" in sys.modules  # the stand-in is in the shared sys.modules right now ...
        # ... yet this thread, outside any window, gets exactly what it gets without hybridload
        with pytest.raises(ModuleNotFoundError):
            import mamba_ssm  # noqa: F401
        with pytest.raises(ModuleNotFoundError):
            from flash_attn import flash_attn_func  # noqa: F401
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("mamba_ssm.ops.triton.layernorm_gated")
        assert importlib.util.find_spec("mamba_ssm") is None
        assert importlib.util.find_spec("flash_attn") is None
        with pytest.raises(ModuleNotFoundError):
            import fla  # noqa: F401  - a kernel package nobody imported yet
    finally:
        release.set()
        owner.join(WAIT)
    assert not errors, errors
    assert stand_in_modules() == []


def test_other_threads_see_a_broken_package_fail_as_without_hybridload(fake_site):
    name = fake_site.broken("hl_fixture_threads_broken", "undefined_symbol", register=True)
    with pytest.raises(ImportError) as plain:
        importlib.import_module(name)
    plain_message = str(plain.value)
    for partial in [m for m in sys.modules if m.startswith(name + ".")]:  # see test_real_and_broken_packages
        del sys.modules[partial]
    inside, release = threading.Event(), threading.Event()
    served: list[object] = []

    def window_owner():
        try:
            with hybridload.kernel_shim():
                served.append(is_stand_in(importlib.import_module(f"{name}.ops.selective_scan_interface")))
                inside.set()
                release.wait(WAIT)
        except BaseException as exc:  # pragma: no cover - reported below
            served.append(exc)
            inside.set()

    owner = threading.Thread(target=window_owner)
    owner.start()
    try:
        assert inside.wait(WAIT) and served == [True]
        with pytest.raises(ImportError) as outside:
            importlib.import_module(name)
        assert not isinstance(outside.value, hybridload.KernelUnavailableError)
        assert str(outside.value) == plain_message
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin.endswith(f"{name}/__init__.py")  # the real, broken package
    finally:
        release.set()
        owner.join(WAIT)
    assert stand_in_modules() == []


def test_a_second_thread_waits_for_the_open_window():
    events: list[str] = []
    inside, entered_second = threading.Event(), threading.Event()

    def first():
        with hybridload.kernel_shim():
            inside.set()
            time.sleep(0.3)
            assert not entered_second.is_set(), "a second thread entered while the window was open"
            events.append("first-exit")

    def second():
        inside.wait(WAIT)
        with hybridload.kernel_shim():
            entered_second.set()
            events.append("second-enter")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert events == ["first-exit", "second-enter"]
