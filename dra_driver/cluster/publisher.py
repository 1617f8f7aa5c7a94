"""Keep a node's pool published as ResourceSlices, like the Go helper's slice controller.

Behaviour (kubelet-plugin-protocol.md §6.5):

- slices are owned by the Node (controller ownerReference), so they go away with it;
- slices are listed and watched with field selectors on the driver and the node only;
- each sync lists the node's slices (a consistent read), diffs them against the desired pool
  and applies the difference: obsolete slices are deleted first (uid + resourceVersion
  preconditions), changed ones updated, missing ones created with a position-prefixed
  ``generateName``, so the allocator's name order equals our device order;
- the pool generation is kept when at most one slice changes and none is added, else bumped;
  ``resourceSliceCount`` is the number of desired slices;
- a slice deleted by someone else (the kubelet wipes a node's slices when it starts, and a
  driver's 30 s after it disappears) is re-created at once: watch events trigger a sync;
- API errors are retried with capped exponential backoff; a failure is logged once when it
  starts (again only if the error turns into another kind) and once when a sync succeeds
  again, never per retry: an API server outage is one warning and one recovery line;
- stopping never deletes slices: during an upgrade the successor takes them over, and devices
  must not vanish from the scheduler's view in between.

Runs in two daemon threads (sync loop and watch); ``stop()`` joins both.
"""

from __future__ import annotations

import copy
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from dra_driver.cluster.gates import CONSUMABLE_CAPACITY, DEVICE_TAINTS, dropped_message
from dra_driver.cluster.kube import paths
from dra_driver.cluster.kube.client import KubeClient, WatchStream
from dra_driver.cluster.kube.errors import ApiError, Gone, KubeError, NotFound, is_unreachable
from dra_driver.cluster.slices import PoolSpec, keep_taint_times

logger = logging.getLogger(__name__)

#: Backoff after a failed sync: starts small (a conflict usually clears at once), caps at 30 s
#: (the kubelet gives a vanished driver 30 s before it wipes slices; we must be back sooner).
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 30.0
#: Each wait is a random part of the backoff, between this share and all of it ("equal
#: jitter"): after a cluster-wide outage every node's plugin would otherwise retry in step.
BACKOFF_JITTER = 0.5
#: A full resync even without events, to repair anything a missed event left behind.
RESYNC_PERIOD_S = 300.0
#: Watch events arrive in bursts (the kubelet deletes slices one by one): wait this long for
#: the burst to end, then sync once.
EVENT_DEBOUNCE_S = 0.1


class SlicePublisher:
    """Publishes one pool and keeps it published until stopped."""

    def __init__(
        self,
        client: KubeClient,
        pool: PoolSpec,
        *,
        sleep: Callable[[float], None] | None = None,
        on_synced: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._pool = pool
        self._on_synced = on_synced
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stopping = threading.Event()
        self._api_back = threading.Event()
        """Set by the watch when a list succeeds: a sync waiting out a backoff goes at once."""
        self._sleep = sleep
        self._node_uid: str | None = None
        self._watch: WatchStream | None = None
        self._threads: list[threading.Thread] = []
        self._failing: str | None = None
        """The kind of the failure being retried (see ``_failure_kind``); None: in sync."""
        self._failing_since = 0.0
        self._dropped_fields = False
        self._dropped_taints = False
        self.syncs = 0
        """Completed syncs (for tests and metrics)."""

    @property
    def consumable_capacity_dropped(self) -> bool:
        """Whether the API server dropped the consumable-capacity fields."""
        return self._dropped_fields

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start publishing in the background; returns at once."""
        self._dirty.set()
        for name, target in (("slice-sync", self._sync_loop), ("slice-watch", self._watch_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def update(self, pool: PoolSpec) -> None:
        """Publish ``pool`` from now on (the node's devices changed)."""
        with self._lock:
            self._pool = pool
        self._dirty.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop both threads. Never deletes slices (see the module docstring)."""
        self._stopping.set()
        self._dirty.set()
        self._api_back.set()
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.close()
        for thread in self._threads:
            thread.join(timeout_s)

    # --- the sync loop ----------------------------------------------------------------------

    def _wait(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self._stopping.wait(seconds)

    def _wait_backoff(self, backoff: float) -> None:
        """Wait a jittered ``backoff``, or less if the watch sees the API server answer again."""
        seconds = backoff * random.uniform(BACKOFF_JITTER, 1.0)
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            self._api_back.wait(seconds)

    def _sync_loop(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while not self._stopping.is_set():
            self._dirty.wait(RESYNC_PERIOD_S)
            if self._stopping.is_set():
                return
            self._wait(EVENT_DEBOUNCE_S)
            self._dirty.clear()
            self._api_back.clear()
            try:
                self.sync_once()
            except KubeError as exc:
                self._note_failure(exc)
                self._dirty.set()
                self._wait_backoff(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_INITIAL_S
            self._note_success()

    def _note_failure(self, exc: KubeError) -> None:
        """Log a failed sync when it is the first of its kind since the last success.

        Retries fail the same way until the cause goes away (an outage, RBAC that forbids the
        write, a policy that rejects it); logging each would print a line per backoff step:
        seven in the first 20 s, then one every 30 s for as long as it lasts.
        """
        kind = _failure_kind(exc)
        if kind == self._failing:
            logger.debug("ResourceSlice sync failed again: %s", exc)
            return
        if self._failing is None:
            self._failing_since = time.monotonic()
        self._failing = kind
        if kind == _UNREACHABLE:
            logger.warning(
                "cannot reach the API server to publish ResourceSlices (%s); "
                "retrying with backoff until it is back",
                exc,
            )
        else:
            logger.error(
                "publishing ResourceSlices failed: %s; retrying with backoff (logged again "
                "only if the error changes)",
                exc,
            )

    def _note_success(self) -> None:
        if self._failing is None:
            return
        down_s = time.monotonic() - self._failing_since
        if self._failing == _UNREACHABLE:
            logger.info(
                "API server reachable again after %.1f s; ResourceSlices are published", down_s
            )
        else:
            logger.info("ResourceSlices published after %.1f s of failed attempts", down_s)
        self._failing = None

    def sync_once(self) -> None:
        """Bring the node's slices in line with the desired pool (one pass)."""
        with self._lock:
            pool = self._pool
        owner_uid = self._owner_uid(pool.node_name)
        existing = self._client.list(paths.resource_slices(), field_selector=_selector(pool))[
            "items"
        ]
        self._apply(pool, owner_uid, existing)
        self.syncs += 1
        if self._on_synced is not None:
            self._on_synced()

    def _owner_uid(self, node_name: str) -> str:
        if self._node_uid is None:
            self._node_uid = str(self._client.get(paths.nodes(node_name))["metadata"]["uid"])
        return self._node_uid

    def _apply(self, pool: PoolSpec, owner_uid: str, existing: list[dict[str, Any]]) -> None:
        desired = [self._effective_devices(list(devices)) for devices in pool.slices]
        highest = max((_generation(s) for s in existing), default=0)
        # A taint that is already published keeps its timeAdded (see keep_taint_times).
        for slice_ in existing:
            position = _position(slice_, pool)
            if position is not None and position < len(desired):
                desired[position] = keep_taint_times(
                    slice_["spec"].get("devices") or [], desired[position]
                )
        matched: dict[int, dict[str, Any]] = {}
        obsolete: list[dict[str, Any]] = []
        for slice_ in sorted(existing, key=lambda s: str(s["metadata"]["name"])):
            position = _position(slice_, pool)
            if (
                position is None
                or position >= len(desired)
                or position in matched
                or _generation(slice_) < highest
                or slice_["spec"].get("pool", {}).get("name") != pool.pool_name
            ):
                obsolete.append(slice_)
            else:
                matched[position] = slice_
        changed = [
            p
            for p, s in matched.items()
            if not _same_content(s, desired[p], len(desired), owner_uid)
        ]
        missing = [p for p in range(len(desired)) if p not in matched]
        keep_generation = highest > 0 and not missing and len(changed) <= 1 and not obsolete
        generation = highest if keep_generation else highest + 1
        if not keep_generation:
            changed = sorted(matched)  # every kept slice moves to the new generation
        for slice_ in obsolete:
            meta = slice_["metadata"]
            try:
                self._client.delete(
                    paths.resource_slices(meta["name"]),
                    preconditions={"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
                )
            except NotFound:
                pass
            logger.info("deleted obsolete ResourceSlice %s", meta["name"])
        for position in changed:
            current = matched[position]
            body = self._slice_body(
                pool, position, desired[position], len(desired), generation, owner_uid
            )
            body["metadata"] = {**current["metadata"], **body["metadata"]}
            body["metadata"].pop("generateName", None)
            stored = self._client.replace(paths.resource_slices(current["metadata"]["name"]), body)
            self._check_dropped(body, stored)
            logger.info(
                "updated ResourceSlice %s (pool generation %d)",
                stored["metadata"]["name"],
                generation,
            )
        for position in missing:
            body = self._slice_body(
                pool, position, desired[position], len(desired), generation, owner_uid
            )
            stored = self._client.create(paths.resource_slices(), body)
            self._check_dropped(body, stored)
            logger.info(
                "created ResourceSlice %s with %d device(s) (pool generation %d)",
                stored["metadata"]["name"],
                len(desired[position]),
                generation,
            )

    def _slice_body(
        self,
        pool: PoolSpec,
        position: int,
        devices: list[dict[str, Any]],
        count: int,
        generation: int,
        owner_uid: str,
    ) -> dict[str, Any]:
        return {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {
                "generateName": _name_prefix(pool, position),
                "ownerReferences": [_owner_reference(pool.node_name, owner_uid)],
            },
            "spec": {
                "driver": pool.driver,
                "nodeName": pool.node_name,
                "pool": {
                    "name": pool.pool_name,
                    "generation": generation,
                    "resourceSliceCount": count,
                },
                "devices": copy.deepcopy(devices),
            },
        }

    def _check_dropped(self, sent: dict[str, Any], stored: dict[str, Any]) -> None:
        sent_shared = any(d.get("allowMultipleAllocations") for d in sent["spec"]["devices"])
        stored_shared = any(
            d.get("allowMultipleAllocations") for d in stored["spec"].get("devices") or []
        )
        if sent_shared and not stored_shared and not self._dropped_fields:
            self._dropped_fields = True
            logger.error(
                dropped_message(
                    CONSUMABLE_CAPACITY, stored["metadata"]["name"], self._server_version()
                )
            )
        sent_taints = any(d.get("taints") for d in sent["spec"]["devices"])
        stored_taints = any(d.get("taints") for d in stored["spec"].get("devices") or [])
        if sent_taints and not stored_taints and not self._dropped_taints:
            self._dropped_taints = True
            logger.error(
                dropped_message(DEVICE_TAINTS, stored["metadata"]["name"], self._server_version())
            )

    def _server_version(self) -> str:
        """The API server's gitVersion for the gate messages; "" when it cannot be read."""
        try:
            return str(self._client.get("/version").get("gitVersion") or "")
        except KubeError:
            return ""

    def _effective_devices(self, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What the server will store: without the sharing fields or taints when it drops them.

        Without this, a server that drops the fields would look different from the desired
        pool after every write, and we would rewrite the slice in a hot loop.
        """
        if not self._dropped_fields and not self._dropped_taints:
            return devices
        stripped = copy.deepcopy(devices)
        for device in stripped:
            if self._dropped_taints:
                device.pop("taints", None)
            if not self._dropped_fields:
                continue
            device.pop("allowMultipleAllocations", None)
            for capacity in device.get("capacity", {}).values():
                capacity.pop("requestPolicy", None)
        return stripped

    # --- the watch --------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        """Mark the pool dirty on any change to our slices made by anyone."""
        resource_version: str | None = None
        backoff = BACKOFF_INITIAL_S
        while not self._stopping.is_set():
            with self._lock:
                pool = self._pool
            try:
                if resource_version is None:
                    listed = self._client.list(
                        paths.resource_slices(), field_selector=_selector(pool)
                    )
                    resource_version = str(listed["metadata"]["resourceVersion"])
                    self._api_back.set()
                stream = self._client.watch(
                    paths.resource_slices(),
                    resource_version=resource_version,
                    field_selector=_selector(pool),
                )
                with self._lock:
                    self._watch = stream
                if self._stopping.is_set():
                    stream.close()
                    return
                for event_type, obj in stream:
                    resource_version = str(
                        obj.get("metadata", {}).get("resourceVersion") or resource_version
                    )
                    if event_type in {"ADDED", "MODIFIED", "DELETED"}:
                        self._dirty.set()
                backoff = BACKOFF_INITIAL_S
            except Gone:
                resource_version = None  # too old: list again
                self._dirty.set()
            except KubeError as exc:
                if self._stopping.is_set():
                    return
                logger.debug("ResourceSlice watch failed: %s", exc)
                self._dirty.set()  # we may have missed a deletion
                resource_version = None
                self._wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            finally:
                with self._lock:
                    self._watch = None


#: The failure kind of every error that means the API server is not there (an outage).
_UNREACHABLE = "unreachable"


def _failure_kind(exc: KubeError) -> str:
    """What a failed sync has in common with its retries: unreachable, or the status."""
    if is_unreachable(exc):
        return _UNREACHABLE
    if isinstance(exc, ApiError):
        return f"{exc.status} {exc.reason}"
    return type(exc).__name__


def _selector(pool: PoolSpec) -> str:
    return f"spec.driver={pool.driver},spec.nodeName={pool.node_name}"


def _name_prefix(pool: PoolSpec, position: int) -> str:
    # Position first, zero-padded hex: the allocator sorts slices by name (first fit).
    return f"{position:05x}-{pool.driver}-{pool.node_name}-"[:_MAX_PREFIX]


#: generateName must leave room for the 5-character random suffix within 253 characters.
_MAX_PREFIX = 253 - 5


def _position(slice_: dict[str, Any], pool: PoolSpec) -> int | None:
    """The position encoded in a slice name we generated, or None for any other name."""
    name = str(slice_["metadata"]["name"])
    head = name.partition("-")[0]
    if not re.fullmatch(r"[0-9a-f]{5,}", head):
        return None
    position = int(head, 16)
    return position if name.startswith(_name_prefix(pool, position)) else None


def _generation(slice_: dict[str, Any]) -> int:
    return int(slice_["spec"].get("pool", {}).get("generation", 0))


def _owner_reference(node_name: str, uid: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": uid, "controller": True}


def _same_content(
    stored: dict[str, Any], devices: list[dict[str, Any]], count: int, owner_uid: str
) -> bool:
    spec = stored["spec"]
    owners = stored["metadata"].get("ownerReferences") or []
    return (
        (spec.get("devices") or []) == devices
        and spec.get("pool", {}).get("resourceSliceCount") == count
        and any(o.get("uid") == owner_uid and o.get("controller") for o in owners)
    )
