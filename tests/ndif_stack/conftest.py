"""The NDIF tests. The end-to-end module needs the ``ndif`` package (Python >= 3.12, ``scripts/ci-ndif``);
where it is not installed only the deployment-settings tests are collected (they need no NDIF)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for entry in (str(HERE), str(HERE.parent), str(HERE.parent / "nnsight")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

collect_ignore = [] if importlib.util.find_spec("ndif") is not None else ["test_real_ndif.py", "test_actor.py"]
