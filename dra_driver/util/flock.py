"""A process-wide and cross-process lock on ``<plugin data dir>/serialize.lock``.

Prepare, unprepare and start-up recovery must never interleave, not even between two plugin
instances during a rolling update (both share the data dir, and the kubelet may call either).
A ``threading.Lock`` orders the threads of one process; ``fcntl.flock`` orders processes.
The kernel drops a flock when its holder dies, so a SIGKILLed plugin never leaves it held.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "serialize.lock"


class SerializeLock:
    """Exclusive access to one plugin data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._thread_lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the duration of the ``with`` block."""
        with self._thread_lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock
