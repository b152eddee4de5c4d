"""Fake ``mamba_ssm.ops.triton.selective_state_update``: the Mamba2 decode step (pure-torch reference)."""
from hybridload.reference.mamba_ssm import selective_state_update

__all__ = ["selective_state_update"]
