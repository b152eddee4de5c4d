"""Fake ``causal_conv1d`` 1.5.0 for tests: the real package's module paths, backed by hybridload's references."""
__version__ = "1.5.0"

from causal_conv1d.causal_conv1d_interface import causal_conv1d_fn, causal_conv1d_update

__all__ = ["causal_conv1d_fn", "causal_conv1d_update"]
