"""The one way hybridload touches foreign objects: reversible attribute patches, meta-path entries,
post-import hooks and thread-scoped windows over them.

Everything above this package (the kernel shim, the compatibility layer, the build layers, the integrations)
changes transformers, nnsight, torch, builtins or importlib only through these primitives, so every change
has one undo rule: put the original back, but only if what is there is still ours.
"""
from __future__ import annotations

from .meta_path import MetaPathEntry
from .patch import MARKER, Patch, is_patched
from .post_import import PostImportHook
from .scope import ThreadScope
from .sys_modules import modules_snapshot

__all__ = ["MARKER", "MetaPathEntry", "Patch", "PostImportHook", "ThreadScope", "is_patched", "modules_snapshot"]
