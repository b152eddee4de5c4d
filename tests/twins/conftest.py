"""Twin tests: make this directory's helper modules (grid, golden I/O) importable under importlib mode."""
from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
