"""``python -m hybridload.integrations.ndif_launch``: start NDIF's controller with hybridload's actors.

What NDIF's own launcher (``python -m ndif.services.ray.deployments.controller.controller``) does, plus:

* ``NDIF_MODEL_IMPORT_PATH`` and ``NDIF_CONTROLLER_IMPORT_PATH`` default to hybridload's actor classes (an
  operator's own value wins, e.g. the sandboxed actor);
* the deployment settings (:mod:`.ndif_deployment`) are read once here, so a bad value fails the launch;
* every ``HYBRIDLOAD_*`` variable of this process goes into the job's Ray ``runtime_env``; Ray merges a parent's
  ``env_vars`` into its children's, so the controller and every model actor it creates, on any node, see them.

Run it where NDIF's launcher runs (``RAY_ADDRESS`` names the head's GCS, e.g. ``127.0.0.1:6379``).
"""
from __future__ import annotations

import os

MODEL_ACTOR = "hybridload.integrations.ndif.HybridloadModelActor"
CONTROLLER_ACTOR = "hybridload.integrations.ndif.HybridloadControllerActor"


def main() -> None:
    from .ndif_deployment import DeploymentSettings, forwarded_env

    os.environ.setdefault("NDIF_MODEL_IMPORT_PATH", MODEL_ACTOR)
    os.environ.setdefault("NDIF_CONTROLLER_IMPORT_PATH", CONTROLLER_ACTOR)
    DeploymentSettings.from_env()

    import ray

    ray.init(
        address=os.environ.get("RAY_ADDRESS", "auto"),
        namespace="NDIF",
        logging_level="error",
        runtime_env={"env_vars": forwarded_env()},
    )
    # NDIF reads its NDIF_* settings when this module is imported: after the defaults above are set
    from ndif.services.ray.deployments.controller.controller import app

    app()


if __name__ == "__main__":
    main()
