"""Fast meta builds: no weight initialisation of meta tensors, and the garbage collector paused.

The build session's ``fast_init`` layer (meta and stream builds) enters :func:`fast_build`; every entry point
gets it that way. :func:`meta_device_scope` is the same for code that builds a tree by hand, in place of a
plain ``with torch.device("meta")``.

Tensor creation stays ``torch.device("meta")``: torch 2.13 has no C-level default device,
``torch.set_default_device`` installs the same Python ``DeviceContext`` mode, nnsight's ``MetaDevice`` enters
that mode plus a second one, and accelerate's ``init_empty_weights`` creates every parameter on CPU and moves
it (``benchmarks/meta_build.py --routes`` times all four); it is also what transformers' own
``get_torch_context_manager_or_global_device`` recognises.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from .attention import building_on_meta


@contextlib.contextmanager
def fast_build() -> Iterator[None]:
    """Skip meta-tensor initialisation (:mod:`.fast_init`) on whatever device the caller chose; pause the
    collector (:mod:`.gc_pause`) when building on meta. A real-device build is left exactly as it is."""
    from .fast_init import skip_weight_init
    from .gc_pause import collector_paused

    with contextlib.ExitStack() as stack:
        stack.enter_context(skip_weight_init())
        if building_on_meta():
            stack.enter_context(collector_paused())
        yield


@contextlib.contextmanager
def meta_device_scope() -> Iterator[None]:
    """Every tensor created meanwhile on this thread is on meta; initialising meta tensors costs nothing."""
    import torch

    with torch.device("meta"), fast_build():
        yield
