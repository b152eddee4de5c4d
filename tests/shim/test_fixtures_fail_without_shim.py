"""Every remote-code fixture fails today with plain transformers, the way the real models fail.

If one of these starts passing, the fixture no longer reproduces its pattern (or transformers changed how
it checks imports), and the shim tests built on it prove nothing.
"""
from __future__ import annotations

import sys

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.dynamic_module_utils import check_imports

from fixtures.remote_code import BROKEN_FAILURES, PATTERNS, describe, write_remote_model

from fixtures.building import load_config


@pytest.mark.parametrize("pattern", PATTERNS)
def test_plain_transformers_cannot_build_the_fixture(pattern, remote_model, plain_transformers):
    info = describe(pattern)
    config = load_config(remote_model(pattern))
    with pytest.raises(info.plain_error) as raised, torch.device("meta"):
        AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    assert info.plain_error_fragment in str(raised.value)
    assert type(raised.value).__module__ == "builtins", "plain transformers must not raise a hybridload error"


@pytest.mark.parametrize("pattern", PATTERNS)
def test_where_plain_transformers_fails(pattern, remote_model):
    """check_imports rejects the file before it runs, except Nemotron-H: transformers 5.x skips imports
    inside ``try`` blocks and inside ``if is_..._available()`` blocks, so that file passes check_imports and
    fails while executing (the try/except re-raises)."""
    info = describe(pattern)
    folder = remote_model(pattern)
    modeling = next(folder.glob("modeling_*.py"))
    if info.plain_failure == "check_imports":
        with pytest.raises(ImportError, match=info.plain_error_fragment):
            check_imports(modeling)
    else:
        assert info.plain_failure == "module_exec"
        check_imports(modeling)  # passes: the kernel imports are invisible to it


@pytest.mark.parametrize(
    ("failure", "error", "fragment"),
    [
        ("missing_extension", ImportError, "requires the following packages that were not found"),
        ("undefined_symbol", ImportError, "undefined symbol"),
        ("oserror", OSError, "libcudart.so.12"),
    ],
)
def test_plain_transformers_fails_on_a_broken_install(failure, error, fragment, tmp_path, fake_site, plain_transformers):
    assert failure in BROKEN_FAILURES
    name = fake_site.broken(f"hl_fixture_broken_{failure}", failure)
    config = load_config(write_remote_model(tmp_path, "broken_install", kernel_package=name))
    with pytest.raises(error, match=fragment), torch.device("meta"):
        AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    # the failed import leaves a half-imported subpackage behind: what the shim must clean up first
    assert f"{name}.ops" in sys.modules


def test_fixture_api_rejects_typos(tmp_path):
    with pytest.raises(ValueError, match="unknown remote-code pattern"):
        write_remote_model(tmp_path, "hymbaa")
    with pytest.raises(ValueError, match="no config keys"):
        write_remote_model(tmp_path, "hymba", num_layers=3)
