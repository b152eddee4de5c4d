"""The NVFP4 example ships its own copy of the bundled example's code (a checkpoint repository carries its
modeling files); make_example.py copies them, and the copies must not drift from the source."""
from __future__ import annotations

import importlib.util

import hybridload.examples


def test_the_nvfp4_example_code_is_the_bundled_example_code():
    folder = hybridload.examples.path("hybrid_tiny_nvfp4")
    spec = importlib.util.spec_from_file_location("nvfp4_make_example", folder / "make_example.py")
    make_example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_example)
    assert "modeling_nemotron_h.py" in make_example.COPIED
    for name in make_example.COPIED:
        assert (folder / name).read_bytes() == (make_example.SOURCE / name).read_bytes(), name
