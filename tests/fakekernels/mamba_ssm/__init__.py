"""Fake ``mamba_ssm`` 2.2.4 for tests: the real package's module paths, backed by hybridload's pure-torch references.

Not the real package: ``mamba_ssm.modules`` / ``mamba_ssm.models`` (Mamba, Mamba2, MambaLMHeadModel) are not
provided. See tests/fakekernels/README.md.
"""
__version__ = "2.2.4"

from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn

__all__ = ["selective_scan_fn", "mamba_inner_fn"]
