"""Durable file writes: temp file in the same directory, fsync, rename, fsync the directory.

A reader (the container runtime, the kubelet, a restarted plugin) sees either the old file or
the new one, never a torn write, and after a crash the rename is on disk.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

#: Mode of files that other processes must read (CDI specs, vdev configs): world-readable,
#: owner-writable, never world-writable (HAMi's 0777 files let any tenant rewrite a slice).
PUBLIC_FILE_MODE = 0o644
#: Mode of private state (checkpoints): the plugin's own.
PRIVATE_FILE_MODE = 0o600
#: Mode of directories that hold public files.
PUBLIC_DIR_MODE = 0o755
#: Mode of private directories (plugin data dir, sockets).
PRIVATE_DIR_MODE = 0o700


def write_atomically(path: Path, data: bytes, *, mode: int = PUBLIC_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically and durably, with file mode ``mode``.

    The temp file's name starts with a dot and does not end in ``.json``/``.yaml``, so CDI
    runtimes scanning the directory never pick up a half-written spec.
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fchmod(tmp.fileno(), mode)
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry change (create, rename, unlink) to disk."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_directory(path: Path, *, mode: int) -> None:
    """Create ``path`` (and parents) if missing and make sure it has exactly ``mode``."""
    path.mkdir(parents=True, exist_ok=True)
    if (path.stat().st_mode & 0o7777) != mode:
        path.chmod(mode)
