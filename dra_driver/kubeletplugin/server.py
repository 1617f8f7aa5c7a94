"""A gRPC server on a unix socket, with the socket hygiene the kubelet expects.

- The path is checked against the 108-byte ``sun_path`` limit before anything else, with a
  message that says which path and by how much.
- The socket's directory is created 0700 when missing; a stale socket file is removed
  before listening (a file that is not a socket is never removed: that is someone else's).
- The socket is bound under a hidden temporary name (the kubelet ignores dot files), chmod
  0600 right after binding, and renamed into place only once the server accepts calls: the
  kubelet never sees a socket that is not ready or not private.
- ``stop`` lets in-flight calls finish (up to a grace period) and then removes only the
  socket file this server created (checked by inode), never one another instance put there.
  (gRPC itself unlinks a unix socket by path when it shuts down; it only ever knew the
  temporary name, so it cannot remove a successor's socket.)
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from dra_driver.errors import DriverError
from dra_driver.util.fsutil import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE

logger = logging.getLogger(__name__)

#: Linux ``sun_path`` is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
#: Distinguishes the temporary names of several servers of one process in one directory.
_TEMP_IDS = itertools.count()


class SocketServerError(DriverError):
    """A gRPC socket server cannot start (bad path, bind failure)."""


def check_socket_path(path: Path) -> None:
    """Raise ``SocketServerError`` unless ``path`` is absolute and fits in ``sun_path``."""
    if not path.is_absolute():
        raise SocketServerError(f"socket path {path} must be absolute")
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise SocketServerError(
            f"socket path {path} is {size} bytes, longer than the {MAX_SOCKET_PATH_BYTES} a unix "
            f"socket allows (108 with the NUL); use a shorter directory or driver name"
        )


def remove_stale_socket(path: Path) -> None:
    """Remove a socket file left at ``path``; refuse to touch anything that is not a socket."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketServerError(
            f"{path} exists and is not a socket; refusing to replace it (remove it or choose "
            "another directory)"
        )
    logger.info("removing stale socket %s", path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class UnixSocketServer:
    """One ``grpc.server`` listening on one unix socket. Start once, stop once."""

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        add_services: Callable[[grpc.Server], None],
        max_workers: int = 4,
        interceptors: Sequence[Any] = (),
    ) -> None:
        self.path = path
        self.name = name
        self._add_services = add_services
        self._max_workers = max_workers
        self._interceptors = tuple(interceptors)
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._identity: tuple[int, int] | None = None

    def start(self) -> None:
        """Bind under a temporary name, tighten the mode, serve, then move into place."""
        check_socket_path(self.path)
        temp = self.path.with_name(_temporary_name())
        check_socket_path(temp)
        directory = self.path.parent
        if not directory.is_dir():
            directory.mkdir(parents=True, mode=PRIVATE_DIR_MODE)
            directory.chmod(PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
        remove_stale_socket(self.path)
        remove_stale_socket(temp)
        executor = ThreadPoolExecutor(
            max_workers=self._max_workers, thread_name_prefix=f"grpc-{self.name}"
        )
        server = grpc.server(executor, interceptors=self._interceptors)
        self._add_services(server)
        try:
            bound = server.add_insecure_port(f"unix:{temp}")
        except RuntimeError as exc:
            executor.shutdown(wait=False)
            raise SocketServerError(f"cannot listen on {self.path}: {exc}") from None
        if not bound:
            executor.shutdown(wait=False)
            raise SocketServerError(f"cannot listen on {self.path}")
        try:
            os.chmod(temp, PRIVATE_FILE_MODE)  # bound, not yet serving: nobody connected yet
            server.start()
            os.replace(temp, self.path)
            info = self.path.lstat()
        except OSError as exc:
            server.stop(None).wait()
            executor.shutdown(wait=False)
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise SocketServerError(f"cannot serve on {self.path}: {exc}") from exc
        self._identity = (info.st_dev, info.st_ino)
        self._server, self._executor = server, executor
        logger.debug("%s server listening on %s", self.name, self.path)

    def stop(self, grace_s: float | None) -> None:
        """Stop accepting calls, let in-flight ones finish for ``grace_s``, remove our socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop(grace_s).wait()
        if self._executor is not None:
            # Calls cut off after the grace period cannot be killed; do not wait for them.
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._remove_own_socket()
        logger.debug("%s server on %s stopped", self.name, self.path)

    def _remove_own_socket(self) -> None:
        """Unlink the socket only if it is still the one we bound (same device and inode)."""
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._identity and stat.S_ISSOCK(info.st_mode):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _temporary_name() -> str:
    """A short hidden name, unique per process and server, no longer than ``dra.sock``."""
    return f".{_base36(os.getpid())}{_base36(next(_TEMP_IDS))}"


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            return text
