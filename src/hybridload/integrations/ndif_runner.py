"""``hybridload-ndif-runner -m MODULE [ARGS...]``: the interpreter NDIF's sandbox pool starts runners with.

NDIF's ``Pool(python=...)`` launches each runner as ``<python> -m ndif.services.ray.sandbox.runner ...`` with a
minimal environment. This console script stands in for ``<python>``: it imports hybridload, so the runner's
meta build of the model key goes through the load plan (kernel packages stood in for, the deployment's trust),
then runs the module exactly as ``python -m`` would.
"""
from __future__ import annotations

import runpy
import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "-m":
        raise SystemExit(f"usage: hybridload-ndif-runner -m MODULE [ARGS...] (got {args!r})")
    from .install import install

    install()  # before the runner imports nnsight

    module = args[1]
    sys.argv = [module, *args[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
