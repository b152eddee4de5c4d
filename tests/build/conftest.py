"""One-build-path tests: this folder (entry_fixtures) and the compat fixtures are importable."""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (str(HERE), str(HERE.parent / "compat")):
    if path not in sys.path:
        sys.path.insert(0, path)
