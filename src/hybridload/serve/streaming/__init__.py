"""Low-memory loading: stream a safetensors checkpoint into a meta-built model, one converted group at a time.

:func:`stream_load` and :func:`plan_stream` are the entry points (see :mod:`.load`); the other modules are
its parts: shard headers and byte-range reads (:mod:`.checkpoint`, :mod:`.staging`), transformers'
conversion mapping applied to checkpoint keys (:mod:`.conversion`), device and dtype targets, read-ahead,
and the finishing steps ``from_pretrained`` also runs.
"""
from __future__ import annotations

from .load import StreamPlan, plan_stream, stream_load

__all__ = ["StreamPlan", "plan_stream", "stream_load"]
