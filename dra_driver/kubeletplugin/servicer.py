"""The DRA services the kubelet calls (v1 and v1beta1), sharing one implementation.

What the Go helper (k8s.io/dynamic-resource-allocation/kubeletplugin) does around the driver,
done here so the core never sees gRPC or the API server:

- malformed requests (a claim without uid, namespace or name) abort with INVALID_ARGUMENT;
  everything else is answered per claim, and every requested claim gets an entry; a claim
  whose namespace, name or UID could not come from the API server (``../x``, a NUL, not a
  UUID) gets its error without being read (``claims.check_claim_ref``);
- claims are read from the API server *before* taking the serialization lock (API calls are
  slow), concurrently when there are several (``fetch``), then checked and converted
  (``claims``);
- Prepare and Unprepare run one at a time: a ``threading.Lock`` in this process plus an
  ``flock`` on ``<plugin data dir>/serialize.lock``, so two plugin instances sharing the data
  dir during a rolling update never interleave; calls of one kind that queue behind a running
  one are then served together, by one Plugin call (``serialize``: ``CallSerializer``,
  ``GroupCommit``);
- a Plugin that raises fails the whole call with INTERNAL; the server keeps serving;
- every call that carries claims is reported to a ``CallObserver`` (the metrics): its method,
  duration and one ``FailureReason`` per failed claim (``outcomes``). Empty calls (the liveness
  probe's) are not reported, so the numbers describe the kubelet's work only.

This module owns ``DraService``, the version-neutral handling of one call: validate, fetch,
convert, run under the lock, name every outcome, log one line per claim and report to the
observer. It must not touch protobuf messages (``dra_grpc`` adapts v1 and v1beta1 to it) nor
the Plugin's files. It re-exports the names the rest of the driver imports from here
(``__all__``), so ``plugin_server``, ``metrics`` and the tests import one module.

Threads, not asyncio: the Kubernetes client and the core are synchronous.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc

from dra_driver.errors import ClaimError, DriverError
from dra_driver.kubeletplugin.calllog import CallContextInterceptor, CallLogger
from dra_driver.kubeletplugin.claims import check_claim_ref, claim_from_json, describe_claim
from dra_driver.kubeletplugin.dra_grpc import DraServicer, add_dra_services
from dra_driver.kubeletplugin.fetch import DEFAULT_FETCH_WORKERS, ClaimGetter, fetch_claims
from dra_driver.kubeletplugin.outcomes import (
    AbortCallError,
    CallObserver,
    DraMethod,
    FailureReason,
    NoCallObserver,
    PrepareOutcome,
    RequestedClaim,
    failure_reason,
)
from dra_driver.kubeletplugin.serialize import SERIALIZE_LOCK_NAME, CallSerializer, GroupCommit
from dra_driver.prepare.driver import Plugin
from dra_driver.prepare.model import Claim, ClaimRef, ClaimUID, PrepareResult

__all__ = [
    "DEFAULT_FETCH_WORKERS",
    "SERIALIZE_LOCK_NAME",
    "AbortCallError",
    "CallContextInterceptor",
    "CallObserver",
    "CallSerializer",
    "ClaimGetter",
    "DraMethod",
    "DraService",
    "DraServicer",
    "FailureReason",
    "GroupCommit",
    "NoCallObserver",
    "PrepareOutcome",
    "RequestedClaim",
    "add_dra_services",
    "failure_reason",
]

# The logger the per-claim lines have always used (log filters and tests match its name).
log = CallLogger(logging.getLogger(__name__))

#: A Plugin that breaks its contract (one entry per claim) fails only the claims it skipped.
_NO_RESULT = "the driver returned no result for this claim"

_Item = TypeVar("_Item")
_Answer = TypeVar("_Answer")
_Arg = TypeVar("_Arg")
_Result = TypeVar("_Result")


class DraService:
    """Prepare and Unprepare, independent of the API version. Thread-safe.

    ``observer`` is told about every call that carries claims; set it before the servers start.
    """

    def __init__(
        self,
        *,
        plugin: Plugin,
        get_claim: ClaimGetter,
        driver: str,
        node_name: str,
        serializer: CallSerializer,
        fetch_workers: int = DEFAULT_FETCH_WORKERS,
        observer: CallObserver | None = None,
    ) -> None:
        self.plugin = plugin
        self.observer: CallObserver = observer or NoCallObserver()
        self.get_claim = get_claim
        self.driver = driver
        self.node_name = node_name
        self.serializer = serializer
        self._fetcher = ThreadPoolExecutor(max_workers=fetch_workers, thread_name_prefix="claims")
        self._prepares: GroupCommit[Claim, PrepareOutcome] = GroupCommit(
            self._run_prepare, key=lambda claim: claim.ref.uid, hold=self._hold
        )
        self._unprepares: GroupCommit[ClaimRef, DriverError | None] = GroupCommit(
            self._run_unprepare, key=lambda ref: ref.uid, hold=self._hold
        )

    def close(self) -> None:
        """Stop the fetch threads (after the servers stopped calling)."""
        self._fetcher.shutdown(wait=False, cancel_futures=True)

    def prepare(
        self, requested: Sequence[RequestedClaim], *, timeout_s: float | None = None
    ) -> dict[str, PrepareOutcome]:
        """Prepare the claims; one outcome per distinct requested UID.

        Raises ``AbortCallError`` for a malformed request, a lock timeout or a Plugin failure.
        """
        with self._observed(DraMethod.PREPARE, requested) as failures:
            return self._prepare(requested, timeout_s=timeout_s, failures=failures)

    def _prepare(
        self,
        requested: Sequence[RequestedClaim],
        *,
        timeout_s: float | None,
        failures: list[FailureReason],
    ) -> dict[str, PrepareOutcome]:
        started = time.monotonic()
        requested = _validated(requested)
        refs, refused = _checked_refs(requested)
        outcomes: dict[str, PrepareOutcome] = dict(refused)
        claims: list[Claim] = []
        for ref, read in zip(refs, fetch_claims(self.get_claim, refs, self._fetcher), strict=True):
            if isinstance(read, DriverError):
                outcomes[ref.uid] = read
                continue
            try:
                claims.append(
                    claim_from_json(
                        read, requested=ref, driver=self.driver, node_name=self.node_name
                    )
                )
            except DriverError as exc:
                outcomes[ref.uid] = exc
        if claims:
            results = self._committed(self._prepares, claims, timeout_s, started)
            for claim in claims:
                result = results.get(claim.ref.uid)
                outcomes[claim.ref.uid] = result if result is not None else DriverError(_NO_RESULT)
        elapsed_ms = (time.monotonic() - started) * 1000
        names = {r.uid: _described(r) for r in requested}
        for uid in names:  # in request order
            outcome = outcomes[uid]
            if isinstance(outcome, DriverError):
                failures.append(failure_reason(outcome))
                log.error("prepare failed: %s", _claim_message(names[uid], outcome))
            else:
                log.info(
                    "prepared claim %s in %.0f ms: %d device(s)",
                    names[uid],
                    elapsed_ms,
                    len(outcome.devices),
                )
        return {r.uid: _named(names[r.uid], outcomes[r.uid]) for r in requested}

    def unprepare(
        self, requested: Sequence[RequestedClaim], *, timeout_s: float | None = None
    ) -> dict[str, DriverError | None]:
        """Unprepare the claims; one outcome (None = done) per distinct requested UID."""
        with self._observed(DraMethod.UNPREPARE, requested) as failures:
            return self._unprepare(requested, timeout_s=timeout_s, failures=failures)

    def _unprepare(
        self,
        requested: Sequence[RequestedClaim],
        *,
        timeout_s: float | None,
        failures: list[FailureReason],
    ) -> dict[str, DriverError | None]:
        started = time.monotonic()
        requested = _validated(requested)
        refs, refused = _checked_refs(requested)
        outcomes: dict[str, DriverError | None] = dict(refused)
        if refs:
            results = self._committed(self._unprepares, refs, timeout_s, started)
            for ref in refs:
                outcomes[ref.uid] = (
                    results[ref.uid] if ref.uid in results else DriverError(_NO_RESULT)
                )
        elapsed_ms = (time.monotonic() - started) * 1000
        names = {r.uid: _described(r) for r in requested}
        for uid in names:  # in request order
            outcome = outcomes[uid]
            if outcome is None:
                log.info("unprepared claim %s in %.0f ms", names[uid], elapsed_ms)
            else:
                failures.append(failure_reason(outcome))
                log.error("unprepare failed: %s", _claim_message(names[uid], outcome))
        return {r.uid: _named(names[r.uid], outcomes[r.uid]) for r in requested}

    @contextlib.contextmanager
    def _observed(
        self, method: DraMethod, requested: Sequence[RequestedClaim]
    ) -> Iterator[list[FailureReason]]:
        """Report the call to the observer; the body appends one reason per failed claim.

        A call that ends in an abort or an unexpected exception failed for every claim in it.
        """
        failures: list[FailureReason] = []
        if not requested:  # the liveness probe's empty calls are not the kubelet's work
            yield failures
            return
        observer = self.observer
        started = time.monotonic()
        observer.call_started(method)
        try:
            yield failures
        except AbortCallError as exc:
            failures[:] = [exc.reason] * len({claim.uid for claim in requested})
            raise
        except Exception:
            failures[:] = [FailureReason.INTERNAL] * len({claim.uid for claim in requested})
            raise
        finally:
            observer.call_finished(
                method, duration_s=time.monotonic() - started, failures=tuple(failures)
            )

    def _run_prepare(self, claims: list[Claim]) -> Mapping[ClaimUID, PrepareOutcome]:
        return self._call_plugin("prepare", self.plugin.prepare_claims, claims)

    def _run_unprepare(self, refs: list[ClaimRef]) -> Mapping[ClaimUID, DriverError | None]:
        return self._call_plugin("unprepare", self.plugin.unprepare_claims, refs)

    def _hold(self, timeout_s: float | None) -> contextlib.AbstractContextManager[None]:
        return self.serializer.hold(timeout_s=timeout_s)

    def _committed(
        self,
        commit: GroupCommit[_Item, _Answer],
        items: Sequence[_Item],
        timeout_s: float | None,
        started: float,
    ) -> Mapping[ClaimUID, _Answer]:
        """Run ``items`` through ``commit`` within the call's deadline."""
        deadline = None if timeout_s is None else started + timeout_s
        try:
            return commit.call(items, deadline=deadline)
        except TimeoutError as exc:
            raise AbortCallError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"gave up waiting for the serialization lock {self.serializer.lock_path}: {exc}",
                reason=FailureReason.TIMEOUT,
            ) from None

    @staticmethod
    def _call_plugin(what: str, call: Callable[[_Arg], _Result], arg: _Arg) -> _Result:
        """Call the Plugin; any exception fails the whole call (logged here, once)."""
        try:
            return call(arg)
        except DriverError as exc:
            log.error("%s failed as a whole: %s", what, exc)
            raise AbortCallError(
                grpc.StatusCode.INTERNAL, f"{what} failed: {exc}", reason=failure_reason(exc)
            ) from None
        except Exception as exc:
            log.exception("%s failed as a whole with an unexpected error", what)
            raise AbortCallError(
                grpc.StatusCode.INTERNAL, f"{what} failed: {type(exc).__name__}: {exc}"
            ) from None


def _checked_refs(
    requested: Sequence[RequestedClaim],
) -> tuple[list[ClaimRef], dict[str, ClaimError]]:
    """Refs of the claims that pass ``check_claim_ref``; errors for the rest, which stop there."""
    refs: list[ClaimRef] = []
    refused: dict[str, ClaimError] = {}
    for claim in requested:
        try:
            refs.append(check_claim_ref(namespace=claim.namespace, name=claim.name, uid=claim.uid))
        except ClaimError as exc:
            refused[claim.uid] = exc
    return refs, refused


def _described(claim: RequestedClaim) -> str:
    """The claim as messages and log lines name it (odd parts quoted)."""
    return describe_claim(namespace=claim.namespace, name=claim.name, uid=claim.uid)


def _validated(requested: Sequence[RequestedClaim]) -> list[RequestedClaim]:
    """Reject a malformed request; drop repeated UIDs (one answer per UID anyway)."""
    seen: set[str] = set()
    unique: list[RequestedClaim] = []
    for index, claim in enumerate(requested):
        empty = [f for f in ("uid", "namespace", "name") if not getattr(claim, f)]
        if empty:
            raise AbortCallError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"claim #{index} of the request has an empty {', '.join(empty)}",
                reason=FailureReason.INVALID_REQUEST,
            )
        if claim.uid not in seen:
            seen.add(claim.uid)
            unique.append(claim)
    return unique


def _claim_message(name: str, error: DriverError) -> str:
    """The error's text, prefixed with the claim unless it already names it."""
    text = str(error) or type(error).__name__
    return text if text.startswith("claim ") else f"claim {name}: {text}"


_Outcome = TypeVar("_Outcome", PrepareResult, None)


def _named(name: str, outcome: _Outcome | DriverError) -> _Outcome | DriverError:
    """Outcomes as they go into the response: errors always name the claim."""
    if isinstance(outcome, DriverError):
        return DriverError(_claim_message(name, outcome))
    return outcome
