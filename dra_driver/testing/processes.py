"""Child processes that die with their parent, started without Python code between fork and exec.

Tests and the demo start long-lived children (the control plane, the node daemon) in their own
sessions, so a Ctrl-C reaches only the caller, which stops them in order. If the caller is
killed instead, nothing would stop them: on Linux they ask for ``PR_SET_PDEATHSIG``.

Setting it in a ``preexec_fn`` would be the obvious way, but a ``preexec_fn`` makes
``subprocess`` fork the whole interpreter and run Python in the child, and with gRPC channels
open in the parent grpcio (1.81 and later) then aborts the child now and then before exec
(EBADF in its epoll fork handler, grpc/grpc#43055: 3 in 150 starts here). So the child is a
tiny launcher instead: a fresh ``python -S`` that sets the signal and execs the real command
(the parent-death signal survives exec). It costs one interpreter start, ~15 ms.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: Sets PR_SET_PDEATHSIG (1) to the signal in argv[1], then execs argv[2:]. Best effort: where
#: prctl is missing, the command still runs and ``stop()`` remains the way to end it.
_LAUNCHER = (
    "import ctypes, os, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[1]))\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def dies_with_parent(command: Sequence[str], *, sig: signal.Signals = signal.SIGTERM) -> list[str]:
    """``command``, wrapped so the process gets ``sig`` when its parent dies (Linux only).

    Elsewhere the command is returned as it is.
    """
    if sys.platform != "linux":
        return list(command)
    return [sys.executable, "-S", "-c", _LAUNCHER, str(int(sig)), *command]


def terminate(process: subprocess.Popen[bytes] | None, *, timeout_s: float = 20.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout_s``; the exit code (None if never started)."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def log_tail(log_file: Path, lines: int) -> str:
    """The last ``lines`` lines of a child's log file; empty when there is none yet."""
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
