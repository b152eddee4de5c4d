"""The layout shows the design: subpackages depend one way, file names mean one thing, the project speaks of
itself only.

Layers (lowest first): errors/_env/_version <- hooks, tree <- kernels, reference, twins, substitutes <- shim,
compat, quant <- plan <- build <- load <- serve <- integrations, examples <- cli <- the package root. An import (at
any depth of a module, function-level included) may only point at its own layer or a lower one, and no two
subpackages may import each other, directly or around a cycle.
"""
from __future__ import annotations

import ast
import collections
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "hybridload"

LAYERS: list[set[str]] = [
    {"errors", "_env", "_version", "_lazy"},
    {"hooks", "tree"},
    {"kernels", "reference", "twins", "substitutes"},
    {"shim", "compat", "quant"},
    {"plan"},
    {"build"},
    {"load"},
    {"serve"},
    {"integrations", "examples"},
    {"cli"},
    {"__init__"},
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> the modules where that import is written."""
    edges: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        if path.name == "make_example.py":
            continue  # a bundled example's generator: a script run on its own (it uses the public API), never imported
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts)
        is_package = module.endswith(".__init__")
        if is_package:
            module = module[: -len(".__init__")]
        package = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    if node.module:
                        targets = [".".join(base + [node.module])]
                    else:
                        targets = [".".join(base + [alias.name]) for alias in node.names]
                elif node.module:
                    targets = [node.module]
            for target in targets:
                if target == "hybridload" or target.startswith("hybridload."):
                    source_unit, target_unit = _unit(module), _unit(target)
                    if source_unit != target_unit:
                        edges[(source_unit, target_unit)].append(module)
    return edges


def test_every_subpackage_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if not p.name.startswith("__pycache__")}
    units = {u for u in units if (PACKAGE / u).is_dir() or u.endswith("") and (PACKAGE / f"{u}.py").exists()}
    assert units - set(LEVEL) == set(), "a new subpackage needs a place in LAYERS (and in docs/architecture.md)"


def test_imports_point_down_the_layers():
    upward = [
        f"{source} -> {target} (in {', '.join(sorted(set(where)))})"
        for (source, target), where in sorted(_imports().items())
        if LEVEL[target] > LEVEL[source]
    ]
    assert upward == []


def test_no_import_cycles_between_subpackages():
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for source, target in _imports():
        graph[source].add(target)
    cycles = []
    for start in list(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in path and len(path) < len(graph):
                    stack.append((nxt, path + [nxt]))
    assert cycles == []


def test_file_names_mean_one_thing():
    """A module name appears in one subpackage only, except per-kernel-package modules (``fla.py`` in
    reference/ and twins/ is fla's reference and fla's twins), ``__init__`` and the bundled example repositories."""
    per_kernel_package = {"fla", "flash_attn", "mamba_ssm", "causal_conv1d", "apex"}
    seen: dict[str, list[str]] = collections.defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        if "examples" in path.relative_to(PACKAGE).parts[:1]:
            continue  # each bundled example is a model repository of its own (its remote code, its generator)
        if path.stem not in ("__init__",) and path.stem not in per_kernel_package:
            seen[path.stem].append(str(path.parent.relative_to(PACKAGE)))
    assert {name: dirs for name, dirs in seen.items() if len(dirs) > 1} == {}


def test_the_top_level_api_is_small_and_named_in_the_docs():
    import hybridload

    names = [n for n in hybridload.__all__ if not n.endswith("Error") and n != "__version__"]
    assert len(names) <= 30
    docs = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    undocumented = [n for n in names if f"{n}(" not in docs and f"`{n}`" not in docs and f"hybridload.{n}" not in docs]
    assert undocumented == []


_FORBIDDEN = [
    (re.compile(r"\bissues? \d|\bissue #?\d|\bissue's\b|\bthe issue\b", re.I), "issue references"),
    (re.compile(r"\bsession \d|\bwork sessions?\b|\bthis session\b|\blast session\b|\bsession [12]'s\b", re.I), "work sessions"),
    (re.compile(r"device tool|search tool|\bthe lead\b|kernels' engineer|\bhelper agent", re.I), "tools or people"),
]


@pytest.mark.parametrize("pattern, what", _FORBIDDEN, ids=[w for _, w in _FORBIDDEN])
def test_the_project_speaks_of_the_software_only(pattern, what):
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for folder in ("src", "tests", "benchmarks", "examples", ".ci"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", "") and p.is_file()
                  and "__pycache__" not in p.parts and p.name != Path(__file__).name]
    hits = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert hits == [], f"{what}:\n" + "\n".join(hits[:20])
