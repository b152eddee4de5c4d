"""The entries that fired are recorded on the meta build, the server applies the same, and the
signature header lists them; nothing fires for a model that does not need it."""
from __future__ import annotations

import hybridload


def _with_weights(folder):
    from safetensors.torch import save_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    # the fixture keeps 4.x's list-form _tied_weights_keys, which 5.x save_pretrained rejects: write the file
    save_model(AutoModelForCausalLM.from_config(config, trust_remote_code=True), str(folder / "model.safetensors"))
    return folder


def test_meta_build_and_dispatch_record_the_same_entries(remote):
    folder = _with_weights(remote("pad_token_id"))
    plan = hybridload.resolve(str(folder), trust_remote_code=True)
    meta = hybridload.load_meta(plan)
    assert meta.hybridload_compat_entries, "the DNABERT-2 pattern needs the 4.x pad_token_id default"
    assert any("pad_token_id" in entry for entry in meta.hybridload_compat_entries)
    served = hybridload.dispatch(plan, verify_tree=True)
    assert served.hybridload_compat_entries == meta.hybridload_compat_entries
    header = hybridload.signature(meta).header
    assert header["compat_entries"] == meta.hybridload_compat_entries


def test_nothing_fires_for_a_model_that_does_not_need_it(remote):
    folder = remote("inert")
    meta = hybridload.load_meta(hybridload.resolve(str(folder), trust_remote_code=True))
    assert meta.hybridload_compat_entries == []
    assert hybridload.signature(meta).header["compat_entries"] == []
