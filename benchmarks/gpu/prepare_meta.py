"""The GPU-less half of run 7.5: resolve the Kimi-style plan and sign its meta build, on a machine without fla.

    python benchmarks/gpu/prepare_meta.py          # writes tests/data/gpu/kimi_gpu.lock.json + kimi_gpu_meta_signature.json

The lock carries the plan to the GPU host (``resolve(folder, lock=...)`` there must agree with it); the
signature is what the served tree is compared with. Refuses to run where fla is importable or CUDA is
visible: the point is that the client builds the tree from hybridload's twins, with nothing GPU-side.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE.parents[1] / "src"), str(HERE)) if p not in sys.path]

from run_all import LOCK, META_SIGNATURE  # noqa: E402


def build(folder: Path) -> tuple:
    """(plan, signature) of the meta build of the bf16 plan of ``folder`` (written there first)."""
    import hybridload

    import kimi_gpu_model

    kimi_gpu_model.write_folder(folder)
    plan = hybridload.resolve(folder, trust_remote_code=True, dtype="bfloat16")
    model = hybridload.load_meta(plan)
    header = {"built_on": {"cuda": False, "fla_installed": importlib.util.find_spec("fla") is not None}}
    return plan, hybridload.signature(model, plan, header=header)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    import torch

    if importlib.util.find_spec("fla") is not None or torch.cuda.is_available():
        print("prepare_meta.py must run GPU-less, without fla installed (the client side)", file=sys.stderr)
        return 2
    import kimi_gpu_model
    from hybridload.plan.lockfile import write_lock

    plan, sig = build(kimi_gpu_model.FOLDER)
    write_lock(LOCK, plan, sig)
    sig.write(META_SIGNATURE)
    print(f"plan {plan.fingerprint[:12]} ({plan.dtype}, {plan.attn_implementation_built}) -> {LOCK}")
    print(f"meta signature {sig.digest} -> {META_SIGNATURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
