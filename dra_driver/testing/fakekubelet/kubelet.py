"""The fake kubelet: one node's kubelet, reduced to what DRA needs.

It is test infrastructure for machines where the real kubelet cannot run (it needs root), and
a model of how the kubelet treats a DRA driver. Every behaviour names the part of the
kubelet's DRA plugin protocol it follows: §1 the DRA gRPC API (kubernetes/kubelet
``pkg/apis/dra/v1/api.proto``), §2 plugin registration (``pkg/apis/pluginregistration/v1``),
§3 the resource-health stream (KEP-4680), §5 what the kubelet does around the calls
(kubernetes/kubernetes ``pkg/kubelet/cm/dra/manager.go``, ``claiminfo.go`` and ``plugin/``).
The behaviours below were checked against the kubelet v1.36.3 source and its observed
behaviour; where a test needs the real thing, use the real-node suite (issue 14).

What it does as the kubelet v1.36.3 does:

- registration (:mod:`.plugins`): walks ``plugins_registry`` and its subdirectories for unix
  sockets of any name (not names starting with '.'); dials for up to 10 s, gives GetInfo 1 s;
  an empty ``endpoint`` means the registration socket is the DRA endpoint; only the type and
  the services are validated, and a rejection is sent with the kubelet's own text; a second
  plugin of a driver on an already registered endpoint is rejected; a failed
  NotifyRegistrationStatus(true) undoes the registration;
- connections: one gRPC channel per registered plugin; a plugin counts as connected while its
  channel is READY, and gRPC is asked to reconnect when it is not; calls go to the newest
  connected plugin of the driver, else to the newest;
- slice wiping: all slices of the node at start; a driver's slices once it has had no
  *connected* plugin for 30 s (a SIGKILLed plugin whose socket file stays loses them too);
  an armed wipe keeps its time, a connected plugin cancels it;
- pods: one worker per pod, so NodePrepareResources calls for different pods overlap (two pods
  starting together may both send a shared claim that is not prepared yet, as in the kubelet),
  while each pod's own start and teardown run in order; a pod whose drivers are not all
  registered fails before its claims enter the claim cache;
- claims: one NodePrepareResources per driver with the pod's unprepared claims; claims count as
  prepared only when every call succeeded; NodeUnprepareResources goes to every driver of the
  claim's allocation once the last pod using it is gone, also after a failed or partly failed
  prepare; error texts of the checks on the answers are the kubelet's;
- restart (with ``state_file``): claims are restored as not prepared, Prepare is called again
  for the claims of pods still bound to the node, and claims of pods that went away meanwhile
  are unprepared;
- health (§3, :mod:`.health`): the stream of every registered plugin is watched, device health
  is kept per device with its timeout (read it with :meth:`FakeKubelet.device_health`).

What it does not model (so nothing it shows about these is evidence about a real node):

- containers: there is no runtime. A pod is reported Running as soon as its claims are
  prepared, CDI IDs are only recorded (:meth:`FakeKubelet.container_cdi_ids`), and a deleted
  pod's claims are released at once, then the pod is force-deleted (grace period 0);
- pod status ``allocatedResourcesStatus``: device health from the stream is never written to
  the pod status;
- a restart without ``state_file`` forgets every prepared claim (claims of pods deleted while
  it was down are never unprepared); the checkpoint is the fake's own JSON, not the kubelet's
  ``dra_manager_state``, so a fake cannot take over a real kubelet's state; having no
  containers to inspect, a restarted fake re-posts the Running status of each pod it
  prepares again;
- the claim cache is keyed by claim UID; the kubelet keys it by namespace/name and refuses a
  pod whose claim was replaced by one with the same name while the old one is still prepared
  ("old ResourceClaim with same name ... still exists");
- timing: the registration directory is polled every ``poll_interval_s`` (the kubelet uses
  inotify and a 1 s reconciler), so a socket replaced between two polls with the same inode
  and mtime is not seen as new; a reconnect is requested at the next poll; failed
  registrations, pod starts, unprepares and wipes are retried after a fixed
  ``retry_interval_s`` where the kubelet backs off exponentially; the reconcile loop that
  unprepares claims of vanished pods runs after each (re)list of pods, not every 60 s; the
  slice wipe at start runs before :meth:`FakeKubelet.start` returns, not in the background;
- plugin types other than ``DRAPlugin`` (CSI, device plugins) are rejected as having no
  handler; the real kubelet has handlers for them;
- error texts outside registration and the checks on prepare/unprepare answers (e.g. the
  kubelet's ``prepare dynamic resources: ...`` wrapping, pod events) are the fake's own;
- metrics, pod admission, resource accounting other than DRA, eviction, static pods.

Threads (all joined by :meth:`FakeKubelet.stop`):

- ``heartbeat``: renews the node Lease and the Ready condition's heartbeat;
- ``plugins`` (in :class:`PluginManager`): registration directory watcher and slice wiping,
  plus one thread per registration attempt;
- ``pod-watch``: list + watch of the pods bound to the node, feeding pod records;
- ``pods``: hands due pods to pod workers, one thread per pod sync and never two for one pod,
  and runs the orphan sweep in its own thread; claim bookkeeping is guarded by one lock that
  is never held during a gRPC or API call.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from dra_driver.cluster.kube import (
    AlreadyExists,
    Conflict,
    Gone,
    KubeClient,
    KubeError,
    NotFound,
    paths,
)
from dra_driver.testing.fakekubelet import claims as claimlib
from dra_driver.testing.fakekubelet import objects
from dra_driver.testing.fakekubelet.checkpoint import load_checkpoint, save_checkpoint
from dra_driver.testing.fakekubelet.health import (
    DEFAULT_HEALTH_RETRY_S,
    HEALTH_V1ALPHA1,
    HealthWatcher,
    ReportedHealth,
)
from dra_driver.testing.fakekubelet.model import (
    ClaimRef,
    FakeKubeletError,
    PluginCall,
    PluginCallError,
    PodNotReadyError,
    PreparedClaim,
    PreparedDevice,
    RegisteredPlugin,
    RegistrationAttempt,
)
from dra_driver.testing.fakekubelet.plugins import PluginManager
from dra_driver.testing.waiting import wait_for

logger = logging.getLogger(__name__)

#: §5 Connection: ``defaultClientCallTimeout``.
DEFAULT_CALL_TIMEOUT_S = 45.0
#: §5 ResourceSlice wiping: ``defaultWipingDelay``.
DEFAULT_WIPING_DELAY_S = 30.0
#: How soon a failed pod start or unprepare is retried (the kubelet backs off from ~1 s to
#: minutes; a fixed, configurable interval keeps tests predictable).
DEFAULT_RETRY_INTERVAL_S = 5.0
#: Node Lease renewal period (the kubelet renews every ``leaseDuration / 4`` = 10 s).
DEFAULT_HEARTBEAT_INTERVAL_S = 10.0
#: A pod waiting for the scheduler/controllers (claim not created, allocated or reserved) is
#: re-checked this often: that is not a failure, just not yet.
NOT_READY_RECHECK_S = 0.5
#: Watches are re-opened this often so that a stuck stream cannot go unnoticed for long.
WATCH_TIMEOUT_S = 60.0
#: The Ready condition heartbeat is refreshed every this many lease renewals.
NODE_STATUS_EVERY = 4


@dataclass(slots=True)
class _ClaimInfo:
    """The kubelet's ``ClaimInfo``: one claim on this node (§5 Prepare/Unprepare)."""

    ref: ClaimRef
    drivers: tuple[str, ...]
    """Drivers of the allocation: one prepare batch each."""
    devices: dict[str, list[PreparedDevice]] = field(default_factory=dict)
    """Per driver that answered a prepare (``DriverState``)."""
    unprepared: set[str] = field(default_factory=set)
    """Drivers whose unprepare succeeded; every driver of the allocation gets one."""
    pod_uids: set[str] = field(default_factory=set)
    prepared: bool = False
    unpreparing: bool = False
    """An unprepare of this claim is in flight; another caller leaves it to that one."""

    def snapshot(self) -> PreparedClaim:
        return PreparedClaim(
            namespace=self.ref.namespace,
            name=self.ref.name,
            uid=self.ref.uid,
            drivers=self.drivers,
            devices=tuple(d for driver in sorted(self.devices) for d in self.devices[driver]),
            pod_uids=frozenset(self.pod_uids),
        )


@dataclass(slots=True)
class _PodRecord:
    """What the pod worker knows about one pod bound to the node."""

    uid: str
    namespace: str
    name: str
    pod: dict[str, Any]
    due: float = 0.0
    """Monotonic time of the next sync; ``inf`` = nothing to do."""
    deleted: bool = False
    """The pod object is gone from the API (DELETED event or missing from a relist)."""
    terminating: bool = False
    started: bool = False
    error: str | None = None
    cdi_ids: dict[str, list[str]] = field(default_factory=dict)
    releasing: set[str] = field(default_factory=set)
    """Claim UIDs this pod released that may still need an unprepare."""
    syncing: bool = False
    """The pod's worker is running a sync; the next one waits for it (per-pod order)."""


class FakeKubelet:
    """Plays the kubelet of one node for DRA: node object, plugin registration, prepare/unprepare.

    Thread-safe queries (:meth:`prepared_claims`, :meth:`container_cdi_ids`, :meth:`calls`, ...)
    return immutable snapshots.
    """

    def __init__(
        self,
        *,
        client: KubeClient,
        node_name: str,
        registry_dir: Path,
        plugins_dir: Path | None = None,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S,
        wiping_delay_s: float = DEFAULT_WIPING_DELAY_S,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        poll_interval_s: float = 0.2,
        state_file: Path | None = None,
        node_labels: Mapping[str, str] | None = None,
        health_api: str | None = HEALTH_V1ALPHA1,
        health_retry_interval_s: float = DEFAULT_HEALTH_RETRY_S,
    ) -> None:
        """Set up the kubelet; nothing runs before ``start``.

        ``health_api``: the health stream version to watch (v1alpha1 as a 1.36 kubelet, v1 as
        a 1.37 one), or None for a kubelet with ``ResourceHealthStatus`` off (§3).
        """
        self.client = client
        self.node_name = node_name
        self.registry_dir = Path(registry_dir)
        self.plugins_dir = Path(plugins_dir) if plugins_dir is not None else None
        self.retry_interval_s = retry_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.state_file = state_file
        self.node_labels = objects.node_labels(node_name, node_labels)
        self.plugins = PluginManager(
            registry_dir=self.registry_dir,
            call_timeout_s=call_timeout_s,
            retry_interval_s=retry_interval_s,
            wiping_delay_s=wiping_delay_s,
            wipe_driver=self._wipe_driver_slices,
            poll_interval_s=poll_interval_s,
            health=(
                None
                if health_api is None
                else HealthWatcher(api=health_api, retry_interval_s=health_retry_interval_s)
            ),
        )
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._pods: dict[str, _PodRecord] = {}
        self._claims: dict[str, _ClaimInfo] = {}
        self._orphans_due = math.inf
        self._sweeping = False
        #: Running pod workers and orphan sweeps, joined by stop().
        self._workers: set[threading.Thread] = set()
        self._watch_stream: Any = None
        self._node_uid = ""
        self._ready_since = dt.datetime.now(dt.UTC)
        self._threads = [
            threading.Thread(target=self._heartbeat, name=f"fakekubelet-heartbeat-{node_name}"),
            threading.Thread(target=self._watch_pods, name=f"fakekubelet-pod-watch-{node_name}"),
            threading.Thread(target=self._dispatch, name=f"fakekubelet-pods-{node_name}"),
        ]
        self._started = False

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeKubelet:
        """Register the node, wipe its slices, then start watching plugins and pods."""
        if self._started:
            raise FakeKubeletError(f"fake kubelet for node {self.node_name} already started")
        self._started = True
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        if self.plugins_dir is not None:
            self.plugins_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_node()
        self._renew_lease()
        # §5 ResourceSlice wiping: at start the kubelet deletes every slice of its node.
        self.client.delete_collection(
            paths.resource_slices(), field_selector=f"spec.nodeName={self.node_name}"
        )
        if self.state_file is not None:
            self._load_checkpoint(self.state_file)
        self.plugins.start()
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        logger.info("fake kubelet for node %s started", self.node_name)
        return self

    def stop(self) -> None:
        """Stop all threads and close plugin connections. The Node object is left in place."""
        self._stop.set()
        with self._lock:
            stream = self._watch_stream
            self._wake.notify_all()
        if stream is not None:
            stream.close()
        # Closing the channels first cancels a call in flight (within 0.5 s) instead of waiting
        # for it to finish.
        self.plugins.stop()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join()
        logger.info("fake kubelet for node %s stopped", self.node_name)

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- queries for tests ----------------------------------------------------------------

    @property
    def node_uid(self) -> str:
        """UID of the Node object (for ResourceSlice ownerReferences)."""
        return self._node_uid

    def prepared_claims(self) -> dict[str, PreparedClaim]:
        """Claims prepared on this node, by claim UID (the kubelet's checkpoint)."""
        with self._lock:
            return {uid: info.snapshot() for uid, info in self._claims.items() if info.prepared}

    def container_cdi_ids(self, pod: str | tuple[str, str]) -> dict[str, list[str]]:
        """CDI device IDs per container of a started pod, by pod UID or (namespace, name)."""
        with self._lock:
            record = self._find_pod(pod)
            if record is None or not record.cdi_ids:
                raise KeyError(f"pod {pod} has not been started by this fake kubelet")
            return {name: list(ids) for name, ids in record.cdi_ids.items()}

    def pod_state(self, pod: str | tuple[str, str]) -> str | None:
        """``starting``, ``running`` or ``terminating``; None for a pod it does not track."""
        with self._lock:
            record = self._find_pod(pod)
            if record is None:
                return None
            if record.deleted or record.terminating:
                return "terminating"
            return "running" if record.started else "starting"

    def pod_errors(self) -> dict[str, str]:
        """The last start/stop error of each pod that has one, by ``namespace/name``."""
        with self._lock:
            return {f"{r.namespace}/{r.name}": r.error for r in self._pods.values() if r.error}

    def registered_plugins(self) -> list[RegisteredPlugin]:
        """Currently registered plugins, oldest first."""
        return self.plugins.registered_plugins()

    def connected_plugins(self) -> list[RegisteredPlugin]:
        """Registered plugins whose gRPC connection is up, oldest first."""
        return self.plugins.connected_plugins()

    def registration_attempts(self) -> list[RegistrationAttempt]:
        """Every registration attempt, in order."""
        return self.plugins.registration_attempts()

    def calls(self, *, method: str | None = None, driver: str | None = None) -> list[PluginCall]:
        """DRA calls made so far, optionally filtered."""
        return [
            call
            for call in self.plugins.calls()
            if (method is None or call.method == method)
            and (driver is None or call.driver == driver)
        ]

    def device_health(self, driver: str) -> dict[tuple[str, str], ReportedHealth]:
        """Health of ``driver``'s devices by (pool, device), from its health stream (§3)."""
        if self.plugins.health is None:
            raise FakeKubeletError(f"the fake kubelet of {self.node_name} watches no health")
        return self.plugins.health.device_health(driver)

    def wait_for_plugin(self, driver: str, *, timeout_s: float = 10.0) -> RegisteredPlugin:
        """Wait until a plugin of ``driver`` is registered; return the newest one."""
        return wait_for(
            lambda: next(
                (p for p in reversed(self.registered_plugins()) if p.driver == driver), None
            ),
            timeout_s=timeout_s,
            description=f"DRA plugin {driver} to register with node {self.node_name}",
            details=self.registration_attempts,
        )

    def _find_pod(self, pod: str | tuple[str, str]) -> _PodRecord | None:
        if isinstance(pod, str):
            return self._pods.get(pod)
        namespace, name = pod
        matches = [r for r in self._pods.values() if (r.namespace, r.name) == (namespace, name)]
        return matches[-1] if matches else None

    # --- node, lease, slices --------------------------------------------------------------

    def _ensure_node(self) -> None:
        """Create or update the Node and post a Ready status."""
        try:
            node = self.client.create(
                paths.nodes(), objects.node_object(self.node_name, self.node_labels)
            )
        except AlreadyExists:
            node = self.client.patch(
                paths.nodes(self.node_name), {"metadata": {"labels": self.node_labels}}
            )
        self._node_uid = str(node["metadata"]["uid"])
        self._post_node_status()

    def _post_node_status(self) -> None:
        now = dt.datetime.now(dt.UTC)
        self.client.patch(
            paths.nodes(self.node_name, subresource="status"),
            {"status": objects.node_status(self.node_name, now, since=self._ready_since)},
        )

    def _renew_lease(self) -> None:
        """Renew the node Lease in kube-node-lease (creating it the first time)."""
        now = dt.datetime.now(dt.UTC)
        lease_path = paths.leases(objects.NODE_LEASE_NAMESPACE, self.node_name)
        try:
            self.client.patch(
                lease_path,
                {"spec": {"holderIdentity": self.node_name, "renewTime": objects.micro_time(now)}},
            )
        except NotFound:
            self.client.create(
                paths.leases(objects.NODE_LEASE_NAMESPACE),
                objects.lease_object(self.node_name, self._node_uid, now),
            )

    def _heartbeat(self) -> None:
        ticks = 0
        while not self._stop.wait(self.heartbeat_interval_s):
            ticks += 1
            try:
                self._renew_lease()
                if ticks % NODE_STATUS_EVERY == 0:
                    self._post_node_status()
            except KubeError as exc:
                logger.warning("node %s heartbeat failed: %s", self.node_name, exc)

    def _wipe_driver_slices(self, driver: str) -> None:
        """§5: a driver without a connected plugin for the delay loses its slices here."""
        logger.info("wiping ResourceSlices of driver %s on node %s", driver, self.node_name)
        self.client.delete_collection(
            paths.resource_slices(),
            field_selector=f"spec.nodeName={self.node_name},spec.driver={driver}",
        )

    # --- pod watch ------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        """List + watch the pods bound to this node (a reflector, minus the cache)."""
        selector = f"spec.nodeName={self.node_name}"
        while not self._stop.is_set():
            try:
                listing = self.client.list(paths.pods(), field_selector=selector)
                self._replace_pods(listing.get("items") or [])
                version = str(listing["metadata"]["resourceVersion"])
                while not self._stop.is_set():
                    stream = self.client.watch(
                        paths.pods(),
                        resource_version=version,
                        field_selector=selector,
                        timeout_s=WATCH_TIMEOUT_S,
                    )
                    with self._lock:
                        self._watch_stream = stream
                        if self._stop.is_set():
                            stream.close()
                    with stream:
                        for event_type, pod in stream:
                            version = str(pod.get("metadata", {}).get("resourceVersion") or version)
                            if event_type != "BOOKMARK":
                                self._on_pod_event(event_type, pod)
            except Gone:
                continue  # resourceVersion too old: list again
            except KubeError as exc:
                if not self._stop.is_set():
                    logger.warning("watching pods of node %s failed: %s", self.node_name, exc)
                    self._stop.wait(1.0)

    def _on_pod_event(self, event_type: str, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid"))
        with self._lock:
            record = self._pods.get(uid)
            if event_type == "DELETED":
                if record is None:
                    if not any(uid in info.pod_uids for info in self._claims.values()):
                        return
                    record = self._pods[uid] = self._new_record(pod)
                record.pod, record.deleted, record.due = pod, True, 0.0
            elif record is None:
                self._pods[uid] = self._new_record(pod)
            else:
                record.pod = pod
                if meta.get("deletionTimestamp") and not record.terminating:
                    record.terminating, record.due = True, 0.0
                elif not record.started and not record.terminating:
                    record.due = 0.0  # e.g. the resourceclaim controller just filled in status
            self._wake.notify_all()

    @staticmethod
    def _new_record(pod: dict[str, Any]) -> _PodRecord:
        meta = pod.get("metadata") or {}
        return _PodRecord(
            uid=str(meta.get("uid")),
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name")),
            pod=pod,
            terminating=bool(meta.get("deletionTimestamp")),
        )

    def _replace_pods(self, pods: Sequence[dict[str, Any]]) -> None:
        """After a (re)list: new pods are added, vanished ones count as deleted."""
        seen = {str(pod["metadata"]["uid"]) for pod in pods}
        for pod in pods:
            self._on_pod_event("ADDED", pod)
        with self._lock:
            for record in self._pods.values():
                if record.uid not in seen and not record.deleted:
                    record.deleted, record.due = True, 0.0
            # Claims held for pods that no longer exist (e.g. from the checkpoint) are released;
            # the orphan sweep unprepares them (the kubelet's reconcile loop, §5 Unprepare).
            for info in self._claims.values():
                info.pod_uids &= seen | set(self._pods)
            self._orphans_due = 0.0
            self._wake.notify_all()

    # --- pod workers ----------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand due pods to their workers: one sync at a time per pod, pods in parallel.

        As the kubelet's pod workers do, so NodePrepareResources calls for different pods
        overlap while each pod's own syncs keep their order. The orphan sweep runs beside them.
        """
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                due = [r for r in self._pods.values() if r.due <= now and not r.syncing]
                for record in due:
                    record.due, record.syncing = math.inf, True
                sweep = self._orphans_due <= now and not self._sweeping
                if sweep:
                    self._orphans_due, self._sweeping = math.inf, True
                if not due and not sweep:
                    waiting = [r.due for r in self._pods.values() if not r.syncing]
                    next_due = min([*waiting, self._orphans_due])
                    self._wake.wait(timeout=min(max(next_due - now, 0.01), 0.5))
                    continue
                for record in due:
                    self._spawn(
                        self._pod_worker,
                        record,
                        name=f"fakekubelet-pod-{record.namespace}/{record.name}",
                    )
                if sweep:
                    self._spawn(self._sweep_orphans, None, name="fakekubelet-orphans")

    def _spawn(self, target: Callable[[Any], None], record: Any, *, name: str) -> None:
        """Start a tracked worker thread (lock held)."""

        def run() -> None:
            try:
                target(record)
            finally:
                with self._lock:
                    self._workers.discard(threading.current_thread())
                    self._wake.notify_all()

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._workers.add(thread)
        thread.start()

    def _pod_worker(self, record: _PodRecord) -> None:
        try:
            if not self._stop.is_set():
                self._sync_pod(record)
        finally:
            with self._lock:
                record.syncing = False

    def _sweep_orphans(self, _: None) -> None:
        """The kubelet's reconcile loop: unprepare claims no pod on the node uses (§5)."""
        try:
            if not self._stop.is_set():
                self._unprepare_orphans(None)
        except (FakeKubeletError, KubeError) as exc:
            logger.warning("unprepare of orphaned claims failed: %s", exc)
            with self._lock:
                self._orphans_due = time.monotonic() + self.retry_interval_s
        finally:
            with self._lock:
                self._sweeping = False

    def _sync_pod(self, record: _PodRecord) -> None:
        """Start, or tear down, one pod; failures are retried later (§5 Prepare)."""
        with self._lock:
            pod = record.pod
            deleted, started = record.deleted, record.started
            terminating = deleted or bool(pod.get("metadata", {}).get("deletionTimestamp"))
        retry_at = math.inf
        error: str | None = None
        try:
            if terminating:
                self._stop_pod(record, deleted=deleted)
            elif not started:
                self._start_pod(record, pod)
        except PodNotReadyError as exc:
            error, retry_at = str(exc), time.monotonic() + NOT_READY_RECHECK_S
        except (FakeKubeletError, KubeError) as exc:
            error, retry_at = str(exc), time.monotonic() + self.retry_interval_s
            logger.warning("pod %s/%s: %s", record.namespace, record.name, exc)
        except Exception as exc:
            error, retry_at = repr(exc), time.monotonic() + self.retry_interval_s
            logger.exception("pod %s/%s: unexpected failure", record.namespace, record.name)
        with self._lock:
            record.error = error
            record.due = min(record.due, retry_at)

    def _start_pod(self, record: _PodRecord, pod: dict[str, Any]) -> None:
        """Read the pod's claims, prepare them, then report the pod Running (§5 Prepare)."""
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        pod_claims = claimlib.resolve_pod_claims(pod)
        claim_objects: dict[str, dict[str, Any]] = {}
        for pod_claim in pod_claims:
            try:
                claim = self.client.get(
                    paths.resource_claims(record.namespace, pod_claim.claim_name)
                )
            except NotFound:
                raise PodNotReadyError(
                    f"ResourceClaim {record.namespace}/{pod_claim.claim_name} not found"
                ) from None
            claimlib.check_claim_for_pod(claim, pod, pod_claim)
            claim_objects[pod_claim.claim_name] = claim
        self._prepare(record.uid, claim_objects.values())
        with self._lock:
            devices_by_name = {
                name: self._claims[str(claim["metadata"]["uid"])].snapshot().devices
                for name, claim in claim_objects.items()
            }
            record.cdi_ids = claimlib.container_cdi_ids(pod, pod_claims, devices_by_name)
        self.client.patch(
            paths.pods(record.namespace, record.name, subresource="status"),
            {
                "metadata": {"uid": record.uid},
                "status": objects.running_pod_status(pod, dt.datetime.now(dt.UTC)),
            },
        )
        with self._lock:
            record.started = True
        logger.info("pod %s/%s is running on %s", record.namespace, record.name, self.node_name)

    def _prepare(self, pod_uid: str, claims: Iterable[dict[str, Any]]) -> None:
        """One NodePrepareResources per driver with the pod's unprepared claims (§5 Prepare).

        A claim already prepared on this node (shared with another pod) is not sent again.
        Claims count as prepared only when every batch succeeded, as in the kubelet.
        """
        claims = list(claims)
        # Validation pass first, as the kubelet does: with a driver not registered the pod
        # fails before its claims enter the claim cache, so deleting it unprepares nothing.
        for claim in claims:
            for driver in claimlib.claim_drivers(claim):
                if not self.plugins.is_registered(driver):
                    raise PluginCallError(f"DRA driver {driver} is not registered")
        batches: dict[str, list[ClaimRef]] = {}
        pending: list[_ClaimInfo] = []
        with self._lock:
            for claim in claims:
                meta = claim["metadata"]
                ref = ClaimRef(
                    namespace=str(meta["namespace"]), name=str(meta["name"]), uid=str(meta["uid"])
                )
                info = self._claims.get(ref.uid)
                if info is None:
                    info = self._claims[ref.uid] = _ClaimInfo(
                        ref=ref, drivers=claimlib.claim_drivers(claim)
                    )
                info.pod_uids.add(pod_uid)
                if info.prepared:
                    continue
                pending.append(info)
                for driver in info.drivers:
                    batches.setdefault(driver, []).append(ref)
            self._save_checkpoint()
        for driver in sorted(batches):
            devices = self.plugins.prepare(driver, batches[driver])
            with self._lock:
                for uid, claim_devices in devices.items():
                    self._claims[uid].devices[driver] = claim_devices
        with self._lock:
            for info in pending:
                info.prepared = True
            self._save_checkpoint()

    def _stop_pod(self, record: _PodRecord, *, deleted: bool) -> None:
        """Release the pod's claims, unprepare unused ones, then force-delete the pod (§5).

        The pod is kept (and this is retried) while an unprepare fails.
        """
        with self._lock:
            for info in self._claims.values():
                if record.uid in info.pod_uids:
                    info.pod_uids.discard(record.uid)
                    record.releasing.add(info.ref.uid)
            self._save_checkpoint()
            releasing = set(record.releasing)
        self._unprepare_orphans(releasing)
        with self._lock:
            record.releasing.clear()
        if not deleted:
            # No container runtime: nothing to wait for, so finish the deletion right away.
            try:
                self.client.delete(
                    paths.pods(record.namespace, record.name),
                    grace_period_s=0,
                    preconditions={"uid": record.uid},
                )
            except (NotFound, Conflict):
                pass  # gone already, or a new pod with the same name
        with self._lock:
            self._pods.pop(record.uid, None)
        logger.info("pod %s/%s stopped on %s", record.namespace, record.name, self.node_name)

    def _unprepare_orphans(self, only: set[str] | None) -> None:
        """NodeUnprepareResources, one call per driver, for claims no pod here uses (§5)."""
        batches: dict[str, list[ClaimRef]] = {}
        unpreparing: list[_ClaimInfo] = []
        with self._lock:
            for uid, info in list(self._claims.items()):
                if info.pod_uids or (only is not None and uid not in only):
                    continue
                if info.unpreparing:
                    continue  # another worker is unpreparing it and retries if that fails
                info.unpreparing = True
                unpreparing.append(info)
                # Every driver of the allocation, prepared or not: the kubelet fills its
                # claim cache from the allocation before it calls, so a prepare that failed
                # (or failed for one driver) is still unprepared.
                for driver in info.drivers:
                    batches.setdefault(driver, []).append(info.ref)
                if not info.drivers:
                    del self._claims[uid]
            self._save_checkpoint()
        errors: list[str] = []
        try:
            for driver in sorted(batches):
                try:
                    self.plugins.unprepare(driver, batches[driver])
                except PluginCallError as exc:
                    errors.append(str(exc))
                    continue
                with self._lock:
                    for ref in batches[driver]:
                        done = self._claims.get(ref.uid)
                        if done is None or done.pod_uids:
                            continue
                        done.devices.pop(driver, None)
                        done.unprepared.add(driver)
                        if done.unprepared >= set(done.drivers):
                            del self._claims[ref.uid]
                    self._save_checkpoint()
        finally:
            with self._lock:
                for info in unpreparing:
                    info.unpreparing = False
        if errors:
            raise PluginCallError("; ".join(errors))

    # --- checkpoint -----------------------------------------------------------------------

    def _save_checkpoint(self) -> None:
        """Write the claim records (caller holds the lock); no-op without a state file."""
        if self.state_file is None:
            return
        save_checkpoint(self.state_file, [info.snapshot() for info in self._claims.values()])

    def _load_checkpoint(self, path: Path) -> None:
        """Restore claim records, counted as unprepared.

        After a restart the kubelet calls Prepare again for the claims of running pods (§5).
        """
        for claim in load_checkpoint(path):
            devices: dict[str, list[PreparedDevice]] = {}
            for device in claim.devices:
                devices.setdefault(device.driver, []).append(device)
            self._claims[claim.uid] = _ClaimInfo(
                ref=claim.ref,
                drivers=claim.drivers,
                devices=devices,
                pod_uids=set(claim.pod_uids),
            )
