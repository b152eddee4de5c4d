"""Every twin against the goldens recorded from the real packages: signature, parameters, buffers, repr."""
from __future__ import annotations

import warnings

import pytest
import torch

from hybridload.twins import DEFAULT_TWINS, TWIN_CLASSES
from hybridload.twins.structure import decode, describe, encode
from twin_golden_grid import GRID, build
from twin_goldens_io import init_signature, load

PACKAGES = sorted(GRID)
CASES = [
    pytest.param(package, path, index, id=f"{path.rsplit('.', 1)[1]}[{package}]-{index}")
    for package in PACKAGES
    for path, cases in GRID[package][1].items()
    for index in range(len(cases))
]


@pytest.fixture(scope="module")
def goldens() -> dict:
    return {package: load(package) for package in PACKAGES}


@pytest.mark.parametrize("package,path,index", CASES)
def test_twin_structure_equals_real_structure(goldens: dict, package: str, path: str, index: int) -> None:
    case = goldens[package]["classes"][path]["cases"][index]
    twin = DEFAULT_TWINS[path]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = build(twin, decode(case["kwargs"]), case["default_device"])
    assert describe(module) == case["structure"]


@pytest.mark.parametrize("package", PACKAGES)
def test_twin_signatures_equal_real_signatures(goldens: dict, package: str) -> None:
    for path, entry in goldens[package]["classes"].items():
        assert init_signature(DEFAULT_TWINS[path]) == entry["signature"], path


@pytest.mark.parametrize("package", PACKAGES)
def test_goldens_cover_exactly_the_grid(goldens: dict, package: str) -> None:
    golden = goldens[package]
    assert golden["version"] and golden["distribution"] == GRID[package][0]
    assert set(golden["classes"]) == set(GRID[package][1])
    for path, cases in GRID[package][1].items():
        recorded = [(c["kwargs"], c["default_device"]) for c in golden["classes"][path]["cases"]]
        assert recorded == [(encode(kwargs), device) for kwargs, device in cases], path


def test_every_shipped_twin_is_checked_against_a_golden() -> None:
    checked = {path for package in PACKAGES for path in GRID[package][1]}
    assert {cls.__hybridload_twin_of__ for cls in TWIN_CLASSES} == checked


def test_each_twin_is_registered_under_its_real_path_and_every_alias() -> None:
    for cls in TWIN_CLASSES:
        assert cls.__hybridload_twin_paths__[0] == cls.__hybridload_twin_of__
        for path in cls.__hybridload_twin_paths__:
            assert DEFAULT_TWINS[path] is cls
    # the import spellings remote code uses (package re-exports and pre-0.6 module names) reach the same twin
    for a, b in [
        ("fla.modules.ShortConvolution", "fla.modules.convolution.ShortConvolution"),
        ("fla.modules.FusedRMSNormGated", "fla.modules.fused_norm_gate.FusedRMSNormGated"),
        ("fla.modules.RMSNorm", "fla.modules.layernorm.RMSNorm"),
        ("apex.normalization.FusedRMSNorm", "apex.normalization.fused_layer_norm.FusedRMSNorm"),
        ("mamba_ssm.Mamba2", "mamba_ssm.modules.mamba2.Mamba2"),
    ]:
        assert DEFAULT_TWINS[a] is DEFAULT_TWINS[b]


def test_relevant_base_classes() -> None:
    assert issubclass(DEFAULT_TWINS["fla.modules.ShortConvolution"], torch.nn.Conv1d)
    assert issubclass(DEFAULT_TWINS["flash_attn.ops.fused_dense.FusedDense"], torch.nn.Linear)
    assert issubclass(DEFAULT_TWINS["fla.modules.FusedRMSNormSwishGate"], DEFAULT_TWINS["fla.modules.FusedRMSNormGated"])
    assert all(issubclass(cls, torch.nn.Module) for cls in TWIN_CLASSES)
