"""Durable file writes: temp file in the same directory, fsync, rename, fsync the directory.

A reader (the container runtime, the kubelet, a restarted plugin) sees either the old file or
the new one, never a torn write, and after a crash the rename is on disk.

``write_atomically`` does it for one file. For several, the steps can be taken apart:
``stage_file`` each (temp file written), ``sync_staged`` them all (or ``close_staged`` them,
for files that a durable record can rebuild), then ``commit_staged`` each, in the order
readers should see them.
Temp files are named ``.<name>.<random>.tmp`` (``temp_target``), so a crash between the steps
leaves only names that readers skip and that a restarted writer can recognise and remove.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import secrets
from collections.abc import Sequence
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


#: Temp files of ``stage_file``/``write_atomically``: ``.<file name>.<mkstemp suffix>.tmp``.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")


#: Names this process's temp files (with a counter); random, so two processes rarely meet.
_TEMP_TOKEN = secrets.token_hex(4)
_temp_ids = itertools.count()
#: A new file, ours alone: never an existing one, never through a symlink.
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Names tried before giving up (only ever more than one if another process shares the dir).
_TEMP_ATTEMPTS = 100


class StagedFile:
    """New content for ``path``, written to a temp file beside it; not yet durable or visible.

    ``sync_staged`` makes it durable (``close_staged`` only closes it, for a file a durable
    record can rebuild), ``commit_staged`` renames it into place and ``discard_staged``
    deletes it. Not thread-safe: one owner at a time.
    """

    __slots__ = ("_fd", "path", "temp")

    def __init__(self, path: Path, temp: Path, fd: int) -> None:
        self.path = path
        self.temp = temp
        self._fd: int | None = fd

    def sync(self) -> None:
        """Flush the temp file to disk (fsync, once) and close it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the temp file without syncing it (before discarding it, or ``close_staged``)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def stage_file(path: Path, data: bytes, *, mode: int = PUBLIC_FILE_MODE) -> StagedFile:
    """Write ``data`` with file mode ``mode`` to a new temp file beside ``path``.

    The temp file's name starts with a dot and does not end in ``.json``/``.yaml``, so CDI
    runtimes scanning the directory never pick up a half-written spec. Raises ``OSError``
    (and leaves nothing behind).
    """
    fd, temp = _create_temp(path)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return StagedFile(path, Path(temp), fd)


def _create_temp(path: Path) -> tuple[int, str]:
    """Create ``.<name>.<token><n>.tmp`` beside ``path`` (exclusively, 0600); its fd and path.

    Named from a per-process token and a counter rather than by ``tempfile.mkstemp``, whose
    random draws cost more than the rest of staging a small file; ``O_EXCL`` still makes
    every name ours alone, and a taken one (another process) just moves on to the next.
    """
    directory = os.fspath(path.parent)
    for _ in range(_TEMP_ATTEMPTS):
        temp = os.path.join(directory, f".{path.name}.{_TEMP_TOKEN}{next(_temp_ids)}.tmp")
        try:
            return os.open(temp, _TEMP_FLAGS, 0o600), temp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temp file name", temp)


def sync_staged(files: Sequence[StagedFile]) -> None:
    """Flush every staged file to disk and close them; raises the first ``OSError``.

    All of them are flushed even when one fails. It saves no disk wait: on ext4 with delayed
    allocation each file's blocks are allocated when its own fsync writes it, so each fsync is
    a journal commit and a cache flush of its own (3 files of 1 KiB: 3 flushes and 10 writes,
    2.2 times as long as one). What staging buys is order: none of the files is visible under
    its name before all of them are durable.
    """
    error: OSError | None = None
    for staged in files:
        try:
            staged.sync()
        except OSError as exc:
            error = error or exc
    if error is not None:
        raise error


def close_staged(files: Sequence[StagedFile]) -> None:
    """Close staged files without flushing them, to be committed next (no ``OSError``).

    For files a durable record can rebuild (``prepare.plugin``'s vdev files and CDI specs):
    the rename still shows readers only whole files, and the page cache keeps them through a
    crash of the process; only a power cut can tear them, and their owner repairs that.
    """
    for staged in files:
        staged.close()


def commit_staged(staged: StagedFile) -> None:
    """Rename a synced or closed staged file into place (atomically replacing any old file)."""
    os.replace(staged.temp, staged.path)


def discard_staged(files: Sequence[StagedFile]) -> None:
    """Close and delete staged files that were not committed (a committed one is left alone)."""
    for staged in files:
        staged.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged.temp)


def temp_target(name: str) -> str | None:
    """The name of the file that a temp file called ``name`` was staged for; None if not one."""
    match = _TEMP_NAME.fullmatch(name)
    return None if match is None else match["name"]


def write_atomically(
    path: Path, data: bytes, *, mode: int = PUBLIC_FILE_MODE, sync_directory: bool = True
) -> None:
    """Replace ``path`` with ``data`` atomically and durably, with file mode ``mode``.

    The data is fsync'd before the rename, so a name that reaches the disk never points to a
    torn file; readers see the old file or the new one (see ``stage_file`` for the temp name).

    ``sync_directory=False`` skips the directory fsync that makes the rename itself survive a
    power cut (a journal commit: as long as the rest of the write). Only for callers that
    repair a lost rename on their own (``state`` rewrites files from its checkpoint).
    """
    staged = stage_file(path, data, mode=mode)
    try:
        staged.sync()
        commit_staged(staged)
    except BaseException:
        discard_staged([staged])
        raise
    if sync_directory:
        fsync_directory(path.parent)


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
