"""``ThreadScope``: a window that threads enter and leave independently, over process-wide resources.

The resources (patches, meta-path entries) exist while at least one thread is inside; each thread asks
:meth:`ThreadScope.active` and only threads inside see the window's behaviour. Nesting within a thread is
counted. This is the shared machinery of the compatibility layer and the build layers; the kernel shim adds
serialisation across threads on top (its stand-ins live in the process-global ``sys.modules``).
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence


class ThreadScope:
    """Per-thread depth over resources acquired by the first thread in and released by the last one out."""

    def __init__(self, name: str, resources: Callable[[], Sequence[Any]]) -> None:
        self.name = name
        self._resources_factory = resources
        self._resources: list[Any] = []
        self._lock = threading.Lock()
        self._threads = 0  # entries across threads (nested entries count)
        self._local = threading.local()
        self.entries = 0  # process-wide count of enters (tests: a build enters each scope once)

    def active(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def depth(self) -> int:
        return getattr(self._local, "depth", 0)

    def enter(self) -> None:
        with self._lock:
            if self._threads == 0:
                acquired: list[Any] = []
                try:
                    for resource in self._resources_factory():
                        resource.acquire()
                        acquired.append(resource)
                except BaseException:
                    for resource in reversed(acquired):
                        resource.release()
                    raise
                self._resources = acquired
            self._threads += 1
            self.entries += 1
        self._local.depth = self.depth() + 1

    def exit(self) -> None:
        self._local.depth = self.depth() - 1
        with self._lock:
            self._threads -= 1
            if self._threads == 0:
                resources, self._resources = self._resources, []
                for resource in reversed(resources):
                    resource.release()

    def __enter__(self) -> "ThreadScope":
        self.enter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.exit()
