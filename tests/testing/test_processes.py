"""dra_driver/testing/processes.py: children die with their parent, and run what they were given."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from dra_driver.testing.processes import dies_with_parent
from dra_driver.testing.waiting import wait_for


def test_the_wrapped_command_runs_with_its_arguments_and_exit_code() -> None:
    done = subprocess.run(
        dies_with_parent(["sh", "-c", 'echo "$0 $1"; exit 3', "a b", "c"]),
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (3, "a b c\n")


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_gets_sigterm_when_its_parent_is_killed() -> None:
    # A parent that starts the wrapped child in its own session, prints its pid, then waits.
    parent_code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(sys.argv[1:], start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code, *dies_with_parent(["sleep", "60"])],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    wait_for(lambda: _command(child_pid) == "sleep", timeout_s=10, description="the exec")
    parent.kill()
    parent.wait()
    parent.stdout.close()

    def child_gone() -> bool:
        try:
            os.kill(child_pid, 0)  # the child is reparented, so nobody we know reaps it
        except ProcessLookupError:
            return True
        return _state(child_pid) == "Z"

    wait_for(child_gone, timeout_s=10, description="the child to get SIGTERM and exit")


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_the_signal_is_the_one_asked_for() -> None:
    command = dies_with_parent(["true"], sig=signal.SIGKILL)
    if sys.platform == "linux":
        assert command[:3] == [sys.executable, "-S", "-c"]
        assert command[4:] == [str(int(signal.SIGKILL)), "true"]
    else:
        assert command == ["true"]
