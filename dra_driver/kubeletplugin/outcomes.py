"""The vocabulary of a DRA call: what was asked, how it ended, and who is told.

Owns ``RequestedClaim`` (a claim as the kubelet names it), ``AbortCallError`` (end the call
with a gRPC status), ``DraMethod``/``FailureReason``/``failure_reason`` (the metrics' labels)
and the ``CallObserver`` protocol the metrics implement. Plain data and classification only:
must not do I/O, take locks or log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import grpc

from dra_driver.errors import (
    AllocationError,
    CheckpointError,
    ClaimConfigError,
    ClaimError,
    DriverError,
)
from dra_driver.prepare.model import PrepareResult


class DraMethod(StrEnum):
    """The two DRA calls, as metrics label them."""

    PREPARE = "prepare"
    UNPREPARE = "unprepare"


class FailureReason(StrEnum):
    """Why a claim failed in a prepare/unprepare call: a small fixed set, for metric labels."""

    INVALID_REQUEST = "invalid_request"
    """The kubelet sent a malformed request (empty uid, namespace or name)."""
    CLAIM = "claim"
    """The claim cannot be prepared as it is: gone, not allocated here, bad UID or config."""
    API = "api"
    """The claim could not be read from the API server."""
    ALLOCATION = "allocation"
    """The node-side guard refused it: the DCU has no room (stale claim, scheduler race)."""
    CHECKPOINT = "checkpoint"
    """The durable state could not be read or written."""
    TIMEOUT = "timeout"
    """The call gave up waiting for the serialization lock before its deadline."""
    INTERNAL = "internal"
    """Anything else: writing files failed, or the driver broke."""


class ClaimReadError(ClaimError):
    """The claim could not be read from the API server (a ``ClaimError`` told apart for metrics)."""


def failure_reason(error: BaseException) -> FailureReason:
    """The metric label of a claim's failure."""
    if isinstance(error, ClaimReadError):
        return FailureReason.API
    if isinstance(error, AllocationError):
        return FailureReason.ALLOCATION
    if isinstance(error, ClaimError | ClaimConfigError):
        return FailureReason.CLAIM
    if isinstance(error, CheckpointError):
        return FailureReason.CHECKPOINT
    return FailureReason.INTERNAL


class CallObserver(Protocol):
    """Told about every prepare/unprepare call that carries claims (the metrics implement it).

    Called on the call's own thread; must be fast and must not raise.
    """

    def call_started(self, method: DraMethod) -> None:
        """A call arrived (before its claims are read or the lock is taken)."""

    def call_finished(
        self, method: DraMethod, *, duration_s: float, failures: Sequence[FailureReason]
    ) -> None:
        """The call ended after ``duration_s``; one reason per claim that failed."""


class NoCallObserver:
    """The default ``CallObserver``: metrics off."""

    def call_started(self, method: DraMethod) -> None:
        """Ignore the call."""

    def call_finished(
        self, method: DraMethod, *, duration_s: float, failures: Sequence[FailureReason]
    ) -> None:
        """Ignore the call."""


class AbortCallError(Exception):
    """Ends the current call with a gRPC status (raised inside, turned into ``abort``).

    ``reason`` is what the metrics count for each claim of the call.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: FailureReason = FailureReason.INTERNAL,
    ) -> None:
        self.code = code
        self.message = message
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class RequestedClaim:
    """A claim as the kubelet names it: plain strings, not yet checked."""

    namespace: str
    name: str
    uid: str


PrepareOutcome = PrepareResult | DriverError
