"""Record golden structure files from the *real* kernel packages (a script, not a test).

Run it in an environment where the package's Python sources import; compiled CUDA extensions the sources
import at module level are replaced by empty modules (constructors never call them), so it runs on a CPU:

    PYTHONPATH=<site with triton + fla wheels> python tests/twins/record_twin_goldens.py fla
    PYTHONPATH=<site with triton>:<mamba_ssm-2.3.2.post1 sdist> python tests/twins/record_twin_goldens.py mamba_ssm
    PYTHONPATH=<site with triton>:<flash_attn-2.8.3 sdist> python tests/twins/record_twin_goldens.py flash_attn
    PYTHONPATH=<dir holding apex/normalization from NVIDIA/apex@COMMIT> python tests/twins/record_twin_goldens.py apex --version COMMIT

The fla goldens are re-recorded on the H100 by ``gpu_twins_check.py`` and must come out identical.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ.setdefault("HYBRIDLOAD_DISABLE", "1")  # record the packages as they are, no integration patches
sys.path.insert(0, str(Path(__file__).resolve().parent))

from twin_golden_grid import GRID, build  # noqa: E402
from twin_goldens_io import GOLDEN_DIR, record_package, write  # noqa: E402

#: compiled extensions each package's sources import at module level (built only with CUDA)
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "fla": (),
    "mamba_ssm": ("selective_scan_cuda",),
    "flash_attn": ("flash_attn_2_cuda", "fused_dense_lib", "dropout_layer_norm", "rotary_emb"),
    "apex": ("fused_layer_norm_cuda",),
}


#: imported before the package: mamba_ssm imports transformers.generation, which probes for mamba_ssm while
#: mamba_ssm is half-initialised unless transformers' generation utilities are already loaded
PREIMPORTS: dict[str, tuple[str, ...]] = {"mamba_ssm": ("transformers.generation.utils",)}


class _ExtensionStubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves empty modules for the named compiled extensions; any attribute lookup on them fails."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = set(names)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(fullname, self) if fullname in self.names else None

    def create_module(self, spec: Any) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        def __getattr__(name: str) -> Any:
            raise AttributeError(f"{module.__name__}.{name}: {module.__name__} is a recording stub (no CUDA build)")

        module.__getattr__ = __getattr__  # type: ignore[method-assign]


def package_version(package: str, distribution: str, override: str | None) -> str:
    if override:
        return override
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return str(importlib.import_module(package).__version__)  # an unpacked sdist: no dist-info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", choices=sorted(GRID))
    parser.add_argument("--version", help="version label when the source has no metadata (apex: the commit)")
    parser.add_argument("--out", type=Path, help="default: tests/data/goldens/<package>.json")
    args = parser.parse_args()

    sys.meta_path.append(_ExtensionStubs(EXTENSIONS[args.package]))
    for name in PREIMPORTS.get(args.package, ()):
        importlib.import_module(name)
    distribution, classes = GRID[args.package]
    version = package_version(args.package, distribution, args.version)
    stubs = ", ".join(EXTENSIONS[args.package]) or "none"
    how = f"constructed the real classes on CPU from {distribution} {version}; compiled extensions stubbed: {stubs}"
    golden = record_package(args.package, classes, build, distribution=distribution, version=version, how=how)
    out = args.out or GOLDEN_DIR / f"{args.package}.json"
    write(golden, out)
    print(f"wrote {out} ({sum(len(c['cases']) for c in golden['classes'].values())} cases)")


if __name__ == "__main__":
    main()
