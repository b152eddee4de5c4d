"""Fake ``mamba_ssm.ops.selective_scan_interface``: the Mamba-1 scan and fused block (pure-torch references)."""
from hybridload.reference.mamba_ssm import mamba_inner_fn, selective_scan_fn

__all__ = ["selective_scan_fn", "mamba_inner_fn"]
