"""Remote code, inspected without running it: auto_map references, the files they pull in, their sha256.

Everything here reads files as text (``ast`` and transformers' relative-import scanner); nothing is
imported or executed, so a plan can name and pin the code *before* anyone decides to trust it.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..errors import RemoteCodeError
from .files import MissingFile, RepoFiles, sha256_file
from .model import CodeFile


@dataclass(frozen=True)
class CodeRef:
    """One auto_map entry: ``[repo--]module.Class``."""

    key: str  # auto_map key, e.g. "AutoModelForCausalLM"
    raw: str
    repo: str | None  # upstream repo when the reference is "repo--module.Class"
    module: str
    class_name: str

    @property
    def filename(self) -> str:
        return self.module + ".py"


def parse_ref(key: str, raw: Any, where: str) -> CodeRef:
    if not isinstance(raw, str) or not raw:
        raise RemoteCodeError(f"{where}: auto_map[{key!r}] must be a 'module.ClassName' string, got {raw!r}")
    repo, _, ref = raw.rpartition("--")
    parts = ref.split(".")
    if len(parts) != 2 or not all(p.isidentifier() for p in parts):
        raise RemoteCodeError(
            f"{where}: auto_map[{key!r}] = {raw!r} is not a 'module.ClassName' reference (e.g. "
            "'modeling_foo.FooForCausalLM', optionally prefixed by 'org/repo--'); fix config.json"
        )
    return CodeRef(key=key, raw=raw, repo=repo or None, module=parts[0], class_name=parts[1])


def is_module_ref(raw: Any) -> bool:
    """Whether an auto_map value is a ``[repo--]module.Class`` reference (code this repo or another one ships)."""
    if not isinstance(raw, str) or not raw:
        return False
    parts = raw.rpartition("--")[2].split(".")
    return len(parts) == 2 and all(p.isidentifier() for p in parts)


def tokenizer_refs(auto_map: dict, where: str) -> tuple[list[CodeRef], list[Any]]:
    """(module references the tokenizer load will run, entries that are no code reference).

    Published configs carry AutoTokenizer entries that name another repository (``"org/other-repo"``) or
    ``None`` slots; they are recorded, never validated as module references.
    """
    value = auto_map.get("AutoTokenizer")
    if value is None:
        return [], []
    entries = value if isinstance(value, (list, tuple)) else [value]
    refs = [parse_ref("AutoTokenizer", entry, where) for entry in entries if is_module_ref(entry)]
    others = [entry for entry in entries if entry is not None and not is_module_ref(entry)]
    return refs, others


def _top_level_names(tree: ast.Module) -> tuple[set[str], bool]:
    names: set[str] = set()
    star = False
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    star = True
                else:
                    names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.If, ast.Try)):
            # definitions guarded by `if`/`try` (e.g. optional kernel imports) still define names
            inner = ast.Module(body=[n for n in ast.walk(node) if isinstance(n, ast.stmt) and n is not node], type_ignores=[])
            sub, sub_star = _top_level_names(inner)
            names |= sub
            star = star or sub_star
    return names, star


def check_class_defined(path: Path, ref: CodeRef, where: str) -> None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise RemoteCodeError(f"{where}: syntax error at line {exc.lineno}: {exc.msg}; the remote code is broken") from None
    names, star = _top_level_names(tree)
    if ref.class_name not in names and not star:
        classes = sorted(n.name for n in tree.body if isinstance(n, ast.ClassDef))
        raise RemoteCodeError(
            f"auto_map[{ref.key!r}] names {ref.raw!r} but {where} defines no {ref.class_name!r} "
            f"(classes there: {', '.join(classes) or 'none'}); fix the auto_map entry in config.json"
        )


def collect_code_files(files: RepoFiles, refs: Iterable[CodeRef], config_where: str) -> list[CodeFile]:
    """Every file the references load (module files plus their relative imports), with sha256."""
    from transformers.dynamic_module_utils import get_relative_imports

    pinned: dict[str, CodeFile] = {}
    queue: list[tuple[str, str]] = []  # (filename, who needs it)
    for ref in refs:
        try:
            path = files.path(ref.filename)
        except MissingFile as exc:
            raise RemoteCodeError(
                f"{config_where}: auto_map[{ref.key!r}] = {ref.raw!r} needs {ref.filename}, which is missing "
                f"({exc}); add the file or fix the auto_map entry"
            ) from None
        check_class_defined(path, ref, files.where(ref.filename))
        queue.append((ref.filename, f"auto_map[{ref.key!r}]"))
    while queue:
        filename, needed_by = queue.pop(0)
        if filename in pinned:
            continue
        try:
            path = files.path(filename)
        except MissingFile as exc:
            raise RemoteCodeError(f"{needed_by} imports {filename}, which is missing ({exc})") from None
        pinned[filename] = CodeFile(repo=files.repo, path=filename, sha256=sha256_file(path))
        parent = Path(filename).parent
        for module in get_relative_imports(str(path)):
            queue.append(((parent / (module.replace(".", "/") + ".py")).as_posix(), files.where(filename)))
    return [pinned[name] for name in sorted(pinned)]
