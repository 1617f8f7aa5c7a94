"""One prepare or unprepare at a time: the serialization lock and the group commit.

Owns ``CallSerializer`` (a ``threading.Lock`` plus an ``flock`` on
``<plugin data dir>/serialize.lock``, so two plugin instances sharing the data dir during a
rolling update never interleave) and ``GroupCommit`` (calls of one kind that queue behind a
running one are served together, by one run). Generic over what is run: must not know about
claims' contents, gRPC or the API server.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from dra_driver.kubeletplugin.calllog import CallLogger
from dra_driver.prepare.model import ClaimUID
from dra_driver.util.fsutil import PRIVATE_FILE_MODE

log = CallLogger(logging.getLogger(__name__))

#: The file both plugin instances of a rolling update lock (the Go helper's name).
SERIALIZE_LOCK_NAME = "serialize.lock"
#: How often a waiting call retries a contended ``flock`` (it cannot block with a timeout).
_FLOCK_POLL_S = 0.01


class CallSerializer:
    """Runs prepare/unprepare calls one at a time, across threads and processes.

    The in-process lock orders threads; the ``flock`` on ``lock_path`` orders this process
    against another plugin instance that shares the data dir. The file is opened per call, so
    a lock file removed while running is simply re-created.

    ``cross_process=False`` skips the ``flock``: for a Plugin that takes the same ``flock``
    itself, because a second ``flock`` on another descriptor of the same file would wait for
    the first forever (flock is per open file, not per process).
    """

    def __init__(self, lock_path: Path, *, cross_process: bool = True) -> None:
        self.lock_path = lock_path
        self.cross_process = cross_process
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, *, timeout_s: float | None) -> Iterator[None]:
        """Hold both locks for the body; ``TimeoutError`` if they are not free in time."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if not self._lock.acquire(timeout=-1 if timeout_s is None else max(timeout_s, 0)):
            raise TimeoutError("another call of this plugin is still running")
        try:
            if not self.cross_process:
                yield
                return
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE_MODE)
            try:
                if os.fstat(fd).st_mode & 0o7777 != PRIVATE_FILE_MODE:
                    os.fchmod(fd, PRIVATE_FILE_MODE)
                self._flock(fd, deadline)
                yield
            finally:
                os.close(fd)  # releases the flock
        finally:
            self._lock.release()

    @staticmethod
    def _flock(fd: int, deadline: float | None) -> None:
        if deadline is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            if time.monotonic() >= deadline:
                raise TimeoutError("another plugin instance sharing the data dir holds the lock")
            time.sleep(_FLOCK_POLL_S)


_Item = TypeVar("_Item")
_Answer = TypeVar("_Answer")


@dataclass(eq=False, slots=True)
class _Waiter(Generic[_Item, _Answer]):
    """One call's items in a ``GroupCommit`` queue, and what became of them."""

    items: Sequence[_Item]
    done: bool = False
    answers: Mapping[ClaimUID, _Answer] | None = None
    error: BaseException | None = None


class GroupCommit(Generic[_Item, _Answer]):
    """Serves concurrent calls of one method with one Plugin call (a group commit).

    The kubelet sends one call per pod, so pods that start or stop together arrive as
    concurrent calls, which must run one at a time. A Plugin call spends most of its time
    waiting for the disk, and it writes the checkpoint twice whether it has one claim or
    twenty. So the call that gets to run takes every call queued behind it along: one Plugin
    call for all their items (each UID once), and every call gets the answers for its own.
    A call on its own runs exactly as before. A call whose deadline passes while it is still
    queued leaves the queue and is never run; one whose deadline passes while another call
    runs its items gives up all the same (its items may still be prepared: the kubelet
    retries, and prepare is idempotent).

    ``run`` must be safe to call with the items of several calls; ``hold`` is the
    serialization lock (``CallSerializer.hold``), taken around each ``run``.
    """

    def __init__(
        self,
        run: Callable[[list[_Item]], Mapping[ClaimUID, _Answer]],
        *,
        key: Callable[[_Item], ClaimUID],
        hold: Callable[[float | None], contextlib.AbstractContextManager[None]],
    ) -> None:
        self._run = run
        self._key = key
        self._hold = hold
        self._changed = threading.Condition()
        self._queue: list[_Waiter[_Item, _Answer]] = []
        self._running = False

    @property
    def queued(self) -> int:
        """Calls waiting for a run (not counting those being run now)."""
        with self._changed:
            return len(self._queue)

    def call(self, items: Sequence[_Item], *, deadline: float | None) -> Mapping[ClaimUID, _Answer]:
        """Run ``items`` (now or with others); the answers of at least ``items``, by key.

        Raises ``TimeoutError`` when the deadline (``time.monotonic()``) passes before they
        ran, and whatever ``run`` raised for the batch they were in.
        """
        waiter: _Waiter[_Item, _Answer] = _Waiter(items)
        with self._changed:
            self._queue.append(waiter)
            while self._running and not waiter.done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    if waiter in self._queue:  # not taken by a leader: never run it
                        self._queue.remove(waiter)
                    raise TimeoutError("another call of this plugin is still running")
                self._changed.wait(remaining)
            if not waiter.done:
                batch, self._queue = self._queue, []
                self._running = True
        if not waiter.done:
            self._lead(batch, waiter, deadline)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.answers is not None
        return waiter.answers

    def _lead(
        self,
        batch: list[_Waiter[_Item, _Answer]],
        leader: _Waiter[_Item, _Answer],
        deadline: float | None,
    ) -> None:
        """Run the batch under the lock; hand out the answers (or the error) to every call."""
        merged = {self._key(item): item for waiter in batch for item in waiter.items}
        if len(batch) > 1:
            log.debug("serving %d calls together: %d claims", len(batch), len(merged))
        answers: Mapping[ClaimUID, _Answer] | None = None
        error: BaseException | None = None
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(
                    self._hold(None if deadline is None else deadline - time.monotonic())
                )
            except TimeoutError:
                # The lock is held elsewhere (another instance) past the leader's deadline:
                # the others keep their place in the queue, and their own deadlines.
                with self._changed:
                    self._queue[:0] = [waiter for waiter in batch if waiter is not leader]
                    self._running = False
                    self._changed.notify_all()
                raise
            try:
                answers = self._run(list(merged.values()))
            except BaseException as exc:
                error = exc
        with self._changed:
            for waiter in batch:
                waiter.answers, waiter.error, waiter.done = answers, error, True
            self._running = False
            self._changed.notify_all()
