"""Claim status: what a pod got, shown in the ResourceClaim's ``status.devices`` (--claim-status).

For every prepared share the claim gets one ``status.devices[]`` entry (resource-api.md §6.2):
``driver``, ``pool``, ``device``, ``shareID`` (when the scheduler set one), a ``Ready``
condition and ``data`` with the vDCU's numbers (CUs, CU mask, pipe id, memory, vdev file), so
``kubectl get resourceclaim -o yaml`` shows what the pod got. Unprepare removes them.

- ``build_device_statuses`` and ``merge_devices`` are pure.
- ``ClaimStatusReporter`` does the API I/O on a worker thread: each request *reconciles* one
  claim against the checkpoint as it is then (prepared: our entries; not prepared: none), so
  requests may be repeated, coalesced or made by either of two plugin instances and the last
  one still writes the truth.
- ``StatusReportingPlugin`` wraps the core and asks for a reconcile after each successful
  prepare or unprepare.

Writes are a read-modify-write of the whole object with ``PUT .../status`` and its
``resourceVersion`` (optimistic concurrency, retried on conflict). The read is usually free:
the prepare has just read the claim (:meth:`ClaimStatusReporter.remember`), and nobody else
writes a claim between its prepare and our status write, so the first PUT uses that copy; a
copy that turned stale costs a conflict and a fresh read, as before. A prepare is then one
GET and one PUT at the API server, not two GETs and a PUT (``make scale`` counts them).
``status.devices`` is a list-map keyed by driver, device, pool and shareID, and we replace
only the entries of our driver in our pool, leaving other drivers' entries as they are. PUT
and not PATCH because the RBAC rule grants ``update`` on ``resourceclaims/status`` (and
``associated-node:update`` on ``resourceclaims/driver`` from 1.36), nothing more.

Best effort, by design: a status write that fails is logged and counted, never reported to
the kubelet. The devices are prepared either way; failing the prepare would make the kubelet
retry the pod start over a debugging aid, and a slow API server must not eat into the
kubelet's 45 s call budget, hence the worker thread. While the API server is unreachable only
the first failed write is logged, plus one line when a write goes through again, so an outage
is not one line per claim.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dra_driver.cluster.kube import Conflict, KubeClient, KubeError, NotFound, is_unreachable, paths
from dra_driver.errors import DriverError
from dra_driver.prepare.checkpoint import ClaimEntry, ClaimState, PreparedShare
from dra_driver.prepare.driver import Plugin
from dra_driver.prepare.model import Claim, ClaimRef, ClaimUID, PrepareResult
from dra_driver.vdcu.allocator import CuMask
from dra_driver.vdcu.vdev import vdev_file_name

logger = logging.getLogger(__name__)

#: Condition type the API documents for a configured device ("Ready should be True").
READY = "Ready"
READY_REASON = "Prepared"
#: A conflict means someone else wrote the claim in between; a few re-reads always win
#: against the scheduler and controllers, which write a claim a handful of times in its life.
MAX_CONFLICT_RETRIES = 5
#: Claims a prepare read, kept for the status write after it: at most this many, for at most
#: this long (the kubelet's call timeout; a write later than that reads the claim again).
RECENT_CLAIMS = 256
RECENT_MAX_AGE_S = 45.0
#: On shutdown, pending writes get this long before they are dropped (the pod's 30 s grace
#: period is shared with the gRPC servers' drain).
STOP_GRACE_S = 3.0
#: A write that failed because the API server did not answer is tried again after this long,
#: doubling per failure up to ``RETRY_MAX_S``: an outage of minutes heals without a write
#: storm when it ends. Refusals (403, 422, ...) are not retried; they would fail the same way.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0

#: Reads the checkpoint's claims now (``DcuPlugin.prepared_claims``).
PreparedClaims = Callable[[], Mapping[ClaimUID, ClaimEntry]]
#: Where a claim's vdev files are (``DcuPlugin.vdev_dir``).
VdevDir = Callable[[ClaimUID], Path]


def build_device_statuses(
    entry: ClaimEntry,
    *,
    driver: str,
    vdev_dir: Path,
    pci_bus_ids: Mapping[str, str],
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The ``status.devices`` entries of a prepared claim, one per share. Pure."""
    statuses = []
    for share in entry.shares:
        status: dict[str, Any] = {"driver": driver, "pool": share.pool, "device": share.device}
        if share.share_id is not None:
            status["shareID"] = share.share_id
        status["conditions"] = [
            {
                "type": READY,
                "status": "True",
                "reason": READY_REASON,
                "message": _ready_message(share),
                "lastTransitionTime": _rfc3339(now),
            }
        ]
        status["data"] = _share_data(share, vdev_dir=vdev_dir, pci_bus_ids=pci_bus_ids)
        statuses.append(status)
    return statuses


def _share_data(
    share: PreparedShare, *, vdev_dir: Path, pci_bus_ids: Mapping[str, str]
) -> dict[str, Any]:
    """The driver-specific ``data`` of one share: what a person debugging a pod asks for."""
    data: dict[str, Any] = {
        "request": share.request,
        "cores": share.cores,
        "memoryMiB": share.memory_mib,
        "wholeDevice": share.whole_device,
        "cdiDevice": share.cdi_id,
    }
    if share.device in pci_bus_ids:
        data["pciBusID"] = pci_bus_ids[share.device]
    if share.admin_access:
        data["adminAccess"] = True
    if not share.whole_device and share.vdev_id is not None:
        mask = CuMask.from_words(*share.cu_mask)
        data["cuMask"] = list(mask.hex_words())
        data["cus"] = _ranges(mask.cus())
        data["pipeId"] = share.pipe_id
        data["vdevFile"] = str(vdev_dir / vdev_file_name(share.vdev_id))
    return data


def _ready_message(share: PreparedShare) -> str:
    if share.whole_device:
        return f"whole DCU {share.device} prepared"
    return f"vDCU on {share.device} prepared: {share.cores} CUs, {share.memory_mib} MiB"


def _ranges(cus: Sequence[int]) -> str:
    """``0-9,20,22-23``: a CU list short enough to read."""
    parts: list[str] = []
    start = previous = None
    for cu in [*cus, None]:
        if cu is not None and previous is not None and cu == previous + 1:
            previous = cu
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = cu
    return ",".join(parts)


def _rfc3339(moment: dt.datetime) -> str:
    """Seconds precision in UTC, the form metav1.Time takes."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(status: Mapping[str, Any]) -> tuple[str, str, str, str | None]:
    """The list-map key of a ``status.devices`` entry."""
    return (
        str(status.get("driver")),
        str(status.get("pool")),
        str(status.get("device")),
        status.get("shareID"),
    )


def merge_devices(
    existing: Sequence[Mapping[str, Any]],
    ours: Sequence[Mapping[str, Any]],
    *,
    driver: str,
    pool: str,
) -> list[dict[str, Any]]:
    """``existing`` with our driver's entries in ``pool`` replaced by ``ours``. Pure.

    Other drivers' entries (and ours in other pools) keep their place and content. An entry
    of ours that did not change keeps its condition's ``lastTransitionTime``, so repeated
    reconciles write nothing.
    """
    previous = {
        _key(status): status
        for status in existing
        if status.get("driver") == driver and status.get("pool") == pool
    }
    merged = [
        dict(status)
        for status in existing
        if not (status.get("driver") == driver and status.get("pool") == pool)
    ]
    for status in ours:
        new = copy.deepcopy(dict(status))
        old = previous.get(_key(status))
        if old is not None and _same_apart_from_time(old, new):
            new = copy.deepcopy(dict(old))
        merged.append(new)
    return merged


def _same_apart_from_time(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    def strip(status: Mapping[str, Any]) -> dict[str, Any]:
        stripped = copy.deepcopy(dict(status))
        for condition in stripped.get("conditions") or []:
            condition.pop("lastTransitionTime", None)
        return stripped

    return strip(old) == strip(new)


class ClaimStatusReporter:
    """Writes our ``status.devices`` entries of claims, one claim at a time, on its own thread.

    ``writes`` and ``failures`` count API writes done and reconciles given up (for metrics);
    ``on_failure`` is called with the claim after each failure.
    """

    def __init__(
        self,
        *,
        client: KubeClient,
        driver: str,
        pool: str,
        prepared_claims: PreparedClaims,
        vdev_dir: VdevDir,
        pci_bus_ids: Mapping[str, str],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        on_failure: Callable[[ClaimRef], None] | None = None,
    ) -> None:
        self.client = client
        self.driver = driver
        self.pool = pool
        self._prepared_claims = prepared_claims
        self._vdev_dir = vdev_dir
        self._pci_bus_ids = dict(pci_bus_ids)
        self._clock = clock
        self._on_failure = on_failure
        self.writes = 0
        self.failures = 0
        self._pending: OrderedDict[ClaimUID, ClaimRef] = OrderedDict()
        self._busy = False
        self._cond = threading.Condition()
        self._stopping = False
        self._unreachable = False
        """The last write failed because the API server was unreachable (worker thread only)."""
        self._retries: dict[ClaimUID, tuple[ClaimRef, float, float]] = {}
        """Claims whose write failed for want of an API server: (ref, due time, last delay)."""
        self._monotonic = time.monotonic
        self._recent: OrderedDict[ClaimUID, tuple[float, Mapping[str, Any]]] = OrderedDict()
        """Claims the prepare read (when, object), oldest first; see :meth:`remember`."""
        self._thread = threading.Thread(target=self._run, name="claim-status", daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Finish pending writes for up to ``grace_s``, then drop the rest and stop."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending and not self._busy, timeout=grace_s)
            dropped = len(self._pending)
            self._pending.clear()
            self._stopping = True
            self._cond.notify_all()
        if dropped:
            logger.warning("dropped %d pending claim status write(s) at shutdown", dropped)
        if self._thread.is_alive():
            self._thread.join(timeout=grace_s)

    def request(self, ref: ClaimRef) -> None:
        """Bring the claim's status in line with the checkpoint soon; never blocks on I/O."""
        with self._cond:
            if self._stopping:
                return
            self._pending[ref.uid] = ref
            self._pending.move_to_end(ref.uid)
            self._retries.pop(ref.uid, None)  # a fresh request supersedes a scheduled retry
            self._cond.notify_all()

    def remember(self, claim: Mapping[str, Any]) -> None:
        """Keep a claim object the prepare just read, so its status write needs no GET.

        Only the next reconcile of that claim uses it, only for a write and only within
        ``RECENT_MAX_AGE_S``: the PUT carries its resourceVersion, so a copy that turned stale
        is refused (409) and the claim is read again.
        """
        uid = (claim.get("metadata") or {}).get("uid")
        if not uid:
            return
        with self._cond:
            self._recent[ClaimUID(str(uid))] = (self._monotonic(), claim)
            self._recent.move_to_end(ClaimUID(str(uid)))
            while len(self._recent) > RECENT_CLAIMS:
                self._recent.popitem(last=False)

    def _take_recent(self, uid: ClaimUID) -> dict[str, Any] | None:
        """A private copy of the claim the prepare read, if fresh enough; forgets it."""
        with self._cond:
            remembered = self._recent.pop(uid, None)
        if remembered is None or self._monotonic() - remembered[0] > RECENT_MAX_AGE_S:
            return None
        return copy.deepcopy(dict(remembered[1]))

    def wait_idle(self, timeout_s: float) -> bool:
        """Whether every requested reconcile finished within ``timeout_s`` (for tests)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._pending and not self._busy, timeout=timeout_s
            )

    def retries_scheduled(self) -> int:
        """How many claims wait for a retry of a write the API server did not answer."""
        with self._cond:
            return len(self._retries)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._queue_due_retries()
                    if self._pending:
                        break
                    due = min(
                        (t for _, t, _ in self._retries.values() if t != float("inf")),
                        default=None,
                    )
                    self._cond.wait(None if due is None else max(0.0, due - self._monotonic()))
                if self._stopping:
                    return
                _, ref = self._pending.popitem(last=False)
                self._busy = True
            try:
                self._reconcile_logged(ref)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _reconcile_logged(self, ref: ClaimRef) -> None:
        try:
            self.reconcile(ref)
        except DriverError as exc:
            self.failures += 1
            self._log_failure(ref, exc)
            if isinstance(exc, KubeError) and is_unreachable(exc):
                self._schedule_retry(ref)
            if self._on_failure is not None:
                self._on_failure(ref)
            return
        with self._cond:
            self._retries.pop(ref.uid, None)
        if self._unreachable:
            self._unreachable = False
            logger.info("claim status: the API server answers again; writing status again")

    def _schedule_retry(self, ref: ClaimRef) -> None:
        """Try the claim again later, backing off while the API server stays away."""
        with self._cond:
            if self._stopping or ref.uid in self._pending:
                return
            previous = self._retries.get(ref.uid)
            delay = RETRY_FIRST_S if previous is None else min(previous[2] * 2, RETRY_MAX_S)
            self._retries[ref.uid] = (ref, self._monotonic() + delay, delay)
            self._cond.notify_all()

    def _queue_due_retries(self) -> None:
        """Move retries whose time has come to the pending queue (lock held)."""
        now = self._monotonic()
        for uid, (ref, due, delay) in list(self._retries.items()):
            if due <= now:
                self._pending[uid] = ref
                # Kept (with its delay) until a write succeeds, so the backoff grows.
                self._retries[uid] = (ref, float("inf"), delay)

    def _log_failure(self, ref: ClaimRef, exc: DriverError) -> None:
        """One line per failed write, except while the API server stays unreachable."""
        if not (isinstance(exc, KubeError) and is_unreachable(exc)):
            logger.warning("cannot write the status of claim %s (best effort): %s", ref, exc)
        elif not self._unreachable:
            self._unreachable = True
            logger.warning(
                "cannot write the status of claim %s (best effort): %s; the API server is "
                "unreachable, further writes that fail for that reason are not logged until "
                "it answers",
                ref,
                exc,
            )
        else:
            logger.debug("cannot write the status of claim %s either: %s", ref, exc)

    def reconcile(self, ref: ClaimRef) -> bool:
        """Write the claim's entries as the checkpoint has them now; True if it wrote.

        Raises ``DriverError`` (an API or checkpoint error, or conflicts that did not clear).
        """
        entry = self._prepared_claims().get(ref.uid)
        ours: list[dict[str, Any]] = []
        if entry is not None and entry.state is ClaimState.PREPARE_COMPLETED:
            ours = build_device_statuses(
                entry,
                driver=self.driver,
                vdev_dir=self._vdev_dir(ref.uid),
                pci_bus_ids=self._pci_bus_ids,
                now=self._clock(),
            )
        path = paths.resource_claims(ref.namespace, ref.name)
        recent = self._take_recent(ref.uid)
        for _ in range(MAX_CONFLICT_RETRIES):
            claim, recent = recent, None
            if claim is None:
                try:
                    claim = self.client.get(path)
                except NotFound:
                    return False  # deleted: nobody can look at its status any more
                from_prepare = False
            else:
                from_prepare = True
            if claim.get("metadata", {}).get("uid") != ref.uid:
                return False  # replaced by a new claim of the same name: not ours to touch
            status = claim.setdefault("status", {})
            if ours and not status.get("allocation"):
                return False  # deallocated: entries must match allocation results
            existing = list(status.get("devices") or [])
            merged = merge_devices(existing, ours, driver=self.driver, pool=self.pool)
            if merged == existing:
                if from_prepare:
                    continue  # an older copy may be wrong to skip the write: read it to be sure
                return False
            if merged:
                status["devices"] = merged
            else:
                status.pop("devices", None)
            try:
                self.client.replace(path + "/status", claim)
            except Conflict:
                continue
            except NotFound:
                return False
            self.writes += 1
            logger.debug("claim %s: status.devices now has %d entries of ours", ref, len(ours))
            return True
        raise KubeError(
            f"claim {ref}: status still conflicting after {MAX_CONFLICT_RETRIES} attempts"
        )


class StatusReportingPlugin:
    """A ``Plugin`` that asks ``reporter`` to reconcile every claim it prepared or unprepared."""

    def __init__(self, inner: Plugin, reporter: ClaimStatusReporter) -> None:
        self.inner = inner
        self.reporter = reporter

    def prepare_claims(
        self, claims: Sequence[Claim]
    ) -> dict[ClaimUID, PrepareResult | DriverError]:
        """Prepare through the inner plugin, then queue status writes for the successes."""
        results = self.inner.prepare_claims(claims)
        for claim in claims:
            if isinstance(results.get(claim.ref.uid), PrepareResult):
                self.reporter.request(claim.ref)
        return results

    def unprepare_claims(self, refs: Sequence[ClaimRef]) -> dict[ClaimUID, DriverError | None]:
        """Unprepare through the inner plugin, then queue removals for the successes."""
        results = self.inner.unprepare_claims(refs)
        for ref in refs:
            if ref.uid in results and results[ref.uid] is None:
                self.reporter.request(ref)
        return results
