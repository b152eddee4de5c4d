"""Moved/removed names: served only inside a window, only to its thread, never over what transformers has."""
from __future__ import annotations

import importlib
import sys
import threading

import pytest
import transformers.utils.import_utils as import_utils

import hybridload.compat as compat
import hybridload.compat.catalog as registry


def _transformers():
    # importing some model modules re-creates the top-level lazy module; imports use sys.modules
    return sys.modules["transformers"]


def _import_from(module: str, name: str):
    return getattr(importlib.import_module(module), name)


NAME_ENTRIES = [e for e in compat.entries() if e.kind in registry.NAME_KINDS]


def test_every_name_entry_is_absent_from_this_transformers_outside_a_window() -> None:
    """Entries describe what 5.x lacks; an entry for a name transformers has would never serve anything."""
    present = []
    for entry in NAME_ENTRIES:
        for module in entry.modules:
            try:
                mod = importlib.import_module(module)
            except ImportError:
                continue  # removed module (served as a synthetic module inside a window)
            if entry.name in vars(mod) or hasattr(mod, entry.name):
                if entry.id != "transformers.utils.import_utils.is_flash_attn_greater_or_equal_2_10":
                    present.append(f"{module}.{entry.name}")
    assert present == []


@pytest.mark.parametrize("entry", NAME_ENTRIES, ids=lambda e: e.id)
def test_every_name_entry_is_served_inside_a_window(entry) -> None:
    module = entry.modules[-1]
    with compat.compat_window() as record:
        value = _import_from(module, entry.name)
    if entry.id.endswith("is_flash_attn_greater_or_equal_2_10"):
        assert record.fired == []  # still in transformers 5.23: the native function wins, nothing fires
        return
    assert value is not None
    assert record.fired == [entry.id] or record.fired == [entry.id, "compat.removed_module"] or record.fired == [
        "compat.removed_module",
        entry.id,
    ]
    if entry.kind == registry.REMOVED:
        assert compat.is_compat_stand_in(value)
        with pytest.raises(compat.RemovedTransformersAPIError, match=entry.what.replace(".", r"\.")):
            value()
    elif entry.kind == registry.PROBE:
        assert value() is True or value() is False
    else:
        assert not compat.is_compat_stand_in(value)


def test_probe_answers_as_4x_did_on_this_machine() -> None:
    with compat.compat_window():
        from transformers.utils.import_utils import is_torch_fx_available
    assert is_torch_fx_available() is import_utils.is_torch_available()


def test_moved_name_is_the_object_from_its_new_home() -> None:
    from transformers.utils.output_capturing import OutputRecorder as new_home

    with compat.compat_window():
        from transformers.utils.generic import OutputRecorder
    assert OutputRecorder is new_home


def test_nothing_is_visible_outside_the_window() -> None:
    before = set(vars(import_utils))
    with compat.compat_window():
        assert hasattr(_transformers(), "DisjunctiveConstraint")
        beam_search = importlib.import_module("transformers.generation.beam_search")  # removed in 5.0: synthetic
        assert compat.is_compat_stand_in(beam_search.BeamSearchScorer)
    assert set(vars(import_utils)) == before
    assert not hasattr(_transformers(), "DisjunctiveConstraint")
    assert not hasattr(import_utils, "is_torch_fx_available")
    assert "transformers.generation.beam_search" not in sys.modules
    with pytest.raises(ImportError):
        importlib.import_module("transformers.generation.beam_search")


def test_other_threads_do_not_see_served_names() -> None:
    seen: dict[str, bool] = {}
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        inside.wait(10)
        seen["fx"] = hasattr(import_utils, "is_torch_fx_available")
        seen["top"] = hasattr(_transformers(), "BeamSearchScorer")
        try:
            importlib.import_module("transformers.generation.beam_constraints")
            seen["module"] = True
        except ImportError:
            seen["module"] = False
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    with compat.compat_window():
        assert hasattr(import_utils, "is_torch_fx_available")
        inside.set()
        release.wait(10)
    thread.join(10)
    assert seen == {"fx": False, "top": False, "module": False}


def test_lazy_transformers_attributes_still_resolve_inside() -> None:
    with compat.compat_window() as record:
        assert _transformers().MambaConfig.__name__ == "MambaConfig"
        with pytest.raises(AttributeError):
            _transformers().NoSuchThingAnywhere  # noqa: B018
    assert record.fired == []


def test_windows_nest_and_record_in_every_open_window() -> None:
    with compat.compat_window() as outer:
        with compat.compat_window() as inner:
            from transformers.utils.import_utils import is_torch_fx_available  # noqa: F401
        assert hasattr(import_utils, "is_torch_fx_available")  # still open
    assert inner.fired == outer.fired == ["transformers.utils.import_utils.is_torch_fx_available"]
    assert not hasattr(import_utils, "is_torch_fx_available")


def test_user_entry_extends_the_registry_and_never_overrides_a_real_name() -> None:
    custom = compat.moved(
        "hl_old_helper", ("transformers.utils.import_utils",), "transformers.utils.import_utils:is_torch_available", "5.0.0"
    )
    shadow = compat.removed("is_torch_available", ("transformers.utils.import_utils",), "5.0.0", "test", entry_id="hl.test.shadow")
    compat.register_entry(custom)
    compat.register_entry(shadow)
    try:
        with compat.compat_window() as record:
            from transformers.utils.import_utils import hl_old_helper, is_torch_available
        assert hl_old_helper is import_utils.is_torch_available
        assert not compat.is_compat_stand_in(is_torch_available)
        assert record.fired == [custom.id]
        assert compat.get_entry(custom.id) is custom
    finally:
        compat.unregister_entry(custom.id)
        compat.unregister_entry(shadow.id)
    assert compat.get_entry(custom.id) is None


@pytest.mark.parametrize(
    "bad",
    [
        dict(id="x y", kind="moved", what="w", removed_in="5", served="s", name="n", modules=("transformers",), provide=int),
        dict(id="x", kind="nope", what="w", removed_in="5", served="s", name="n"),
        dict(id="x", kind="moved", what="w", removed_in="5", served="s", name="n", modules=("numpy",), provide=int),
        dict(id="x", kind="moved", what="w", removed_in="5", served="s", name="n", modules=("transformers",)),
        dict(id="x", kind="config-default", what="", removed_in="5", served="s", name="n"),
    ],
)
def test_malformed_entries_are_rejected_with_a_typed_error(bad) -> None:
    with pytest.raises(compat.CompatEntryError):
        compat.register_entry(compat.CompatEntry(**bad))


def test_duplicate_ids_need_replace() -> None:
    entry = compat.get_entry("transformers.utils.generic.OutputRecorder")
    with pytest.raises(compat.CompatEntryError, match="replace=True"):
        compat.register_entry(entry)


def test_stand_in_can_be_subclassed_and_checked_but_not_used() -> None:
    with compat.compat_window():
        from transformers import Constraint

    class MyConstraint(Constraint):  # import/build time: remote code subclasses it
        pass

    assert not isinstance(object(), Constraint)
    with pytest.raises(compat.RemovedTransformersAPIError, match="constrained beam search"):
        MyConstraint()


def test_windows_on_two_threads_at_once_each_see_their_names() -> None:
    both_inside = threading.Barrier(2, timeout=10)
    results: dict[str, object] = {}

    def worker(key: str) -> None:
        with compat.compat_window() as record:
            both_inside.wait()
            from transformers.utils.generic import OutputRecorder

            results[key] = (OutputRecorder.__name__, list(record.fired))
            both_inside.wait()

    threads = [threading.Thread(target=worker, args=(k,)) for k in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    expected = ("OutputRecorder", ["transformers.utils.generic.OutputRecorder"])
    assert results == {"a": expected, "b": expected}
    import transformers.utils.generic as generic

    assert "__getattr__" not in vars(generic)


def test_meta_build_session_reports_the_compat_record() -> None:
    from hybridload.build import BuildSpec, build_session

    with build_session(BuildSpec("meta")) as report:
        from transformers.utils.import_utils import is_torch_sdpa_available  # noqa: F401
    record = report.compat
    assert isinstance(record, compat.CompatRecord)
    assert record.header() == ["transformers.utils.import_utils.is_torch_sdpa_available"]
