"""The laptop side of the end-to-end test: no kernel package, the shim stands in; nnsight's real RemoteBackend.

    python e2e_client.py MODEL_FOLDER PORT_FILE OUT_DIR

hybridload is imported before nnsight here (the server imports them the other way round). Writes
OUT_DIR/client.json and OUT_DIR/remote_ok.pt.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    folder, port_file, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    import hybridload  # before nnsight: the post-import hook patches nnsight as it is imported

    import nnsight
    import torch
    from nnsight import CONFIG
    from nnsight.intervention.backends.remote import RemoteError

    from e2e_traces import ablate_and_scale

    CONFIG.APP.REMOTE_LOGGING = False
    lm = nnsight.TransformersModel(folder, trust_remote_code=True)  # task inferred offline from config.json
    module = lm._module
    report = {
        "patched": bool(getattr(type(lm)._load_meta, "__hybridload_patch__", False)),
        "meta": sorted({p.device.type for p in module.parameters()}),
        "stand_ins": module.hybridload_build_report.shim.to_dict()["stand_ins"],
        "kernel_modules_imported": sorted(m for m in sys.modules if m.split(".")[0] in ("mamba_ssm", "causal_conv1d")),
        "digest": hybridload.signature(module).digest,
        "env": lm._remoteable_get_env(),
        "model_key": lm.to_model_key(),
    }
    deadline = time.time() + 120
    while not port_file.exists():
        if time.time() > deadline:
            raise SystemExit("the loopback server did not start")
        time.sleep(0.1)
    host = f"http://127.0.0.1:{port_file.read_text().strip()}"

    CONFIG.API.HOST = f"{host}/ok"  # where remote=True sends requests (NDIF's address by default)
    values = ablate_and_scale(lm, remote=True)
    torch.save({k: v for k, v in values.items()}, out / "remote_ok.pt")
    report["types"] = {k: type(v).__name__ for k, v in values.items()}
    try:
        ablate_and_scale(lm, remote=f"{host}/other")  # a host string overrides CONFIG.API.HOST for one call
        report["mismatch"] = None
    except RemoteError as exc:
        report["mismatch"] = str(exc)
    report["dispatched"] = lm.dispatched  # remote runs never load weights on the laptop
    (out / "client.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
