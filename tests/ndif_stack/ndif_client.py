"""An nnsight client of the loopback NDIF stack (nnsight's own RemoteBackend over HTTP and websocket).

    python ndif_client.py hybridload|plain|local MODEL_FOLDER OUT_DIR

* ``hybridload``: imports hybridload before nnsight, no kernel package; sends the matching trace, the long
  trace (result through the object store), and three requests the server must refuse: a tree one layer short,
  another dtype, a plan that does not trust the code the deployment runs;
* ``plain``: nnsight without hybridload's integration (kernel packages on its path so its meta build can import
  them; those test packages compute with hybridload's reference functions, so ``HYBRIDLOAD_DISABLE=1`` keeps
  their import from installing the integration);
* ``local``: no server: the same plan loaded here (kernel packages on its path) runs the same traces.
Writes OUT_DIR/<mode>.json and OUT_DIR/<mode>_<case>.pt.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "nnsight")]


def _backend_class():
    from nnsight.intervention.backends.remote import RemoteBackend

    class RecordingBackend(RemoteBackend):
        """nnsight's RemoteBackend, recording the statuses and how the result came back."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.statuses: list[str] = []
            self.transport: str | None = None

        def note(self, response):
            self.statuses.append(response.status.name)
            return super().note(response)

        def download_result(self, data):
            self.transport = "inline" if isinstance(data, (bytes, bytearray)) else "object store"
            return super().download_result(data)

    return RecordingBackend


def _remote(lm, trace, case: str, out: Path, report: dict) -> None:
    import torch
    from nnsight.intervention.backends.remote import RemoteError

    backend = _backend_class()(lm.to_model_key(), env=lm._remoteable_get_env())
    entry: dict = {"model_key": lm.to_model_key(), "error": None}
    try:
        values = trace(lm, backend=backend)
        torch.save({k: v for k, v in values.items()}, out / f"{report['mode']}_{case}.pt")
    except RemoteError as exc:
        entry["error"] = str(exc)
    entry.update(statuses=backend.statuses, transport=backend.transport)
    report["cases"][case] = entry
    (out / f"{report['mode']}.partial.json").write_text(json.dumps(report, indent=2))


def main() -> None:
    mode, folder, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    report: dict = {"mode": mode, "cases": {}}
    if mode != "plain":
        import hybridload  # noqa: F401 - before nnsight
    import nnsight
    import torch
    from nnsight import CONFIG

    from e2e_traces import ablate_and_scale
    from ndif_traces import long_logits

    CONFIG.APP.REMOTE_LOGGING = False
    try:
        if mode == "local":
            lm = nnsight.TransformersModel(folder, trust_remote_code=True, dispatch=True)
            for case, trace in (("match", ablate_and_scale), ("big", long_logits)):
                torch.save(trace(lm), out / f"local_{case}.pt")
        elif mode == "plain":
            from nnsight.modeling import huggingface

            huggingface._ID_CACHE[folder] = folder  # what the Hub would answer; a local folder has no Hub record
            lm = nnsight.TransformersModel(folder, task="text-generation", tokenizer=folder, trust_remote_code=True)
            _remote(lm, ablate_and_scale, "match", out, report)
            report["env_keys"] = sorted(lm._remoteable_get_env())
        else:
            lm = nnsight.TransformersModel(folder, trust_remote_code=True)
            report["digest"] = hybridload.signature(lm).digest
            _remote(lm, ablate_and_scale, "match", out, report)
            _remote(lm, long_logits, "big", out, report)
            shorter = nnsight.TransformersModel(folder, trust_remote_code=True, num_hidden_layers=7,
                                                hybrid_override_pattern="M-M*ME-")
            _remote(shorter, ablate_and_scale, "fewer", out, report)
            _remote(nnsight.TransformersModel(folder, trust_remote_code=True, dtype="bfloat16"), ablate_and_scale,
                    "dtype", out, report)
            _remote(nnsight.TransformersModel(folder), ablate_and_scale, "untrusted", out, report)
            report["dispatched"] = lm.dispatched
        report["kernel_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("mamba_ssm", "causal_conv1d"))
        installed = sys.modules.get("hybridload.integrations.install")
        report["hybridload_installed"] = bool(installed and installed.is_installed())
    except Exception:  # noqa: BLE001 - the test reads the report
        report["crash"] = traceback.format_exc()
    (out / f"{mode}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
