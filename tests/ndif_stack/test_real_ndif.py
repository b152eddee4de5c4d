"""nnsight clients with ``remote=True`` against the real NDIF server (the ``ndif`` package) on loopback.

The stack (``scripts/ndif-loopback --two-nodes``): Redis, moto_server as the object store, a Ray head and a
second Ray node on the same machine that declares the GPU (so every model actor runs off the head, as on a
multi-node cluster), NDIF's controller launched with hybridload's actors, NDIF's API. The server's Ray workers have
tests/fakekernels on their path (a GPU server with its kernel packages installed); the clients have none.
``HYBRIDLOAD_NDIF_STACK=<state dir>`` reuses a running stack; otherwise this module starts one and stops it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
KERNELS = HERE.parent / "fakekernels"
LOOPBACK = ROOT / "scripts" / "ndif-loopback"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    given = os.environ.get("HYBRIDLOAD_NDIF_STACK")
    if given:
        yield json.loads((Path(given) / "state.json").read_text())
        return
    state = tmp_path_factory.mktemp("ndif-stack")
    start = subprocess.run([sys.executable, str(LOOPBACK), "start", "--state", str(state), "--venv",
                            str(Path(sys.executable).parent.parent), "--kernels", str(KERNELS), "--two-nodes"],
                           capture_output=True, text=True, timeout=600)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield json.loads((state / "state.json").read_text())
    finally:
        subprocess.run([sys.executable, str(LOOPBACK), "stop", "--state", str(state)], timeout=120)


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    import shutil

    import hybridload.examples

    target = tmp_path_factory.mktemp("model") / "hybrid_tiny"
    shutil.copytree(hybridload.examples.path("hybrid_tiny"), target,
                    ignore=shutil.ignore_patterns("__pycache__", "make_example.py", "reference_signature.json"))
    return target


def _client(mode: str, example: Path, out: Path, stack: dict, kernels: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYBRIDLOAD_", "NDIF_", "PYTHONPATH"))}
    env.update(stack["client_env"])
    if kernels:
        env["PYTHONPATH"] = str(KERNELS)
    if mode == "plain":
        env["HYBRIDLOAD_DISABLE"] = "1"  # the test kernel packages import hybridload's references
    run = subprocess.run([sys.executable, str(HERE / "ndif_client.py"), mode, str(example), str(out)],
                         env=env, capture_output=True, text=True, timeout=420)
    report_file = out / f"{mode}.json"
    assert report_file.exists(), f"{mode} client wrote no report ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    report = json.loads(report_file.read_text())
    assert "crash" not in report, report["crash"]
    return report


@pytest.fixture(scope="module")
def runs(stack, example, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {
        "hybridload": _client("hybridload", example, out, stack, kernels=False),
        "plain": _client("plain", example, out, stack, kernels=True),
        "local": _client("local", example, out, stack, kernels=True),
        "out": out,
    }


def _tensors(runs: dict, name: str) -> dict:
    return torch.load(runs["out"] / f"{name}.pt")


def _equal_bitwise(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name


def test_a_gpu_less_hybridload_client_gets_what_a_local_run_of_the_same_plan_computes(runs):
    client = runs["hybridload"]
    match = client["cases"]["match"]
    assert match["error"] is None
    assert client["kernel_modules"] == [] and client["dispatched"] is False  # GPU-less: stand-ins, no weights
    assert client["hybridload_installed"] is True
    remote, local = _tensors(runs, "hybridload_match"), _tensors(runs, "local_match")
    _equal_bitwise(remote, local)
    assert remote["logits"].shape == (1, 10, 512) and torch.isfinite(remote["logits"]).all()
    # NDIF's lifecycle as the client saw it, inline result
    statuses = match["statuses"]
    assert statuses[0] == "RECEIVED" and statuses[-1] == "COMPLETED" and match["transport"] == "inline"
    assert [s for s in ("QUEUED", "DISPATCHED", "RUNNING") if s in statuses] == ["QUEUED", "DISPATCHED", "RUNNING"]


def test_a_client_without_hybridload_is_served(runs):
    plain = runs["plain"]
    assert plain["hybridload_installed"] is False and "hybridload" not in plain["env_keys"]  # no handshake
    assert plain["cases"]["match"]["error"] is None
    _equal_bitwise(_tensors(runs, "plain_match"), _tensors(runs, "local_match"))


def test_a_result_above_the_inline_limit_comes_back_through_the_object_store(runs, stack):
    big = runs["hybridload"]["cases"]["big"]
    assert big["error"] is None and big["transport"] == "object store"
    _equal_bitwise(_tensors(runs, "hybridload_big"), _tensors(runs, "local_big"))
    import boto3

    s3 = boto3.client("s3", endpoint_url=stack["env"]["NDIF_OBJECT_STORE_URL"], aws_access_key_id="loopback",
                      aws_secret_access_key="loopback", region_name="us-east-1")
    sizes = [o["Size"] for o in s3.list_objects_v2(Bucket="ndif-results").get("Contents", [])]
    assert any(size > 1024 * 1024 for size in sizes), sizes


def test_a_tree_one_layer_short_is_refused_naming_the_first_differing_path(runs):
    error = runs["hybridload"]["cases"]["fewer"]["error"]
    assert error is not None and "Traceback (most recent call last)" in error  # NDIF sends the full traceback
    assert "TreeMismatchError: hybridload: this request was traced against another module tree" in error
    assert "first differing path: backbone.layers.7" in error


def test_a_plan_with_another_dtype_is_refused_naming_the_field(runs):
    error = runs["hybridload"]["cases"]["dtype"]["error"]
    assert error is not None and "TreeMismatchError" in error
    assert "plan difference: dtype: client 'bfloat16' -> server 'float32'" in error


def test_a_plan_that_does_not_trust_what_the_deployment_runs_is_refused(runs):
    case = runs["hybridload"]["cases"]["untrusted"]
    assert '"trust_remote_code"' not in case["model_key"]  # its own deployment; NDIF's dev mode trusts it
    error = case["error"]
    assert error is not None and "DeploymentTrustError" in error
    assert "this deployment runs the remote code of" in error and "trust_remote_code=False" in error


def _worker_logs(stack: dict) -> str:
    logs = Path(stack["ray_temp"]) / "session_latest" / "logs"
    return "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("worker-*.err")))


def test_the_replica_logs_its_plan_digest_and_kernel_report(runs, stack):
    logs = _worker_logs(stack)
    digest = runs["hybridload"]["digest"]
    assert f"tree digest: {digest}" in logs
    report = logs[logs.index(f"tree digest: {digest}"):]
    assert "kernel report:" in report
    line = next(line for line in report.splitlines() if "rmsnorm_fn" in line)
    assert " real " in line and "mamba_ssm.ops.triton.layernorm_gated" in line, line


def _ray_list(stack: dict, what: str) -> list[dict]:
    ray = Path(sys.executable).parent / "ray"
    listed = subprocess.run([str(ray), "list", what, "--format", "json", "--limit", "1000", "--address",
                             f"http://127.0.0.1:{stack['ports']['dashboard']}"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, **stack["env"]})
    assert listed.returncode == 0, listed.stderr[-2000:]
    return json.loads(listed.stdout)


def test_the_model_actor_runs_on_the_second_ray_node(runs, stack):
    """Scale-out: the head declares no GPU, so NDIF placed the model actor on the GPU node, where the requests
    above were served and passed the tree handshake."""
    gpu_node = stack["gpu_node_address"]
    assert gpu_node, "this stack runs one Ray node (scripts/ndif-loopback start --two-nodes runs two)"
    node_ips = {node["node_id"]: node["node_ip"] for node in _ray_list(stack, "nodes")}
    assert len(node_ips) == 2 and gpu_node in node_ips.values()
    model_actors = [a for a in _ray_list(stack, "actors") if a["state"] == "ALIVE" and "ModelDeployment" in a["class_name"]]
    assert model_actors, [a["class_name"] for a in _ray_list(stack, "actors")]
    assert {node_ips[a["node_id"]] for a in model_actors} == {gpu_node}
