"""Each 4.x remote-code failure pattern: fails on plain transformers 5.x, builds on meta with ``import hybridload``."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch
from compat_fixtures import PATTERNS, tree
from transformers import AutoConfig, AutoModelForCausalLM

import hybridload
import hybridload.compat as compat

FAILING = [name for name in PATTERNS if name != "tied_list"]


@contextlib.contextmanager
def plain_transformers() -> Iterator[None]:
    """hybridload's integration off (as if it were not imported), restored afterwards."""
    hybridload.uninstall()
    try:
        yield
    finally:
        hybridload.install()


def meta_build(folder: Path) -> torch.nn.Module:
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=True)


@pytest.mark.parametrize("pattern", FAILING)
def test_plain_transformers_fails(remote, pattern: str) -> None:
    info = PATTERNS[pattern]
    folder = remote(pattern)
    with plain_transformers(), pytest.raises(info.plain_error) as caught:
        meta_build(folder)
    assert info.plain_fragment in str(caught.value)
    assert not isinstance(caught.value, hybridload.HybridloadError)


@pytest.mark.parametrize("pattern", FAILING)
def test_builds_on_meta_with_import_hybridload(remote, monkeypatch, pattern: str) -> None:
    if pattern == "item_on_meta":
        monkeypatch.setenv("HYBRIDLOAD_CPU_SCALARS", "1")
    folder = remote(pattern)
    with compat.observe() as seen:
        model = meta_build(folder)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert all(b.device.type == "meta" for b in model.buffers())
    assert len(model.model.layers) == 2
    assert set(PATTERNS[pattern].fires) <= set(seen.fired), seen.fired
    assert "model.tied_weights_keys" not in seen.fired  # these configs set tie_word_embeddings=False


def test_value_dependent_init_without_opt_in_names_the_line(remote) -> None:
    folder = remote("item_on_meta")
    with pytest.raises(compat.ValueDependentInitError) as caught:
        meta_build(folder)
    error = caught.value
    assert isinstance(error, hybridload.HybridloadError)
    file, _, rest = error.location.rpartition(":")
    line = int(rest.split()[0])
    assert Path(file).name == "modeling_itemonmeta.py"
    assert ".item()" in Path(file).read_text().splitlines()[line - 1]
    assert "HYBRIDLOAD_CPU_SCALARS=1" in str(error)


def test_stream_generator_stand_ins_raise_naming_the_removed_api(remote) -> None:
    folder = remote("stream_generator")
    with compat.compat_window():
        meta_build(folder)
        import transformers_stream_generator.main as tsg

        constraint_cls = tsg.DisjunctiveConstraint
    with pytest.raises(compat.RemovedTransformersAPIError, match=r"transformers\.DisjunctiveConstraint was removed in transformers 5\.0\.0"):
        constraint_cls([[1, 2]])
    # third-party modules that bound a served stand-in do not outlive the window
    assert "transformers_stream_generator" not in sys.modules
    with pytest.raises(ImportError):
        import transformers_stream_generator  # noqa: F401


def test_florence_config_keeps_the_value_5x_drops(remote) -> None:
    folder = remote("forced_bos", forced_bos_token_id=0)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert config.forced_bos_token_id == 0  # from config.json, as 4.x kept it (5.x drops it)
    assert config.forced_eos_token_id == 2  # passed by the remote __init__ to super().__init__
    default = AutoConfig.from_pretrained(remote("forced_bos"), trust_remote_code=True)
    assert default.forced_bos_token_id is None  # the 4.x default
    assert default.num_beams == 1 and default.max_length == 20


def test_tied_list_ties_embeddings_like_4x(remote) -> None:
    with plain_transformers():
        untied = meta_build(remote("tied_list"))
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight  # 5.x: silently untied
    with compat.observe() as seen:
        tied = meta_build(remote("tied_list"))
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert tied.all_tied_weights_keys == {"lm_head.weight": "model.embed_tokens.weight"}
    assert {"config.tie_word_embeddings", "model.tied_weights_keys"} <= set(seen.fired)


def test_tied_list_with_explicit_tie_crashes_plain_and_builds_with_compat(remote) -> None:
    with plain_transformers(), pytest.raises(AttributeError, match="keys"):
        meta_build(remote("tied_list", tie_word_embeddings=True))
    model = meta_build(remote("tied_list", tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight


def _save_random_weights(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    real = AutoModelForCausalLM.from_config(config, trust_remote_code=True)  # CPU: values exist
    state = {k: v.detach().clone().contiguous() for k, v in real.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_server_real_load_applies_the_same_entries_and_tree(remote, monkeypatch, pattern: str) -> None:
    """Client: meta build. Server: ``from_pretrained`` inside ``real_load_window``. Same entries, same tree."""
    cpu_scalars = pattern == "item_on_meta"
    folder = remote(pattern)
    _save_random_weights(folder, monkeypatch)
    with compat.compat_options(cpu_scalars=cpu_scalars), compat.observe() as client:
        meta = meta_build(folder)
    with compat.observe() as server, compat.real_load_window(cpu_scalars=cpu_scalars):
        real = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert all(p.device.type == "cpu" for p in real.parameters())
    assert tree(meta) == tree(real)
    assert set(PATTERNS[pattern].fires) <= set(client.fired)
    assert client.header() == server.header()


def test_server_real_load_of_value_dependent_init_needs_the_same_flag(remote, monkeypatch) -> None:
    folder = remote("item_on_meta")
    _save_random_weights(folder, monkeypatch)
    # transformers 5.x itself initialises from_pretrained models on meta, so the server needs the flag too
    with pytest.raises(compat.ValueDependentInitError, match="modeling_itemonmeta.py"):
        with compat.real_load_window(cpu_scalars=False):
            AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
