"""Signature files: deterministic JSON out, strict validation in.

The file stores the digest it was written with; reading recomputes it from the tree, so a truncated,
merged or hand-edited file is refused instead of silently comparing against a tree nobody built.
"""
from __future__ import annotations

import json
import os
from typing import Any, Union

from ..errors import SignatureFormatError
from .canonical import SCHEMA
from .signature import BufferSpec, ParamSpec, TreeSignature

_SCHEMA_FAMILY = SCHEMA.rpartition("/")[0]
_REGENERATE = "regenerate it with hybridload.signature(model).write(path) (or TreeSignature.to_json())"


def _entry_lines(items: list[tuple[str, Any]]) -> str:
    if not items:
        return "{}"
    body = ",\n".join(f"      {json.dumps(key)}: {json.dumps(value, separators=(', ', ': '))}" for key, value in items)
    return "{\n" + body + "\n    }"


def dumps(sig: TreeSignature) -> str:
    """JSON with one tree entry per line (readable in a CI log or a git diff), keys in tree order."""
    header = json.dumps(dict(sig.header), sort_keys=True, indent=2).replace("\n", "\n  ")
    modules = _entry_lines(list(sig.modules.items()))
    parameters = _entry_lines([(path, [list(spec.shape), spec.dtype]) for path, spec in sig.parameters.items()])
    buffers = _entry_lines(
        [(path, [list(spec.shape), spec.dtype, spec.persistent]) for path, spec in sig.buffers.items()]
    )
    ties = _entry_lines([(canonical, list(aliases)) for canonical, aliases in sig.ties.items()])
    return (
        "{\n"
        f'  "schema": {json.dumps(SCHEMA)},\n'
        f'  "digest": {json.dumps(sig.digest)},\n'
        f'  "header": {header},\n'
        '  "tree": {\n'
        f'    "modules": {modules},\n'
        f'    "parameters": {parameters},\n'
        f'    "buffers": {buffers},\n'
        f'    "ties": {ties}\n'
        "  }\n"
        "}\n"
    )


def _fail(problem: str) -> SignatureFormatError:
    return SignatureFormatError(f"not a valid tree signature: {problem}; {_REGENERATE}")


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(size) is int and size >= 0 for size in value):
        raise _fail(f"{where}: shape must be a list of non-negative integers, got {value!r}")
    return tuple(value)


def _dtype(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(f"{where}: dtype must be a non-empty string, got {value!r}")
    return value


def _object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise _fail(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _tree(data: dict) -> tuple[dict, dict, dict, dict]:
    tree = _object(data.get("tree"), '"tree"')
    unknown = set(tree) - {"modules", "parameters", "buffers", "ties"}
    if unknown:
        raise _fail(f'unknown keys in "tree": {sorted(unknown)}')
    modules = _object(tree.get("modules"), '"tree.modules"')
    for path, cls in modules.items():
        if not isinstance(cls, str) or not cls:
            raise _fail(f"module {path!r}: class must be a non-empty string, got {cls!r}")
    parameters = {}
    for path, value in _object(tree.get("parameters"), '"tree.parameters"').items():
        if not isinstance(value, list) or len(value) != 2:
            raise _fail(f"parameter {path!r} must be [shape, dtype], got {value!r}")
        parameters[path] = ParamSpec(_shape(value[0], f"parameter {path!r}"), _dtype(value[1], f"parameter {path!r}"))
    buffers = {}
    for path, value in _object(tree.get("buffers"), '"tree.buffers"').items():
        if not isinstance(value, list) or len(value) != 3 or not isinstance(value[2], bool):
            raise _fail(f"buffer {path!r} must be [shape, dtype, persistent], got {value!r}")
        buffers[path] = BufferSpec(_shape(value[0], f"buffer {path!r}"), _dtype(value[1], f"buffer {path!r}"), value[2])
    ties = {}
    for canonical, aliases in _object(tree.get("ties"), '"tree.ties"').items():
        if not isinstance(aliases, list) or not aliases or not all(isinstance(alias, str) for alias in aliases):
            raise _fail(f"ties of {canonical!r} must be a non-empty list of paths, got {aliases!r}")
        ties[canonical] = tuple(aliases)
    return modules, parameters, buffers, ties


def loads(text: Union[str, bytes]) -> TreeSignature:
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(f"not UTF-8 text ({exc})") from None
    if not isinstance(text, str):
        raise SignatureFormatError(f"from_json() takes the JSON text (str or bytes), got {type(text).__name__}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"JSON does not parse (truncated or corrupted?): {exc}") from None
    data = _object(data, "the document")
    schema = data.get("schema")
    if schema != SCHEMA:
        if isinstance(schema, str) and schema.startswith(_SCHEMA_FAMILY + "/"):
            raise SignatureFormatError(
                f"this signature was written with schema {schema!r}; this hybridload reads {SCHEMA!r}. "
                f"Use the hybridload version that wrote it, or {_REGENERATE}"
            )
        raise _fail(f'"schema" is {schema!r}, expected {SCHEMA!r} (is this a hybridload tree signature?)')
    stored = data.get("digest")
    if not isinstance(stored, str):
        raise _fail('"digest" is missing')
    header = _object(data.get("header", {}), '"header"')
    modules, parameters, buffers, ties = _tree(data)
    sig = TreeSignature(modules, parameters, buffers, ties, header)
    if sig.digest != stored:
        raise SignatureFormatError(
            f"the tree in this signature does not match its digest (stored {stored[:12]}, recomputed "
            f"{sig.digest[:12]}): the file was edited, merged or corrupted. Do not edit signature files; "
            f"{_REGENERATE}"
        )
    return sig


def read(path: Union[str, os.PathLike]) -> TreeSignature:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise SignatureFormatError(f"cannot read signature file {os.fspath(path)!r}: {exc}") from None
    try:
        return loads(data)
    except SignatureFormatError as exc:
        raise SignatureFormatError(f"{os.fspath(path)}: {exc}") from None
