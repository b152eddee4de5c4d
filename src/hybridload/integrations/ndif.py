"""hybridload's model actors and controller actor for NDIF (the ``ndif`` package, the server of nnsight 0.8.x).

NDIF picks its classes by import path, so a deployment uses these without a fork or a patched file:

* ``NDIF_MODEL_IMPORT_PATH=hybridload.integrations.ndif.HybridloadModelActor`` (or
  ``...HybridloadSandboxModelActor`` on a cluster that takes untrusted requests; a deployment's ``actor_class``
  may name either): each replica loads its model through the load plan (:func:`hybridload.dispatch` with the
  deployment's settings, :mod:`.ndif_deployment`), logs the plan, its tree digest and the kernel report when it
  comes up, and keeps the tree-digest handshake (:mod:`.nnsight_handshake`). The deployment's trust decision
  is written onto the served module, so a request whose plan decided trust otherwise is refused with
  :class:`~hybridload.errors.DeploymentTrustError` before anything runs. A node without CUDA (a GPU resource
  declared to Ray for testing) loads on the CPU and skips NDIF's CUDA-only bookkeeping.
* ``NDIF_CONTROLLER_IMPORT_PATH=hybridload.integrations.ndif.HybridloadControllerActor``: NDIF's controller
  with hybridload imported first, so its sizing (``describe_checkpoint`` / ``max_tp_size`` with the
  deployment's trust) reads the plan of the model key.
* the sandboxed actor's runner processes start through the ``hybridload-ndif-runner`` console script
  (``Pool(python=...)``), which imports hybridload before NDIF's runner builds its meta model.

``python -m hybridload.integrations.ndif_launch`` sets both import paths and forwards the ``HYBRIDLOAD_*``
variables to every actor through Ray's ``runtime_env``. Nothing in hybridload imports this module; it
imports Ray, torch, nnsight and NDIF, and needs Python >= 3.12 (NDIF's floor).
"""
from __future__ import annotations

from .install import install

install()  # first: nnsight is routed through the plan before NDIF or any model code imports it

import gc  # noqa: E402
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import ray
import torch
from ndif.common.metrics import ModelLoadTimeMetric
from ndif.common.telemetry import elapsed_ms
from ndif.services.ray.deployments.controller.controller import _ControllerActor
from ndif.services.ray.deployments.modeling.base import KILL_REASON_PREEMPTED, BaseModelDeployment
from ndif.services.ray.deployments.modeling.util import (
    build_max_memory,
    set_default_gpu,
    set_process_limits,
    verify_device_placement,
)
from ndif.services.ray.sandbox.host import Pool
from ndif.services.ray.sandbox.model import DEFAULT_POOL_SIZE, SandboxModelDeployment
from nnsight.modeling.huggingface import HuggingFaceModel

from .ndif_deployment import DeploymentSettings, format_replica_report, replica_report
from .nnsight_handshake import DEPLOYMENT_TRUST_ATTR
from .nnsight_local import dispatch_options

logger = logging.getLogger("hybridload.ndif")

RUNNER_SCRIPT = "hybridload-ndif-runner"


def _log_to_stderr() -> None:
    """Ray keeps a worker's stderr as its log file; the replica report goes there (once per process)."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class HybridloadModelDeployment(BaseModelDeployment):
    """NDIF's model actor, loading through hybridload's plan (see the module docstring)."""

    def load_from_disk(self) -> HuggingFaceModel:
        _log_to_stderr()
        started_at = time.time()
        settings = DeploymentSettings.from_env()  # a bad value fails the replica before any weight is read
        trust = bool(self.kwargs.get("trust_remote_code", False))
        cuda = torch.cuda.is_available()
        if cuda:
            set_default_gpu(self.gpu_mem_bytes_by_id)
            set_process_limits(self.gpu_mem_bytes_by_id)
        with dispatch_options(**settings.dispatch_kwargs()):
            model = HuggingFaceModel.from_model_key(
                self.model_key, dispatch=True, dtype=self.dtype_name, **self._placement(cuda), **self.kwargs
            )
        if cuda:
            torch.cuda.synchronize()
        module = model._module
        module.requires_grad_(False)
        if cuda:
            verify_device_placement(model, self.gpu_mem_bytes_by_id.keys())
        setattr(module, DEPLOYMENT_TRUST_ATTR, trust)
        self.hybridload_report = replica_report(self.model_key, module, settings, trust)
        self.hybridload_report["load_seconds"] = round(time.time() - started_at, 3)
        self.hybridload_report["device"] = "cuda" if cuda else "cpu"
        logger.info("%s", format_replica_report(self.hybridload_report))
        ModelLoadTimeMetric.update(
            model_key=self.model_key,
            duration_ms=elapsed_ms(started_at),
            load_type="initial",
            num_gpus=len(self.gpu_mem_bytes_by_id),
        )
        return model

    def _placement(self, cuda: bool) -> Dict[str, Any]:
        """NDIF's placement on a CUDA node (one card: ``device=``; several: balanced); the CPU without CUDA."""
        if not cuda:
            return {"device": "cpu"}
        gpu_ids = sorted(self.gpu_mem_bytes_by_id)
        if len(gpu_ids) == 1:
            return {"device": gpu_ids[0]}
        return {"device_map": "balanced", "max_memory": build_max_memory(self.gpu_mem_bytes_by_id)}

    def hybridload_status(self) -> Dict[str, Any]:
        """The replica report (plan, tree digest, kernel report, settings), for an operator's Ray call."""
        return dict(self.hybridload_report)

    # -- NDIF's CUDA-only bookkeeping, skipped on a node without CUDA --------------------------------------
    async def to_cache(self) -> None:
        if torch.cuda.is_available():
            return await super().to_cache()
        await self.cancel(KILL_REASON_PREEMPTED)  # the weights already live in host memory
        self.cached = True

    def from_cache(self, gpu_mem_bytes_by_id: Dict[int, int]) -> None:
        if torch.cuda.is_available():
            return super().from_cache(gpu_mem_bytes_by_id)
        self.gpu_mem_bytes_by_id = gpu_mem_bytes_by_id
        self.cached = False

    def cleanup(self) -> None:
        if torch.cuda.is_available():
            return super().cleanup()
        self.kill_switch.clear()
        self.kill_reason = None
        self.execution_ident = None
        self.model.interleaver.cancel()
        gc.collect()


def runner_python() -> str:
    """The executable NDIF's sandbox pool starts runners with: hybridload's launcher beside this Python."""
    path = Path(sys.executable).with_name(RUNNER_SCRIPT)
    if not path.exists():
        from ..errors import DeploymentSettingsError

        raise DeploymentSettingsError(
            f"{path} does not exist: install hybridload with pip into the environment the Ray workers run "
            f"({sys.executable}), so its {RUNNER_SCRIPT} console script is there"
        )
    return str(path)


class HybridloadSandboxModelDeployment(SandboxModelDeployment, HybridloadModelDeployment):
    """NDIF's sandboxed actor (untrusted requests run in runner processes), loading and building through hybridload."""

    def open_pool(self, pool_size: Optional[int] = None, peers: int = 1) -> None:
        self.pool = Pool(
            size=DEFAULT_POOL_SIZE if pool_size is None else pool_size,
            python=runner_python(),
            peers=peers,
            model_key=self.model_key,
            trust_remote_code=self.kwargs.get("trust_remote_code", False),
        )
        self.execution_sandbox = None


class HybridloadController(_ControllerActor):
    """NDIF's controller, sizing through the plan: importing this module installed hybridload first."""


# Ray ships a decorated class by value; its undecorated base is shipped by reference, so a worker that creates
# one of these actors imports this module, hence hybridload, before NDIF's modules import nnsight.
HybridloadModelActor = ray.remote(num_cpus=1, max_restarts=-1)(HybridloadModelDeployment)
HybridloadSandboxModelActor = ray.remote(num_cpus=1, max_restarts=-1)(HybridloadSandboxModelDeployment)
HybridloadControllerActor = ray.remote(num_cpus=1, num_gpus=0, max_restarts=-1, resources={"head": 1})(
    HybridloadController
)
