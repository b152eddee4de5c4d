"""One build path: every entry point builds the same tree and applies the same compatibility entries,
installed, uninstalled and with HYBRIDLOAD_DISABLE=1, and enters each build layer exactly once per build.

Fixtures: one remote-code model per transformers-4.x compatibility entry (entry_fixtures.py), and the
bundled hybrid example. Entry points: plain ``AutoModelForCausalLM.from_config`` (``import hybridload``),
``resolve`` + ``load_meta`` (installed, uninstalled, disabled), ``hybridload check``, nnsight's meta build,
and the pytest plugin's ``hybridload_meta`` fixture.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import hybridload
import hybridload.compat as compat
from entry_fixtures import write_all
from hybridload.build.session import layer_entries

pytest_plugins = ["pytester"]

HERE = Path(__file__).resolve().parent
SRC = str(Path(hybridload.__file__).resolve().parents[1])
EXAMPLE = "bundled example"


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _result(model: Any, fired: list[str]) -> tuple[str, list[str]]:
    return hybridload.signature(model).digest, sorted(fired)


def build_from_config(folder: str) -> tuple[str, list[str]]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with compat.observe() as seen:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    return _result(model, seen.fired)


def build_load_meta(folder: str) -> tuple[str, list[str]]:
    with compat.observe() as seen:
        model = hybridload.load_meta(folder, trust_remote_code=True)
    return _result(model, seen.fired)


def build_load_meta_uninstalled(folder: str) -> tuple[str, list[str]]:
    hybridload.uninstall()
    try:
        return build_load_meta(folder)
    finally:
        hybridload.install()


def build_cli_check(folder: str) -> tuple[str, list[str]]:
    import contextlib
    import io

    from hybridload.cli import main

    out = io.StringIO()
    with compat.observe() as seen, contextlib.redirect_stdout(out):
        code = main(["check", folder, "--trust-remote-code", "--json"])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue())["digest"], sorted(seen.fired)


def build_nnsight(folder: str) -> tuple[str, list[str]]:
    import nnsight
    from compat_fixtures import tiny_tokenizer

    with compat.observe() as seen:
        lm = nnsight.TransformersModel(folder, task="text-generation", tokenizer=tiny_tokenizer(), trust_remote_code=True)
    return _result(lm._module, seen.fired)


IN_PROCESS: dict[str, Callable[[str], tuple[str, list[str]]]] = {
    "from_config (import hybridload)": build_from_config,
    "load_meta (installed)": build_load_meta,
    "load_meta (uninstalled)": build_load_meta_uninstalled,
    "hybridload check": build_cli_check,
    "nnsight meta build": build_nnsight,
}

_CHILD = textwrap.dedent('''
    import json, os, sys
    import hybridload, hybridload.compat as compat
    results = {}
    for name, (folder, env) in json.loads(open(sys.argv[1]).read()).items():
        os.environ.pop("HYBRIDLOAD_CPU_SCALARS", None)
        os.environ.update(env)
        with compat.observe() as seen:
            model = hybridload.load_meta(folder, trust_remote_code=True)
        results[name] = [hybridload.signature(model).digest, sorted(seen.fired)]
    print(json.dumps({"installed": hybridload.is_installed(), "results": results}))
''')

_PLUGIN_TEST = textwrap.dedent('''
    import json, os
    import hybridload.compat as compat
    import hybridload

    def test_build_all(hybridload_meta):
        results = {}
        for name, (folder, env) in json.loads(open(os.environ["HL_FIXTURES"]).read()).items():
            os.environ.pop("HYBRIDLOAD_CPU_SCALARS", None)
            os.environ.update(env)
            with compat.observe() as seen:
                model = hybridload_meta(folder, trust_remote_code=True)
            results[name] = [hybridload.signature(model).digest, sorted(seen.fired)]
        open(os.environ["HL_RESULTS"], "w").write(json.dumps(results))
''')


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, tuple[str, dict[str, str]]]:
    found = write_all(tmp_path_factory.mktemp("entries"))
    found[EXAMPLE] = (str(hybridload.examples.path("hybrid_tiny")), {})
    return found


@pytest.fixture(scope="module")
def built(fixtures, tmp_path_factory) -> dict[str, dict[str, tuple[str, list[str]]]]:
    """entry point -> fixture -> (tree digest, fired compat entries)."""
    results: dict[str, dict[str, tuple[str, list[str]]]] = {}
    for point, build in IN_PROCESS.items():
        results[point] = {}
        for name, (folder, env) in fixtures.items():
            with environment(env):
                results[point][name] = build(folder)
    listing = tmp_path_factory.mktemp("listing") / "fixtures.json"
    listing.write_text(json.dumps(fixtures))
    child_env = {**os.environ, "HYBRIDLOAD_DISABLE": "1", "PYTHONPATH": SRC}
    child = subprocess.run([sys.executable, "-c", _CHILD, str(listing)], capture_output=True, text=True, env=child_env, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    disabled = json.loads(child.stdout.strip().splitlines()[-1])
    assert disabled["installed"] is False
    results["load_meta (HYBRIDLOAD_DISABLE=1)"] = {k: tuple(v) for k, v in disabled["results"].items()}
    return results


def test_every_entry_point_builds_the_same_tree_with_the_same_entries(built, fixtures):
    reference = built["load_meta (installed)"]
    assert set(reference) == set(fixtures)
    problems = []
    for point, results in built.items():
        for name, (digest, fired) in results.items():
            if digest != reference[name][0]:
                problems.append(f"{point}: {name}: tree {digest[:12]} != {reference[name][0][:12]}")
            if fired != reference[name][1]:
                problems.append(f"{point}: {name}: compat entries {fired} != {reference[name][1]}")
    assert problems == [], "\n".join(problems[:30])


def test_each_fixture_needs_its_entry(built, fixtures):
    """The parity is about something: each fixture fires its entry (unless this transformers still has the
    name, which then serves itself, on every entry point alike)."""
    import importlib

    silent = []
    for name, (_, fired) in built["load_meta (installed)"].items():
        if name == EXAMPLE or name in fired:
            continue
        entry = compat.get_entry(name)
        still_there = bool(entry.modules) and hasattr(importlib.import_module(entry.modules[0]), entry.name)
        if not still_there:
            silent.append(name)
    assert silent == []


def test_the_pytest_plugin_builds_the_same(built, fixtures, pytester, tmp_path, monkeypatch):
    listing, out = tmp_path / "fixtures.json", tmp_path / "results.json"
    listing.write_text(json.dumps(fixtures))
    monkeypatch.setenv("HL_FIXTURES", str(listing))
    monkeypatch.setenv("HL_RESULTS", str(out))
    pytester.makepyfile(test_plugin_builds=_PLUGIN_TEST)
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    plugin = {k: tuple(v) for k, v in json.loads(out.read_text()).items()}
    assert plugin == built["load_meta (installed)"]


# -- each layer entered exactly once per build --------------------------------------------------------------
def _entered(call: Callable[[], Any]) -> dict[str, int]:
    from hybridload.compat.compat_window import SCOPE
    from hybridload.shim import kernel_shim as shim_module

    before, shim_before, compat_before = layer_entries(), shim_module.entries, SCOPE.entries
    call()
    after = layer_entries()
    counts = {name: after[name] - before[name] for name in after if after[name] != before[name]}
    # the windows underneath were entered exactly as often as the build entered their layers
    assert shim_module.entries - shim_before == counts.get("shim", 0)
    assert SCOPE.entries - compat_before == counts.get("compat", 0)
    return counts


STREAM_LAYERS = {"shim": 1, "compat": 1, "attention": 1, "routing": 1, "meta_device": 1, "fast_init": 1, "messages": 1}
META_LAYERS = {"device_profile": 1, **STREAM_LAYERS}


@pytest.mark.parametrize("installed", [True, False], ids=["installed", "uninstalled"])
def test_each_layer_is_entered_once_per_build(installed, fixtures):
    folder = fixtures["transformers.utils.generic.OutputRecorder"][0]
    plan = hybridload.resolve(folder, trust_remote_code=True)
    if not installed:
        hybridload.uninstall()
    try:
        assert _entered(lambda: hybridload.resolve(folder, trust_remote_code=True)) == {
            "device_profile": 1, "shim": 1, "compat": 1}
        assert _entered(lambda: hybridload.load_config(plan)) == {"compat": 1, "routing": 1}
        assert _entered(lambda: hybridload.load_meta(plan)) == META_LAYERS
        assert _entered(lambda: hybridload.load_tokenizer(hybridload.examples.path("hybrid_tiny"), trust_remote_code=True)) == {
            "device_profile": 1, "shim": 1, "compat": 2, "routing": 1}  # resolve's import build, then the tokenizer's config build
    finally:
        hybridload.install()


def test_plain_calls_and_nnsight_enter_each_layer_once(fixtures):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = fixtures["transformers.utils.generic.OutputRecorder"][0]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)

    def plain() -> None:
        with torch.device("meta"):
            AutoModelForCausalLM.from_config(config, trust_remote_code=True)

    assert _entered(plain) == META_LAYERS
    import nnsight
    from compat_fixtures import tiny_tokenizer

    counts = _entered(lambda: nnsight.TransformersModel(folder, task="text-generation", tokenizer=tiny_tokenizer(),
                                                         trust_remote_code=True))
    # resolve's import build, then one meta build (nnsight's own from_config joins it)
    assert counts == {**META_LAYERS, "device_profile": 2, "shim": 2, "compat": 2}


def test_the_real_load_enters_compat_and_routing_once_and_never_the_shim(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "llama")
    plan = hybridload.resolve(tmp_path / "llama")
    counts = _entered(lambda: hybridload.load_real(plan))
    assert counts == {"compat": 1, "routing": 1}
    # the served meta tree the checkpoint is checked against and streamed into: this machine's own device
    assert _entered(lambda: hybridload.dispatch(plan, low_memory=True)) == STREAM_LAYERS
