"""Reading and writing golden files (tests/data/goldens/<package>.json) and recording real classes into them."""
from __future__ import annotations

import importlib
import inspect
import json
import platform
from pathlib import Path
from typing import Any

import torch

from hybridload.twins.structure import describe, encode

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "goldens"


def resolve(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def init_signature(cls: type) -> list[list[str]]:
    """Constructor parameters as ``[name, kind, repr(default)]`` (annotations left out: they differ in style)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return [
        [p.name, p.kind.name, "<required>" if p.default is inspect.Parameter.empty else repr(p.default)]
        for p in params
    ]


def record_package(
    package: str, classes: dict[str, list[tuple[dict, str | None]]], build: Any, *, distribution: str, version: str, how: str
) -> dict[str, Any]:
    """Build every grid case of every class with the *real* package and describe it."""
    golden: dict[str, Any] = {
        "package": package,
        "distribution": distribution,
        "version": version,
        "recorded_with": {"torch": torch.__version__, "python": platform.python_version(), "how": how},
        "classes": {},
    }
    for path, cases in classes.items():
        cls = resolve(path)
        actual = f"{cls.__module__}.{cls.__qualname__}"
        if actual != path:
            raise RuntimeError(f"{path} resolves to {actual}: fix the grid's real class path")
        entry = {"signature": init_signature(cls), "cases": []}
        for kwargs, default_device in cases:
            torch.manual_seed(0)
            module = build(cls, kwargs, default_device)
            entry["cases"].append(
                {"kwargs": encode(kwargs), "default_device": default_device, "structure": describe(module)}
            )
        golden["classes"][path] = entry
    return golden


def write(golden: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


def load(package: str) -> dict[str, Any]:
    return json.loads((GOLDEN_DIR / f"{package}.json").read_text())
