"""Fault injection for crash-consistency tests: kill the process at a named point.

``reached(name)`` marks a place where a crash is worth testing, between two durable steps of
prepare, unprepare or start-up recovery (``POINTS`` lists them all). It does nothing unless
the environment variable ``DCU_DRA_FAULTPOINT`` named that point when this module was first
imported: ``DCU_DRA_FAULTPOINT=<name>[:<n>]`` kills the process with SIGKILL the n-th time the
point is reached in this process (default: the first), as a power cut or the OOM killer
would, with no chance to clean up. tests/reliability/test_crash_consistency.py sets it on the
real daemon; the chart and the CLI never do.

The variable is read once, at import, so an unarmed ``reached`` costs one comparison. Owns no
other state and does no I/O apart from one log line before the kill.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

logger = logging.getLogger(__name__)

#: The environment variable that arms one fault point (read once, at import).
FAULTPOINT_ENV: Final = "DCU_DRA_FAULTPOINT"

#: Every fault point, with what is on disk when it is reached. Each is called from exactly one
#: place (tests/util/test_faultpoints.py checks), so a name says where the process died.
POINTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "prepare.planned": (
            "the checkpoint records the new claims' plans as PrepareStarted; no file written"
        ),
        "prepare.vdev_written": "a claim's vdev files are written, its CDI spec is not",
        "prepare.spec_written": (
            "a claim's vdev files and CDI spec are written, the checkpoint still says "
            "PrepareStarted"
        ),
        "prepare.completed": (
            "the checkpoint says PrepareCompleted; the kubelet has not had the answer"
        ),
        "remove.spec_removed": (
            "a claim's CDI spec is removed, its vdev files are not (unprepare or roll-back)"
        ),
        "unprepare.files_removed": (
            "a claim's files are removed, the checkpoint still lists it as prepared"
        ),
        "unprepare.completed": (
            "the checkpoint no longer lists the claims; the kubelet has not had the answer"
        ),
        "recover.rolled_back": (
            "start-up removed an interrupted prepare's files; the checkpoint still lists it"
        ),
    }
)


@dataclass(frozen=True, slots=True)
class Armed:
    """The fault point that kills this process, and on which hit."""

    name: str
    hit: int
    """Kill on this hit of ``name`` (1 = the first time it is reached)."""


def parse_spec(value: str) -> Armed:
    """Parse ``<name>[:<n>]`` (a ``DCU_DRA_FAULTPOINT`` value); raises ValueError if malformed."""
    name, separator, count = value.strip().partition(":")
    if name not in POINTS:
        raise ValueError(
            f"{FAULTPOINT_ENV}={value!r}: unknown fault point {name!r}; known: {', '.join(POINTS)}"
        )
    if not separator:
        return Armed(name, 1)
    if not count.isdecimal() or int(count) < 1:
        raise ValueError(
            f"{FAULTPOINT_ENV}={value!r}: the hit count {count!r} is not a whole number >= 1; "
            "write <name> or <name>:<n>"
        )
    return Armed(name, int(count))


def reached(name: str) -> None:
    """Mark fault point ``name``; SIGKILLs the process on its armed hit, else does nothing.

    Thread-safe: concurrent hits are counted one by one.
    """
    if name != _ARMED_NAME:
        return
    _count_hit()


def _count_hit() -> None:
    global _hits
    assert _ARMED is not None  # only called when a name matched _ARMED_NAME
    with _hits_lock:
        _hits += 1
        if _hits != _ARMED.hit:
            return
        logger.warning(
            "fault point %s reached (hit %d): killing the process with SIGKILL (%s is set)",
            _ARMED.name,
            _hits,
            FAULTPOINT_ENV,
        )
        os.kill(os.getpid(), signal.SIGKILL)


def _from_environment() -> Armed | None:
    value = os.environ.get(FAULTPOINT_ENV, "")
    if not value:
        return None
    try:
        return parse_spec(value)
    except ValueError as exc:
        # Only tests set the variable; one line, and the process runs without faults.
        logger.warning("%s; no fault point is armed", exc)
        return None


_ARMED: Final = _from_environment()
#: The armed point's name, or None: the one value ``reached`` compares with.
_ARMED_NAME: Final = None if _ARMED is None else _ARMED.name
_hits = 0
_hits_lock = threading.Lock()
