"""Fake ``causal_conv1d.causal_conv1d_interface`` (pure-torch references of the CUDA kernels)."""
from hybridload.reference.causal_conv1d import causal_conv1d_fn, causal_conv1d_update

__all__ = ["causal_conv1d_fn", "causal_conv1d_update"]
