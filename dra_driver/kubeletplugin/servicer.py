"""The DRA services the kubelet calls (v1 and v1beta1), sharing one implementation.

What the Go helper (k8s.io/dynamic-resource-allocation/kubeletplugin) does around the driver,
done here so the core never sees gRPC or the API server:

- malformed requests (a claim without uid, namespace or name) abort with INVALID_ARGUMENT;
  everything else is answered per claim, and every requested claim gets an entry; a claim
  whose namespace, name or UID could not come from the API server (``../x``, a NUL, not a
  UUID) gets its error without being read (``claims.check_claim_ref``);
- claims are read from the API server *before* taking the serialization lock (API calls are
  slow), concurrently when there are several, then checked and converted (``claims``);
- Prepare and Unprepare run one at a time: a ``threading.Lock`` in this process plus an
  ``flock`` on ``<plugin data dir>/serialize.lock``, so two plugin instances sharing the data
  dir during a rolling update never interleave; calls of one kind that queue behind a running
  one are then served together, by one Plugin call (``GroupCommit``);
- a Plugin that raises fails the whole call with INTERNAL; the server keeps serving;
- every call that carries claims is reported to a ``CallObserver`` (the metrics): its method,
  duration and one ``FailureReason`` per failed claim. Empty calls (the liveness probe's) are
  not reported, so the numbers describe the kubelet's work only.

Threads, not asyncio: the Kubernetes client and the core are synchronous.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError

from dra_driver.cluster.kube.errors import AnswerTooDeepError, NotFound
from dra_driver.errors import (
    AllocationError,
    CheckpointError,
    ClaimConfigError,
    ClaimError,
    DriverError,
)
from dra_driver.kubeletplugin._pb import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
)
from dra_driver.kubeletplugin.claims import check_claim_ref, claim_from_json, describe_claim
from dra_driver.prepare.driver import Plugin
from dra_driver.prepare.model import Claim, ClaimRef, ClaimUID, PrepareResult
from dra_driver.util.fsutil import PRIVATE_FILE_MODE

logger = logging.getLogger(__name__)

#: Reads one ResourceClaim as JSON by namespace and name; raises ``NotFound`` or another
#: ``DriverError`` (``KubeError``) when it cannot.
ClaimGetter = Callable[[str, str], Mapping[str, Any]]

#: The file both plugin instances of a rolling update lock (the Go helper's name).
SERIALIZE_LOCK_NAME = "serialize.lock"
#: Concurrent API reads of one prepare call: a pod rarely has more claims per driver, and a
#: small bound keeps one big pod from flooding the API server.
DEFAULT_FETCH_WORKERS = 4
#: How often a waiting call retries a contended ``flock`` (it cannot block with a timeout).
_FLOCK_POLL_S = 0.01
#: A Plugin that breaks its contract (one entry per claim) fails only the claims it skipped.
_NO_RESULT = "the driver returned no result for this claim"

#: ``<id> <method>`` of the gRPC call this thread is serving, for log lines.
_CALL: contextvars.ContextVar[str] = contextvars.ContextVar("dra_call", default="")


class CallLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes messages with the current call's request id and method (``[call 7 Prepare]``)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        """Add the prefix and the ``request`` extra."""
        call = _CALL.get()
        if not call:
            return msg, kwargs
        kwargs.setdefault("extra", {})["request"] = call
        return f"[call {call}] {msg}", kwargs


log = CallLogger(logger)


# grpc ships no type information, so its base class is Any to mypy.
class CallContextInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Gives every unary call an increasing request id, visible in every log line it causes.

    The handler is wrapped (rather than setting the context variable here) because gRPC runs
    interceptors on its polling thread and the handler on a worker thread. Its request
    deserializer is wrapped too: a message that does not decode is refused with one log line
    (gRPC would log a traceback per message) and gRPC's own INTERNAL "Exception deserializing
    request!".
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Wrap unary-unary handlers; leave anything else alone."""
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = str(handler_call_details.method).rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def with_call_context(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                call_id = next(self._ids)
            token = _CALL.set(f"{call_id} {method}")
            try:
                log.debug("request: %s", request)
                response = inner(request, context)
                log.debug("response: %s", response)
                return response
            finally:
                _CALL.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            with_call_context,
            request_deserializer=_refusing_undecodable(method, handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def _refusing_undecodable(
    method: str, deserialize: Callable[[bytes], Any] | None
) -> Callable[[bytes], Any] | None:
    """``deserialize``, answering None (gRPC then refuses the call) for undecodable bytes."""
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            log.error("refused an undecodable %s request (%d bytes): %s", method, len(data), exc)
            return None

    return decode


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


class _ClaimReadError(ClaimError):
    """The claim could not be read from the API server (a ``ClaimError`` told apart for metrics)."""


def failure_reason(error: BaseException) -> FailureReason:
    """The metric label of a claim's failure."""
    if isinstance(error, _ClaimReadError):
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
        for ref, read in zip(refs, self._fetch(refs), strict=True):
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

    def _fetch(self, refs: Sequence[ClaimRef]) -> list[Mapping[str, Any] | DriverError]:
        """Read every claim (concurrently when several); a failure becomes its entry."""
        if len(refs) <= 1:
            return [self._fetch_one(ref) for ref in refs]
        return list(self._fetcher.map(self._fetch_one, refs))

    def _fetch_one(self, ref: ClaimRef) -> Mapping[str, Any] | DriverError:
        try:
            return self.get_claim(ref.namespace, ref.name)
        except NotFound:
            return ClaimError(f"claim {ref}: not found in the API server (deleted?)")
        except (AnswerTooDeepError, RecursionError):
            # json.loads gives up near 1000 levels; the API server accepts opaque parameters
            # nested far deeper (10 KiB of "[" is 5000 levels). Only that claim fails, and
            # for good: reading it again gets the same answer.
            return ClaimError(
                f"claim {ref}: its JSON from the API server nests too deeply to decode (opaque "
                "parameters nested hundreds of levels deep?)"
            )
        except DriverError as exc:
            return _ClaimReadError(f"claim {ref}: cannot read it from the API server: {exc}")

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


class DraServicer:
    """``NodePrepareResources``/``NodeUnprepareResources`` of one API version.

    ``has_share_id``: v1 carries ``Device.share_id``; v1beta1 has no such field, and the Go
    helper's v1beta1 wrapper drops it, so we do too.
    """

    def __init__(self, service: DraService, *, pb2: ModuleType, has_share_id: bool) -> None:
        self.service = service
        self.pb2 = pb2
        self.has_share_id = has_share_id

    def NodePrepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Prepare the requested claims."""
        return _answer(context, lambda: self._prepare(request, context))

    def NodeUnprepareResources(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Unprepare the requested claims."""
        return _answer(context, lambda: self._unprepare(request, context))

    def _prepare(self, request: Any, context: grpc.ServicerContext) -> Any:
        outcomes = self.service.prepare(_requested(request), timeout_s=context.time_remaining())
        pb2 = self.pb2
        claims = {}
        for uid, outcome in outcomes.items():
            if isinstance(outcome, DriverError):
                claims[uid] = pb2.NodePrepareResourceResponse(error=str(outcome))
                continue
            devices = []
            for device in outcome.devices:
                fields: dict[str, Any] = {
                    # Base names only, as the Go helper sends them.
                    "request_names": [name.split("/", 1)[0] for name in device.requests],
                    "pool_name": device.pool,
                    "device_name": device.device,
                    "cdi_device_ids": list(device.cdi_ids),
                }
                if self.has_share_id and device.share_id is not None:
                    fields["share_id"] = device.share_id
                devices.append(pb2.Device(**fields))
            claims[uid] = pb2.NodePrepareResourceResponse(devices=devices)
        return pb2.NodePrepareResourcesResponse(claims=claims)

    def _unprepare(self, request: Any, context: grpc.ServicerContext) -> Any:
        outcomes = self.service.unprepare(_requested(request), timeout_s=context.time_remaining())
        pb2 = self.pb2
        return pb2.NodeUnprepareResourcesResponse(
            claims={
                uid: pb2.NodeUnprepareResourceResponse(error="" if error is None else str(error))
                for uid, error in outcomes.items()
            }
        )


def _requested(request: Any) -> list[RequestedClaim]:
    return [
        RequestedClaim(namespace=claim.namespace, name=claim.name, uid=claim.uid)
        for claim in request.claims
    ]


def _answer(context: grpc.ServicerContext, build: Callable[[], Any]) -> Any:
    """Run ``build``; turn our aborts and any unexpected exception into a gRPC status."""
    try:
        return build()
    except AbortCallError as exc:
        code, message = exc.code, exc.message
    except Exception as exc:
        log.exception("unexpected error")
        code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
    # Outside the except blocks: abort() raises to end the call.
    context.abort(code, message)


def add_dra_services(server: grpc.Server, service: DraService) -> None:
    """Serve ``service`` as v1 and v1beta1 ``DRAPlugin`` on ``server``."""
    dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(
        DraServicer(service, pb2=dra_v1_pb2, has_share_id=True), server
    )
    dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(
        DraServicer(service, pb2=dra_v1beta1_pb2, has_share_id=False), server
    )
