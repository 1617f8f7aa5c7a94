"""CallSerializer and GroupCommit on their own: the flock, deadlines and batching of calls.

No server and no Plugin: the lock is a file in a temp dir, the run a recording fake. The
servers sharing a data dir are tested through gRPC in test_servicer.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dra_driver.kubeletplugin.serialize import CallSerializer, GroupCommit
from dra_driver.prepare.model import ClaimUID

TIMEOUT_S = 10


def test_serializer_times_out_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "serialize.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        serializer = CallSerializer(lock)
        started = time.monotonic()
        with (
            pytest.raises(TimeoutError, match=r"^another plugin instance sharing the data dir"),
            serializer.hold(timeout_s=0.2),
        ):
            pass
        assert 0.2 <= time.monotonic() - started < 2
        # In-process only: the other holder does not matter.
        with CallSerializer(lock, cross_process=False).hold(timeout_s=0.2):
            pass
    finally:
        os.close(fd)
    with serializer.hold(timeout_s=None):
        pass


# --- group commit ---------------------------------------------------------------------------


class BlockingRun:
    """A ``GroupCommit`` run that records its batches; the first blocks until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.raises: BaseException | None = None

    def __call__(self, items: list[str]) -> dict[ClaimUID, str]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.started.set()
            assert self.release.wait(TIMEOUT_S)
        if self.raises is not None:
            raise self.raises
        return {ClaimUID(item): f"done {item}" for item in items}


def no_lock(timeout_s: float | None) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def wait_until_queued(commit: GroupCommit[str, str], count: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while commit.queued < count:
        assert time.monotonic() < deadline, f"{commit.queued} calls queued, not {count}"
        time.sleep(0.005)


def test_calls_queued_behind_a_running_one_are_served_by_one_run() -> None:
    """Pods starting together: one Plugin call for all that waited, each UID once."""
    run = BlockingRun()
    commit: GroupCommit[str, str] = GroupCommit(run, key=ClaimUID, hold=no_lock)
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(commit.call, ["a"], deadline=None)
        assert run.started.wait(TIMEOUT_S)
        waiting = [
            pool.submit(commit.call, items, deadline=None) for items in (["b"], ["c", "b"], ["d"])
        ]
        wait_until_queued(commit, 3)
        run.release.set()
        answers = [call.result(TIMEOUT_S) for call in (first, *waiting)]
    assert run.batches[0] == ["a"]
    assert sorted(run.batches[1]) == ["b", "c", "d"]
    assert len(run.batches) == 2
    for items, answer in zip((["a"], ["b"], ["c", "b"], ["d"]), answers, strict=True):
        assert {item: answer[ClaimUID(item)] for item in items} == {i: f"done {i}" for i in items}
    assert commit.queued == 0


def test_a_queued_call_past_its_deadline_is_never_run() -> None:
    run = BlockingRun()
    commit: GroupCommit[str, str] = GroupCommit(run, key=ClaimUID, hold=no_lock)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(commit.call, ["a"], deadline=None)
        assert run.started.wait(TIMEOUT_S)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"^another call of this plugin is still running$"):
            commit.call(["late"], deadline=time.monotonic() + 0.2)
        assert 0.2 <= time.monotonic() - started < 5
        run.release.set()
        assert first.result(TIMEOUT_S) == {"a": "done a"}
    assert commit.call(["b"], deadline=None) == {"b": "done b"}
    assert run.batches == [["a"], ["b"]]


def test_a_run_that_raises_fails_every_call_of_its_batch_only() -> None:
    run = BlockingRun()
    commit: GroupCommit[str, str] = GroupCommit(run, key=ClaimUID, hold=no_lock)
    run.raises = RuntimeError("disk on fire")
    with ThreadPoolExecutor(max_workers=3) as pool:
        calls = [pool.submit(commit.call, ["a"], deadline=None)]
        assert run.started.wait(TIMEOUT_S)
        calls += [pool.submit(commit.call, [item], deadline=None) for item in ("b", "c")]
        wait_until_queued(commit, 2)
        run.release.set()
        for call in calls:
            with pytest.raises(RuntimeError, match=r"^disk on fire$"):
                call.result(TIMEOUT_S)
    run.raises = None
    assert commit.call(["d"], deadline=None) == {"d": "done d"}


def test_calls_keep_their_place_when_a_leader_times_out_on_another_instances_lock(
    tmp_path: Path,
) -> None:
    """Another plugin instance holds the flock: a call that gives up at its deadline fails
    alone, whether it led the batch or was taken along; the others run once the flock is free.
    """
    lock = tmp_path / "serialize.lock"
    serializer = CallSerializer(lock)
    holds: list[float | None] = []

    def hold(timeout_s: float | None) -> contextlib.AbstractContextManager[None]:
        holds.append(timeout_s)
        # The first batch runs before the other instance takes the flock.
        return contextlib.nullcontext() if len(holds) == 1 else serializer.hold(timeout_s=timeout_s)

    run = BlockingRun()
    commit: GroupCommit[str, str] = GroupCommit(run, key=ClaimUID, hold=hold)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with ThreadPoolExecutor(max_workers=3) as pool:
            first = pool.submit(commit.call, ["a"], deadline=None)
            assert run.started.wait(TIMEOUT_S)
            hasty = pool.submit(commit.call, ["hasty"], deadline=time.monotonic() + 0.5)
            patient = pool.submit(commit.call, ["patient"], deadline=None)
            wait_until_queued(commit, 2)
            run.release.set()
            assert first.result(TIMEOUT_S) == {"a": "done a"}
            with pytest.raises(TimeoutError):
                hasty.result(TIMEOUT_S)
            assert not patient.done()
            fcntl.flock(fd, fcntl.LOCK_UN)
            assert patient.result(TIMEOUT_S)[ClaimUID("patient")] == "done patient"
    finally:
        os.close(fd)
