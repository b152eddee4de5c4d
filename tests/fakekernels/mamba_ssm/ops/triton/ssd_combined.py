"""Fake ``mamba_ssm.ops.triton.ssd_combined``: the SSD chunked scans (pure-torch references)."""
from hybridload.reference.mamba_ssm import mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined

__all__ = ["mamba_chunk_scan_combined", "mamba_split_conv1d_scan_combined"]
