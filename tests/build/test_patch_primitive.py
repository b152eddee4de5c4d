"""One reversible patch primitive: restore only if still ours, inert when patched over, each foreign attribute
wrapped once, and the pieces of hybridload installed in any order behave the same."""
from __future__ import annotations

import itertools
import types
from contextlib import ExitStack

import pytest

import hybridload
import hybridload.compat as compat
from entry_fixtures import write_entry_fixture
from hybridload.errors import InternalError
from hybridload.hooks.patch import MARKER, Patch, applied_patches, is_patched


def _owner():
    return types.SimpleNamespace(greet=lambda name: f"hello {name}")


def test_a_patch_wraps_while_held_and_restores_exactly():
    owner = _owner()
    original = owner.greet
    patch = Patch(owner, "greet", lambda f: lambda name: f(name).upper(), key="test.greet")
    with patch:
        assert owner.greet("x") == "HELLO X" and is_patched(owner.greet)
        assert getattr(owner.greet, MARKER) == "test.greet" and patch in applied_patches()
        with patch:  # held twice: applied once
            assert patch.applications == 1
        assert owner.greet("x") == "HELLO X"
    assert owner.greet is original and patch not in applied_patches()


def test_a_wrapper_installed_over_ours_is_left_alone_and_ours_goes_inert():
    owner = _owner()
    patch = Patch(owner, "greet", lambda f: lambda name: f(name).upper(), key="test.greet")
    patch.acquire()
    ours = owner.greet
    owner.greet = lambda name: "theirs(" + ours(name) + ")"  # another library wraps over hybridload
    patch.release()
    assert owner.greet("x") == "theirs(hello x)"  # theirs kept, ours passes straight through


def test_a_missing_attribute_is_added_and_removed():
    owner = types.SimpleNamespace()
    with Patch(owner, "__getattr__", lambda previous: lambda name: f"served {name}", key="test.getattr"):
        assert owner.__getattr__("x") == "served x"
    assert not hasattr(owner, "__getattr__")


def test_each_foreign_attribute_is_wrapped_once():
    owner = _owner()
    with Patch(owner, "greet", lambda f: f, key="first"):
        with pytest.raises(InternalError, match="wrap it twice"):
            Patch(owner, "greet", lambda f: f, key="second").acquire()


def test_classmethods_stay_classmethods():
    class Owner:
        @classmethod
        def build(cls, value):
            return (cls.__name__, value)

    with Patch(Owner, "build", lambda f: lambda cls, value: f(cls, value * 2), key="test.build"):
        assert Owner.build(2) == ("Owner", 4) and isinstance(Owner.__dict__["build"], classmethod)
    assert Owner.build(2) == ("Owner", 2)


# -- the pieces in every order ----------------------------------------------------------------------------
def _pieces():
    """Each piece is a context that holds one part of hybridload's process-wide changes."""
    from hybridload.build.attention import ATTENTION_PATCH
    from hybridload.build.messages import HANDLE_PATCH
    from hybridload.build.routing import DYNAMIC_PATCH, TRUST_PATCH
    from hybridload.compat.compat_window import SCOPE
    from hybridload.shim.guards import IMPORT_PATCHES

    class Installed:
        def __enter__(self):
            hybridload.install()

        def __exit__(self, *exc):
            hybridload.uninstall()

    return {
        "install": Installed,
        "compat": lambda: SCOPE,
        "attention+messages": lambda: _held(ATTENTION_PATCH, HANDLE_PATCH),
        "routing": lambda: _held(TRUST_PATCH, DYNAMIC_PATCH),
        "import guards": lambda: _held(*IMPORT_PATCHES),
    }


class _held:
    def __init__(self, *patches):
        self.patches = patches

    def __enter__(self):
        for patch in self.patches:
            patch.acquire()

    def __exit__(self, *exc):
        for patch in reversed(self.patches):
            patch.release()


def _build(folder):
    with compat.observe() as seen:
        meta = hybridload.load_meta(folder, trust_remote_code=True)
    return hybridload.signature(meta).digest, sorted(seen.fired)


def test_the_pieces_installed_in_every_order_build_the_same(tmp_path):
    folder, _ = write_entry_fixture(tmp_path, "transformers.utils.import_utils.is_torch_fx_available")
    hybridload.uninstall()
    try:
        expected = _build(folder)
        pieces = _pieces()
        for order in itertools.permutations(pieces):
            with ExitStack() as stack:
                for name in order:
                    stack.enter_context(pieces[name]())
                assert _build(folder) == expected, order
            assert not hybridload.is_installed()
    finally:
        hybridload.install()
    assert _build(folder) == expected
