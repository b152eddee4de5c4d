"""The two halves of an NDIF remote run, with nnsight's own code and nothing of NDIF's infrastructure.

Client half: :class:`CaptureBackend` does what ``RemoteBackend`` does before it touches the network (the
model key, the request environment from ``_remoteable_get_env``, the payload from nnsight's
``RequestModel.serialize``) and keeps the result instead of posting it.

Server half: :func:`run_request` is NDIF's own request execution where the ``ndif`` package is installed, and
otherwise does what NDIF's model actor does with a request: ``_remoteable_set_env(request.env)``, ``RequestModel.deserialize`` against the
model's persistent objects, ``tracer.execute`` between nnsight's ``inc()``/``dec()``, and the saved values
picked from the tracer frame by the ids in ``_saves()``; nnsight's global block caches and ``linecache`` are
restored afterwards, as the actor does.
"""
from __future__ import annotations

import copy
import io
import linecache
from typing import Any


class CaptureBackend:
    """An nnsight backend that serializes the trace like ``RemoteBackend`` and keeps the request."""

    def __init__(self, model: Any, compress: bool = False) -> None:
        self.model = model
        self.compress = compress
        self.blob: bytes | None = None
        self.env: dict | None = None
        self.model_key: str | None = None

    def __call__(self, tracer: Any) -> None:
        from nnsight.ndif import pull_env
        from nnsight.schema.request import RequestModel

        pull_env()
        self.model_key = self.model.to_model_key()
        self.env = self.model._remoteable_get_env()
        self.blob = RequestModel.serialize(tracer, self.compress)


def run_request(model: Any, env: dict, blob: bytes, compress: bool = False) -> dict[str, Any]:
    """Execute a serialized request against ``model`` the way NDIF's model actor does; returns the saves.

    Where the ``ndif`` package is installed (Python >= 3.12) this is NDIF's own request execution
    (``ndif.services.ray.deployments.modeling.nns``); elsewhere the copy below, which follows it step by step.
    """
    try:
        from ndif.services.ray.deployments.modeling import nns
    except ImportError:
        return _run_request_here(model, env, blob, compress)
    from nnsight.schema.request import RequestModel

    with nns.block_scope():
        model._remoteable_set_env(env)
        tracer, _ = nns.prepare_traced_block(model, blob, compress, deserialize=RequestModel.deserialize)
        return nns.execute_traced_block(tracer, next(model._module.parameters()).dtype)


def _run_request_here(model: Any, env: dict, blob: bytes, compress: bool) -> dict[str, Any]:
    from nnsight.schema.request import RequestModel
    from nnsight.tracing import globals as nnsight_globals
    from nnsight.tracing.tracer import _saves, dec, inc

    saved_lines = dict(linecache.cache)
    saved_sources = dict(nnsight_globals.SOURCES)
    saved_blocks = dict(nnsight_globals.BLOCKS)
    try:
        model._remoteable_set_env(env)
        tracer = RequestModel.deserialize(blob, model._remoteable_persistent_objects(), compress=compress)
        inc()
        try:
            tracer.execute(tracer.info.code)
            saves = _saves()
            return {name: value for name, value in tracer.info.frame.f_locals.items() if id(value) in saves}
        finally:
            dec()
    finally:
        linecache.cache.clear()
        linecache.cache.update(saved_lines)
        nnsight_globals.SOURCES.clear()
        nnsight_globals.SOURCES.update(saved_sources)
        nnsight_globals.BLOCKS.clear()
        nnsight_globals.BLOCKS.update(saved_blocks)


def result_bytes(saved: dict[str, Any], compress: bool) -> bytes:
    """The result blob the server sends back (``torch.save`` of the saves, zstd when the request is compressed)."""
    import torch

    buffer = io.BytesIO()
    torch.save({name: _cpu(value) for name, value in saved.items()}, buffer)
    data = buffer.getvalue()
    if compress:
        import zstandard

        data = zstandard.ZstdCompressor(level=6).compress(data)
    return data


def _cpu(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return copy.deepcopy(value)
