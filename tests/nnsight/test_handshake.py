"""The tree-digest handshake, in process: what the client sends, what a server with and without hybridload does."""
from __future__ import annotations

import pytest
import torch
from ndif_like import CaptureBackend, run_request
from nnsight_fixtures import plain_nnsight, write_gpt2

import hybridload
from hybridload.errors import SignatureFormatError, TreeMismatchError
from hybridload.integrations.nnsight_handshake import ENV_KEY, SCHEMA

PROMPT = "hello world the model runs here"


def _request(lm):
    """Trace on the client and keep the serialized request (what RemoteBackend would post)."""
    backend = CaptureBackend(lm)
    with lm.trace(PROMPT, backend=backend):
        lm.transformer.h[0].mlp.output[:] = 0
        hidden = lm.transformer.h[1].mlp.output.save()  # noqa: F841 - saved for the server
        logits = lm.lm_head.output.save()  # noqa: F841
    return backend


def _reference(server) -> dict[str, torch.Tensor]:
    with server.trace(PROMPT):
        server.transformer.h[0].mlp.output[:] = 0
        hidden = server.transformer.h[1].mlp.output.save()
        logits = server.lm_head.output.save()
    return {"hidden": hidden, "logits": logits}


def test_client_sends_its_tree_digest_and_plan(gpt2):
    from nnsight import TransformersModel

    from hybridload.plan.model import LoadPlan

    lm = TransformersModel(str(gpt2), task="text-generation")
    request = _request(lm)
    entry = request.env[ENV_KEY]
    assert entry["schema"] == SCHEMA and entry["digest"] == hybridload.signature(lm).digest
    assert LoadPlan.from_dict(entry["plan"]) == lm._module.hybridload_plan
    assert request.env["attn_implementation"] == "sdpa"  # nnsight's own env is untouched
    assert not lm.dispatched  # building the request loaded no weights


def test_server_with_hybridload_runs_a_matching_request(gpt2):
    from nnsight import TransformersModel

    request = _request(TransformersModel(str(gpt2), task="text-generation"))
    server = TransformersModel(str(gpt2), task="text-generation", dispatch=True)
    saved = run_request(server, request.env, request.blob)
    reference = _reference(server)
    assert sorted(saved) == ["hidden", "logits"]
    assert all(torch.equal(saved[name], reference[name]) for name in saved)
    with server.trace(PROMPT):
        untouched = server.lm_head.output.save()
    assert not torch.equal(untouched, saved["logits"])  # the ablation travelled with the request


def test_server_refuses_another_tree_and_names_the_first_differing_path(gpt2, tmp_path):
    from nnsight import TransformersModel

    request = _request(TransformersModel(str(gpt2), task="text-generation"))
    deeper = write_gpt2(tmp_path / "deeper", n_layer=3)
    server = TransformersModel(str(deeper), task="text-generation", dispatch=True)
    ran = []
    server._module.register_forward_hook(lambda *args: ran.append(True))
    with pytest.raises(TreeMismatchError) as info:
        run_request(server, request.env, request.blob)
    assert info.value.diff is not None and info.value.diff.first_path == "transformer.h.2"
    message = str(info.value)
    assert "first differing path: transformer.h.2" in message and "refusing to run it" in message
    assert f"repo: client '{gpt2}' -> server '{deeper}'" in message
    assert ran == []  # nothing ran


def test_server_refuses_when_the_client_tree_cannot_be_rebuilt(gpt2, tmp_path):
    """A client plan this server cannot rebuild still gets refused, with the reason instead of the paths."""
    from nnsight import TransformersModel

    client_folder = write_gpt2(tmp_path / "client_only", n_layer=3)
    request = _request(TransformersModel(str(client_folder), task="text-generation"))
    (client_folder / "config.json").unlink()  # the client's files are not on this server
    server = TransformersModel(str(gpt2), task="text-generation", dispatch=True)
    with pytest.raises(TreeMismatchError, match="could not be rebuilt on this server") as info:
        run_request(server, request.env, request.blob)
    assert info.value.diff is None


@pytest.mark.parametrize("entry", [{"digest": "0" * 64, "plan": None, "schema": 99}, ["not", "an", "object"]])
def test_a_handshake_of_another_schema_is_refused(gpt2, entry):
    from nnsight import TransformersModel

    server = TransformersModel(str(gpt2), task="text-generation", dispatch=True)
    with pytest.raises(SignatureFormatError, match="handshake"):
        server._remoteable_set_env({"attn_implementation": "sdpa", ENV_KEY: entry})


def test_server_without_hybridload_ignores_the_key(gpt2):
    """nnsight's unpatched classes run a request carrying the handshake exactly like any other request."""
    from nnsight import TransformersModel

    request = _request(TransformersModel(str(gpt2), task="text-generation"))
    assert ENV_KEY in request.env
    with plain_nnsight():
        server = TransformersModel(str(gpt2), task="text-generation", tokenizer=str(gpt2), dispatch=True)
        assert not getattr(type(server)._remoteable_set_env, "__hybridload_patch__", False)
        server._remoteable_set_env({"attn_implementation": "eager", ENV_KEY: request.env[ENV_KEY]})
        assert server.attn_implementation == "eager"  # nnsight applied its own keys, ignored ours
        saved = run_request(server, request.env, request.blob)
        reference = _reference(server)
    assert sorted(saved) == ["hidden", "logits"]
    assert all(torch.equal(saved[name], reference[name]) for name in saved)


def test_same_tree_with_another_plan_runs_with_a_warning(gpt2, tmp_path, caplog):
    """Same tree, other folder (so other plan facts): the request runs; the server log says what differs."""
    import shutil

    from nnsight import TransformersModel

    request = _request(TransformersModel(str(gpt2), task="text-generation"))
    twin = tmp_path / "same_tree"
    shutil.copytree(gpt2, twin)
    server = TransformersModel(str(twin), task="text-generation", dispatch=True)
    with caplog.at_level("WARNING", logger="hybridload.integrations.nnsight_handshake"):
        saved = run_request(server, request.env, request.blob)
    assert sorted(saved) == ["hidden", "logits"]
    assert f"repo: client '{gpt2}' -> server '{twin}'" in caplog.text


@pytest.mark.parametrize("change", ["dtype", "class"])
def test_a_dtype_or_module_class_difference_is_a_tree_difference(gpt2, change):
    """What a quantized deployment or a client-side dtype does to the tree: refused, path and change named."""
    from nnsight import TransformersModel

    client = TransformersModel(str(gpt2), task="text-generation", **({"dtype": "bfloat16"} if change == "dtype" else {}))
    request = _request(client)
    server = TransformersModel(str(gpt2), task="text-generation", dispatch=True)
    if change == "class":
        mlp = server._module.transformer.h[0].mlp
        mlp.c_fc.__class__ = type("QuantizedConv1D", (type(mlp.c_fc),), {})
    with pytest.raises(TreeMismatchError) as info:
        run_request(server, request.env, request.blob)
    first = info.value.diff.first_difference
    assert first.change == change
    assert first.path == ("transformer.wte.weight" if change == "dtype" else "transformer.h.0.mlp.c_fc")


@pytest.mark.parametrize("policy", [None, "client"])
def test_client_remote_code_is_rebuilt_only_when_the_server_trusts_it(tmp_path, monkeypatch, policy):
    """The plan in a request names the code to run; the server runs it only if it already trusts that code."""
    from nnsight import TransformersModel
    from nnsight_fixtures import write_tiny_hybrid

    client_folder = write_tiny_hybrid(tmp_path / "client_code", version=1)
    server_folder = write_tiny_hybrid(tmp_path / "server_code", version=2)
    client = TransformersModel(str(client_folder), trust_remote_code=True, task="text-generation")
    backend = CaptureBackend(client)
    with client.trace(torch.tensor([[2, 3, 4]]), backend=backend):
        logits = client.lm_head.output.save()  # noqa: F841
    with pytest.warns(RuntimeWarning, match="without mamba_ssm"):
        server = TransformersModel(str(server_folder), trust_remote_code=True, task="text-generation", dispatch=True)
    if policy:
        monkeypatch.setenv("HYBRIDLOAD_TRUST_REMOTE_CODE", str(client_folder))
    with pytest.raises(TreeMismatchError) as info:
        run_request(server, backend.env, backend.blob)
    if policy:
        assert info.value.diff.first_path == "model.v2_only"
    else:
        assert info.value.diff is None
        assert f"would run remote code of {client_folder}, which this server neither serves nor trusts" in str(info.value)
