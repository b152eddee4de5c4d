"""docs/compat.md lists every registry entry, and names no entry the registry lacks."""
from __future__ import annotations

import re
from pathlib import Path

import hybridload.compat as compat

DOC = Path(__file__).resolve().parents[2] / "docs" / "compat.md"


def test_every_entry_is_documented_and_every_documented_id_exists() -> None:
    text = DOC.read_text()
    table = text[text.index("## Every entry") :]
    documented = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)) | set(re.findall(r"\| `(config\.[^`]+)` \|", table))
    ids = {entry.id for entry in compat.entries()}
    assert ids - documented == set()
    assert documented - ids == set()
