"""Build layers and their one composition (see :mod:`.session`).

``build_session(BuildSpec(purpose=...))`` is the only way hybridload enters the kernel shim, the
compatibility window, the attention rule, the commit/trust routing and the meta device around a build.
Plans, loads, dispatch and every integration call it; nothing else opens those layers for a build.
"""
from __future__ import annotations

from .session import PURPOSES, BuildRecord, BuildSpec, build_session, current_build, layer_entries

__all__ = ["PURPOSES", "BuildRecord", "BuildSpec", "build_session", "current_build", "layer_entries"]
