"""Who is importing? Stand-ins are for remote/user code only, never for the frameworks' own probes.

torch, transformers, accelerate ... probe optional packages lazily (``torch.utils._triton.has_triton_package``
is cached for the life of the process, ``torch._inductor.runtime.hints`` binds ``triton`` names at import).
If such a probe ran inside a window and saw a stand-in, the lie would outlive the window. So imports
requested by framework modules get the truthful answer even in the window's own thread; the one exception
is transformers' ``check_imports``, which the window exists to satisfy.
"""
from __future__ import annotations

import sys
from typing import Any

FRAMEWORKS = frozenset(
    {"torch", "transformers", "accelerate", "safetensors", "huggingface_hub", "nnsight", "numpy", "tokenizers", "hybridload"}
)
SERVED_FRAMEWORK_MODULES = frozenset({"transformers.dynamic_module_utils"})
_SKIP_PREFIXES = ("importlib", "hybridload.shim", "hybridload.hooks", "_frozen_importlib")


def is_framework(module_name: str | None) -> bool:
    if not module_name:
        return False
    if module_name in SERVED_FRAMEWORK_MODULES:
        return False
    return module_name.partition(".")[0] in FRAMEWORKS


def requester_from_stack(start: Any = None) -> str | None:
    """The ``__name__`` of the first frame outside the import machinery and the shim."""
    frame = start if start is not None else sys._getframe(1)
    depth = 0
    while frame is not None and depth < 64:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            frame, depth = frame.f_back, depth + 1
            continue
        name = frame.f_globals.get("__name__")
        if not (isinstance(name, str) and name.startswith(_SKIP_PREFIXES)):
            return name if isinstance(name, str) else None
        frame, depth = frame.f_back, depth + 1
    return None
