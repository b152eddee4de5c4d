"""nnsight's meta build (its own MetaDevice mode forces every tensor onto meta) goes through the same layer."""
from __future__ import annotations

import nnsight
import pytest
from compat_fixtures import tiny_tokenizer

import hybridload.compat as compat


def _load(folder):
    return nnsight.TransformersModel(str(folder), task="text-generation", tokenizer=tiny_tokenizer(), trust_remote_code=True)


@pytest.mark.parametrize("cpu_scalars", [False, True])
def test_language_model_meta_build_of_value_dependent_init(remote, monkeypatch, cpu_scalars: bool) -> None:
    monkeypatch.setenv("HYBRIDLOAD_CPU_SCALARS", "1" if cpu_scalars else "0")
    folder = remote("item_on_meta")
    if not cpu_scalars:
        with pytest.raises(compat.ValueDependentInitError, match=r"modeling_itemonmeta\.py:\d+"):
            _load(folder)
        return
    with compat.observe() as seen:
        lm = _load(folder)
    model = lm._module
    assert all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])
    assert [layer.drop_prob for layer in model.model.layers] == pytest.approx([0.0, 0.3])
    assert [layer._beta_scalar for layer in model.model.layers] == pytest.approx([0.5, 0.5])
    assert "meta.cpu_scalars" in seen.fired
