"""``kernel_report(model)``: which kernel symbols a loaded model's code bound, and whether each is real.

An operator's question is "does this model run the real kernels?". The answer is read off the objects the
model's remote code actually bound (module globals of every class in the tree, kernel callables stored on
submodules, kernel-provided submodule classes), not off what is installed.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from ..kernels.kernel_entry import FALLBACK, REAL, REFERENCE_PATH, STAND_IN, TWIN, KernelEntry
from ..shim.packages import kernel_packages, top_level
from ..shim.standins import is_stand_in

_ARCH = re.compile(rb"sm_(\d{2,3})a?")


@dataclass
class KernelReport:
    entries: list[KernelEntry] = field(default_factory=list)

    @property
    def stand_ins(self) -> list[KernelEntry]:
        return [e for e in self.entries if e.status == STAND_IN]

    @property
    def twins(self) -> list[KernelEntry]:
        return [e for e in self.entries if e.status == TWIN]

    def unacceptable(self) -> list[KernelEntry]:
        """What strict mode refuses: stand-ins, twins and reference paths (a silent pure-torch path on a server)."""
        return [e for e in self.entries if e.status in (STAND_IN, TWIN, REFERENCE_PATH)]

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [asdict(e) for e in self.entries]}

    def format(self) -> str:
        if not self.entries:
            return "no kernel symbol from a registered kernel package is bound by this model's code"
        width = max(len(e.symbol) for e in self.entries)
        lines = []
        for e in self.entries:
            extra = ", ".join(
                x
                for x in (
                    f"v{e.version}" if e.version else "",
                    e.file or "",
                    {True: "covers this GPU", False: "DOES NOT cover this GPU", None: ""}[e.arch_covered],
                    e.note,
                )
                if x
            )
            lines.append(f"{e.symbol.ljust(width)}  {e.status:<26} {e.target}" + (f"  ({extra})" if extra else ""))
        return "\n".join(lines)


def _remote_label(module_name: str) -> str:
    return "remote:" + module_name.rpartition(".")[2] if module_name.startswith("transformers_modules.") else module_name


def _class_globals(cls: type) -> tuple[str, dict[str, Any]] | None:
    module = sys.modules.get(cls.__module__)
    if module is not None:
        return cls.__module__, vars(module)
    for value in vars(cls).values():  # module evicted after the build: reach its globals through a function
        func = getattr(value, "__func__", value)
        if inspect.isfunction(func) and func.__module__ == cls.__module__:
            return cls.__module__, func.__globals__
    return None


def _package_of(obj: Any) -> str | None:
    if is_stand_in(obj):
        return obj.__hybridload_package__
    name = obj.__name__ if isinstance(obj, ModuleType) else getattr(obj, "__module__", None)
    if not isinstance(name, str):
        return None
    package = top_level(name)
    return package if package in kernel_packages() else None


def _is_fallback(obj: Any) -> bool:
    return isinstance(getattr(obj, "__module__", None), str) and obj.__module__.startswith("hybridload.kernels")


def _target_path(obj: Any) -> str:
    if is_stand_in(obj):
        return obj.__hybridload_path__
    if isinstance(obj, ModuleType):
        return obj.__name__
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _arch_covered(package: str) -> bool | None:
    """Scan the package's compiled extensions for ``sm_XX`` targets; None when it cannot be read."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    module = sys.modules.get(package)
    root = Path(getattr(module, "__file__", "") or "").parent if module is not None else None
    if root is None or not root.exists():
        return None
    candidates = list(root.glob("*.so")) + list(root.parent.glob(f"{package}*.so"))
    if not candidates:
        return None  # pure Python / Triton: compiled for this GPU at run time
    major, minor = torch.cuda.get_device_capability()
    arches: set[int] = set()
    for lib in candidates:
        try:
            arches.update(int(m) for m in _ARCH.findall(lib.read_bytes()))
        except OSError:
            return None
    if not arches:
        return None
    return any(a <= major * 10 + minor and a // 10 == major for a in arches)


def _entry(where: str, obj: Any, package: str) -> KernelEntry:
    from ..shim.probe import dist_version

    target = _target_path(obj)
    if is_stand_in(obj):
        decorator = obj.__dict__.get("__hybridload_decorator__")
        note = obj.__hybridload_reason__ + (f"; a function under the stand-in decorator {decorator}" if decorator else "")
        return KernelEntry(where, target, package, STAND_IN, note=note)
    if _is_fallback(obj):
        target = getattr(obj, "__hybridload_fallback_for__", target)  # named by the symbol it replaces
        kernel = inspect.unwrap(obj)
        return KernelEntry(where, target, package, FALLBACK, file=inspect.getsourcefile(kernel) if callable(kernel) else None)
    module = sys.modules.get(package)
    return KernelEntry(
        where,
        target,
        package,
        REAL,
        version=dist_version(package) or getattr(module, "__version__", None),
        file=getattr(module, "__file__", None),
        arch_covered=_arch_covered(package),
    )


def _kernel_imports(namespace: dict[str, Any]) -> dict[str, str]:
    """Local name -> dotted kernel path, read from the module's own import statements (any depth)."""
    filename = namespace.get("__file__")
    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8")) if filename else None
    except (OSError, SyntaxError, ValueError):
        tree = None
    found: dict[str, str] = {}
    if tree is None:
        return found
    packages = kernel_packages()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if top_level(node.module) in packages:
                for alias in node.names:
                    found[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if top_level(alias.name) in packages:
                    found[alias.asname or alias.name.partition(".")[0]] = alias.asname and alias.name or top_level(alias.name)
    return found


def _imported_entry(where: str, obj: Any, target: str) -> KernelEntry:
    entry = _entry(where, obj, top_level(target))
    if entry.status == REAL:  # name it by the path the code imported (re-exports keep their origin module)
        return dataclasses.replace(entry, target=target)
    return entry


def _walk_globals(model: Any) -> Iterable[KernelEntry]:
    seen_modules: set[str] = set()
    classes = {type(m) for m in model.modules()}
    for cls in list(classes):
        classes.update(c for c in cls.__mro__ if c.__module__.startswith("transformers_modules."))
    for cls in sorted(classes, key=lambda c: (c.__module__, c.__qualname__)):
        if not cls.__module__.startswith("transformers_modules.") or cls.__module__ in seen_modules:
            continue
        found = _class_globals(cls)
        if found is None:
            continue
        module_name, namespace = found
        seen_modules.add(module_name)
        imported = _kernel_imports(namespace)
        for name, value in sorted(namespace.items()):
            if name.startswith("__") or value is None:
                continue
            if name in imported:
                yield _imported_entry(f"{_remote_label(module_name)}.{name}", value, imported[name])
                continue
            fallback = getattr(value, "__hybridload_fallback_for__", None)
            package = top_level(fallback) if fallback else _package_of(value)
            if package is not None:
                yield _entry(f"{_remote_label(module_name)}.{name}", value, package)


def _walk_modules(model: Any) -> Iterable[KernelEntry]:
    for path, module in model.named_modules():
        describe = getattr(module, "hybridload_kernel_entry", None)  # hybridload's own modules describe themselves
        if callable(describe):
            yield describe(path or "<root>")
            continue
        cls = type(module)
        twin_of = getattr(cls, "__hybridload_twin_of__", None)
        if twin_of:
            yield KernelEntry(path or "<root>", twin_of, top_level(twin_of), TWIN, note=f"{cls.__module__}.{cls.__qualname__}")
            continue
        package = _package_of(cls)
        if package is not None:
            yield _entry(path or "<root>", cls, package)
        for name, value in vars(module).items():
            if name.startswith("_") or not callable(value) or isinstance(value, type(module)):
                continue
            package = _package_of(value)
            if package is not None:
                yield _entry(f"{path}.{name}" if path else name, value, package)


def kernel_report(model: Any) -> KernelReport:
    """Every kernel symbol the model's code bound from a registered kernel package, real or not."""
    entries = list(_walk_globals(model)) + list(_walk_modules(model))
    return KernelReport(entries)
