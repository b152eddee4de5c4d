"""Fake ``causal_conv1d_cuda`` extension: the entry points mamba_ssm's own ops call (pure-torch references)."""
from hybridload.reference.causal_conv1d import causal_conv1d_cuda_update as causal_conv1d_update
from hybridload.reference.causal_conv1d import causal_conv1d_fwd

__all__ = ["causal_conv1d_fwd", "causal_conv1d_update"]
