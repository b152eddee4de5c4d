"""``MetaPathEntry``: a finder on ``sys.meta_path`` while held, removed when the last holder lets go."""
from __future__ import annotations

import sys
import threading
from typing import Any


class MetaPathEntry:
    """Reference-counted presence of ``finder`` at the front of ``sys.meta_path``."""

    def __init__(self, finder: Any) -> None:
        self.finder = finder
        self._lock = threading.Lock()
        self._count = 0

    @property
    def held(self) -> bool:
        return self._count > 0

    def acquire(self) -> None:
        with self._lock:
            if self._count == 0 and self.finder not in sys.meta_path:
                sys.meta_path.insert(0, self.finder)
            self._count += 1

    def release(self) -> None:
        with self._lock:
            self._count -= 1
            if self._count == 0:
                try:
                    sys.meta_path.remove(self.finder)
                except ValueError:  # someone else removed it already
                    pass
