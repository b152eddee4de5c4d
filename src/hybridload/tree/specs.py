"""The per-tensor records of a signature (a module of their own so the walker can build them directly)."""
from __future__ import annotations

from typing import NamedTuple


class ParamSpec(NamedTuple):
    shape: tuple[int, ...]
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "bfloat16"


class BufferSpec(NamedTuple):
    shape: tuple[int, ...]
    dtype: str
    persistent: bool  # False for register_buffer(..., persistent=False): not in the state dict
