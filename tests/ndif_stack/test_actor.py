"""hybridload's NDIF classes without the stack (needs the ``ndif`` package): the sandbox runner launcher,
NDIF's own runner building its meta tree through it, and the actor classes NDIF imports by path."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    import hybridload.examples

    target = tmp_path_factory.mktemp("model") / "hybrid_tiny"
    shutil.copytree(hybridload.examples.path("hybrid_tiny"), target,
                    ignore=shutil.ignore_patterns("__pycache__", "make_example.py", "reference_signature.json"))
    return target


def test_the_runner_launcher_imports_hybridload_then_runs_the_module_as_python_m(tmp_path):
    from hybridload.integrations.ndif import runner_python

    (tmp_path / "probe_module.py").write_text(
        "import json, sys\nprint(json.dumps({'hybridload': 'hybridload' in sys.modules, 'argv': sys.argv[1:],"
        " 'name': __name__}))\n")
    run = subprocess.run([runner_python(), "-m", "probe_module", "a", "b"], capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"hybridload": True, "argv": ["a", "b"], "name": "__main__"}
    bad = subprocess.run([runner_python(), "probe_module"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "usage: hybridload-ndif-runner -m MODULE" in bad.stderr


def _key(folder: Path) -> str:
    return "nnsight.modeling.transformers.TransformersModel:" + json.dumps(
        {"repo_id": str(folder), "revision": None, "trust_remote_code": True, "task": "text-generation"})


@pytest.mark.parametrize("launcher", ["hybridload", "plain python"])
def test_ndifs_runner_builds_its_meta_tree_only_through_hybridload(example, launcher, capfd):
    """NDIF's runner starts with an allowlisted environment: no kernel package there. Its meta build of a
    Nemotron-H-style key needs hybridload's shim; with plain Python it reports that ids will resolve to None."""
    from ndif.services.ray.sandbox.host import spawn

    from hybridload.integrations.ndif import runner_python

    python = runner_python() if launcher == "hybridload" else sys.executable
    sandbox = spawn(python=python, quiet=False, timeout=240, model_key=_key(example), trust_remote_code=True)
    sandbox.stop()
    err = capfd.readouterr().err
    if launcher == "hybridload":
        assert "runner: no meta model" not in err, err[-2000:]
    else:
        assert "runner: no meta model" in err and "mamba" in err, err[-2000:]


def test_ndif_resolves_the_actor_classes_by_import_path():
    from ndif.services.ray.deployments.controller.cluster.deployment import Deployment, DeploymentLevel

    from hybridload.integrations import ndif, ndif_launch

    for path, expected in ((ndif_launch.MODEL_ACTOR, ndif.HybridloadModelActor),
                           (ndif_launch.CONTROLLER_ACTOR, ndif.HybridloadControllerActor),
                           ("hybridload.integrations.ndif.HybridloadSandboxModelActor", ndif.HybridloadSandboxModelActor)):
        deployment = Deployment("k", "r", DeploymentLevel.HOT, {0: 1}, 1, actor_class=path)
        assert deployment._resolve_actor_class() is expected
    assert deployment.cacheable  # NDIF may park a replica (HOT -> WARM); the CPU path keeps the weights in place
