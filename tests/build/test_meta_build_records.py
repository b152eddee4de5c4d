"""The committed runs of benchmarks/meta_build.py and benchmarks/check_cold.py say what docs/performance.md
claims they say."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _record(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _docs() -> str:
    return (ROOT / "docs" / "performance.md").read_text()


def test_meta_build_record_meets_the_targets_with_identical_trees() -> None:
    record = _record("meta-build-cpu.json")
    assert record["versions"]["torch"].startswith("2.13") and record["machine"]["cpus"] == 2
    models = record["models"]
    for name, results in models.items():
        digests = {results[method]["digest"] for method in ("plain", "from_config", "meta_device_scope")}
        assert len(digests) == 1, name  # every method built the same tree
    assert models["deepseek_v3_remote"]["from_config"]["modules"] == 75457
    assert models["deepseek_v3_remote"]["from_config"]["wall_s"] <= 3.0
    for hybrid in ("kimi_linear_remote", "nemotron_h_remote"):
        assert models[hybrid]["from_config"]["wall_s"] <= 1.0
    for native in ("deepseek_v3", "qwen3_moe", "llama", "nemotron_h"):
        assert models[native]["from_config"]["cpu_s"] <= 1.05 * models[native]["plain"]["cpu_s"], native
    for shape in ("deepseek_v3", "qwen3_moe"):
        assert models[shape]["from_config"]["sign_over_build_cpu"] <= 0.10, shape
    for routes in record["routes"].values():
        for route in ("torch.device", "set_default_device", "nnsight MetaDevice", "init_empty_weights"):
            assert routes[f"{route}|True"]["digest"] == routes[f"{route}|False"]["digest"]


def test_the_documented_meta_build_numbers_are_the_recorded_ones() -> None:
    text = _docs()
    for name, results in _record("meta-build-cpu.json")["models"].items():
        plain, fast = results["plain"], results["from_config"]
        row = (f"{plain['wall_s']:.2f} / {plain['cpu_s']:.2f}" if plain["wall_s"] >= 0.5
               else f"{plain['wall_s']:.3f} / {plain['cpu_s']:.3f}")
        assert row in text, (name, row)
        ratios = f"{fast['wall_s'] / plain['wall_s']:.2f} / {fast['cpu_s'] / plain['cpu_s']:.2f}"
        assert ratios in text, (name, ratios)


def test_the_documented_cold_check_ratios_are_the_recorded_ones() -> None:
    text = _docs()
    for name, result in _record("check-cold-cpu.json")["results"].items():
        assert result["wall_ratio"] <= 1.1 and result["cpu_ratio"] <= 1.1, name
        assert f"{result['wall_ratio']:.2f} / {result['cpu_ratio']:.2f}" in text, name
