"""The remote path end to end, without any network beyond 127.0.0.1.

Client process (e2e_client.py): no kernel package; builds the meta model of the bundled Nemotron-H-style
example under the shim and sends a trace (a save, an ablation, a scaling) with nnsight's real
``RemoteBackend`` (``RequestModel.serialize``) to a loopback NDIF endpoint (loopback_ndif.py) in a second
process where tests/fakekernels provides ``mamba_ssm``/``causal_conv1d`` for real. The server dispatches the
model key with real weights, checks the handshake, deserializes with ``RequestModel.deserialize``, runs it,
sends the saves back, and runs the same trace locally on its model. A second deployment serves a model built
from another config under the same key and must refuse the request with the first differing path.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import torch
from nnsight_fixtures import HERE, subprocess_env


def _wait(proc: subprocess.Popen, name: str, timeout: float = 240) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"{name} timed out:\n{out[-4000:]}")
    return out


def test_remote_trace_round_trip_and_refusal(example, tmp_path):
    other = tmp_path / "other"  # the same repo with one layer less: a different tree under the same key
    shutil.copytree(example, other)
    config = json.loads((other / "config.json").read_text())
    config.update(num_hidden_layers=7, hybrid_override_pattern="M-M*ME-")
    (other / "config.json").write_text(json.dumps(config, indent=2))
    # its checkpoint fits its config (a served model never holds weights the checkpoint lacks, nor ignores any)
    from safetensors.torch import load_file, save_file

    weights = load_file(other / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("backbone.layers.7.")}, other / "model.safetensors",
              metadata={"format": "pt"})
    out = tmp_path / "out"
    out.mkdir()
    port_file, log = out / "port", out / "server.jsonl"

    server_env = subprocess_env(tmp_path, kernels=True)
    server_env["HYBRIDLOAD_TRUST_REMOTE_CODE"] = str(example)  # the operator lets it rebuild the client's plan
    server = subprocess.Popen(
        [sys.executable, str(HERE / "loopback_ndif.py"), "--port-file", str(port_file), "--log", str(log),
         "--deployment", "ok", "--deployment", f"other={other}",
         "--local-trace", "e2e_traces:ablate_and_scale", "--local-out", str(out)],
        env=server_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        client = subprocess.Popen(
            [sys.executable, str(HERE / "e2e_client.py"), str(example), str(port_file), str(out)],
            env=subprocess_env(tmp_path, kernels=False), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        client_output = _wait(client, "client")
    finally:
        server.terminate()
        server_output = _wait(server, "server", timeout=30)
    assert client.returncode == 0, f"client:\n{client_output[-4000:]}\nserver:\n{server_output[-4000:]}"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    report = json.loads((out / "client.json").read_text())

    # the client: meta build under the shim, no kernel package imported, nothing loaded for real
    assert report["patched"] and report["meta"] == ["meta"] and report["dispatched"] is False
    assert report["stand_ins"] == {"mamba_ssm": ["mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn"]}
    assert report["kernel_modules_imported"] == []
    assert report["env"]["hybridload"]["digest"] == report["digest"]

    # the server: real kernels bound, the handshake digest equals the served tree, the request ran
    loaded = {e["deployment"]: e for e in events if e["event"] == "loaded"}
    assert loaded["ok"]["kernels"]["rmsnorm_fn"] == "mamba_ssm.ops.triton.layernorm_gated", server_output[-3000:]
    assert loaded["ok"]["digest"] == report["digest"] != loaded["other"]["digest"]
    executed = [e["deployment"] for e in events if e["event"] == "executed"]
    assert executed == ["ok"]  # the mismatching deployment ran nothing

    # the saves came back over nnsight's RemoteBackend, bit for bit what the server computes locally
    remote = torch.load(out / "remote_ok.pt")
    local = torch.load(out / "ok.pt")
    assert sorted(remote) == ["ablated", "logits", "scaled"] and report["types"]["logits"] == "Tensor"
    for name in remote:
        assert remote[name].dtype == local[name].dtype and torch.equal(remote[name], local[name]), name
    assert remote["logits"].shape == (1, 10, 512) and torch.isfinite(remote["logits"]).all()

    # the mismatch: refused with the first differing path, as TreeMismatchError
    refused = next(e for e in events if e["event"] == "refused")
    assert refused["deployment"] == "other" and refused["error_type"] == "TreeMismatchError"
    assert report["mismatch"].startswith("Traceback (most recent call last)")  # the full traceback, as NDIF sends it
    assert "TreeMismatchError: hybridload: this request was traced against another" in report["mismatch"]
    assert "first differing path: backbone.layers.7" in report["mismatch"]
