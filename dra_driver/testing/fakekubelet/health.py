"""The kubelet's side of the DRA resource-health stream (KEP-4680, reference §3).

What the kubelet does, and so what :class:`HealthWatcher` does:

- it opens ``NodeWatchResources`` to **every** registered plugin, without checking whether the
  plugin advertised a health service (§3.2), using the one API version it speaks: v1alpha1
  for kubelets 1.34-1.36, v1 for 1.37 (§3.3);
- a stream that fails or ends is re-opened every 5 s; ``UNIMPLEMENTED`` means the plugin does
  not do health, and the kubelet stops watching it (§3.2);
- each response carries the plugin's full device list; a device not refreshed within its
  timeout (``health_check_timeout_seconds``, or 30 s when <= 0) counts as Unknown (§3.2).

Health is kept per (driver, pool, device) and read by tests through :meth:`device_health`.
Not modelled: the kubelet writes it into the status of the pods using the devices
(``allocatedResourcesStatus``); nothing here touches a pod.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc

from dra_driver.kubeletplugin._pb import (
    dra_health_v1_pb2,
    dra_health_v1_pb2_grpc,
    dra_health_v1alpha1_pb2,
    dra_health_v1alpha1_pb2_grpc,
)

logger = logging.getLogger(__name__)

#: The health API versions a kubelet may speak (§3.1), by registration string prefix.
HEALTH_V1ALPHA1 = "v1alpha1"
HEALTH_V1 = "v1"
_MODULES: dict[str, tuple[ModuleType, ModuleType]] = {
    HEALTH_V1ALPHA1: (dra_health_v1alpha1_pb2, dra_health_v1alpha1_pb2_grpc),
    HEALTH_V1: (dra_health_v1_pb2, dra_health_v1_pb2_grpc),
}
#: §3.2: a failed stream is retried every 5 s.
DEFAULT_HEALTH_RETRY_S = 5.0
#: §3.2: ``defaultKubeletHealthTimeout``, used when a report gives no timeout of its own.
DEFAULT_HEALTH_TIMEOUT_S = 30.0
#: Stream events kept for tests (a response arrives every few seconds; a demo runs for hours).
MAX_EVENTS = 1000
#: Health as the Pod status spells it (``allocatedResourcesStatus[].resources[].health``).
_HEALTH_NAMES = {0: "Unknown", 1: "Healthy", 2: "Unhealthy"}


@dataclass(frozen=True, slots=True)
class ReportedHealth:
    """The kubelet's view of one device's health."""

    driver: str
    pool: str
    device: str
    health: str
    """``Healthy``, ``Unhealthy`` or ``Unknown`` (also when the last report went stale)."""
    message: str
    last_updated: int
    """Unix seconds, as the plugin reported them."""
    timeout_s: float
    """How long the report is trusted after ``last_updated``."""


@dataclass(frozen=True, slots=True)
class HealthStreamEvent:
    """Something that happened to a health stream, for tests to assert on."""

    driver: str
    endpoint: str
    kind: str
    """``opened``, ``response``, ``ended``, ``failed`` or ``unimplemented``."""
    detail: str = ""


class _Watch:
    """One plugin endpoint's stream, re-opened until stopped or UNIMPLEMENTED."""

    def __init__(
        self, owner: HealthWatcher, *, driver: str, endpoint: str, channel: grpc.Channel
    ) -> None:
        self.owner = owner
        self.driver = driver
        self.endpoint = endpoint
        self.channel = channel
        self.stopping = threading.Event()
        self._call: Any = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, name=f"fakekubelet-health-{driver}", daemon=True
        )

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()

    def _run(self) -> None:
        pb2, pb2_grpc = _MODULES[self.owner.api]
        stub = pb2_grpc.DRAResourceHealthStub(self.channel)
        while not self.stopping.is_set():
            try:
                call = stub.NodeWatchResources(pb2.NodeWatchResourcesRequest())
                with self._lock:
                    self._call = call
                if self.stopping.is_set():
                    call.cancel()
                    return
                self.owner._event(self, "opened")
                for response in call:
                    self.owner._record(self, response)
                self.owner._event(self, "ended")
            except grpc.RpcError as exc:
                if self.stopping.is_set():
                    return
                code = exc.code() if hasattr(exc, "code") else None
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    # §3.2: the plugin does not do health: stop watching it.
                    self.owner._event(self, "unimplemented", str(exc.details()))
                    return
                self.owner._event(
                    self, "failed", f"{code.name if code else 'UNKNOWN'}: {exc.details()}"
                )
            finally:
                with self._lock:
                    self._call = None
            self.stopping.wait(self.owner.retry_interval_s)


class HealthWatcher:
    """Watches the health streams of registered plugins, as the kubelet's DRA manager does.

    Thread-safe; :meth:`watch`/:meth:`unwatch` are called by the plugin manager on
    registration and deregistration.
    """

    def __init__(
        self,
        *,
        api: str = HEALTH_V1ALPHA1,
        retry_interval_s: float = DEFAULT_HEALTH_RETRY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if api not in _MODULES:
            raise ValueError(f"unknown health API {api!r}; use {HEALTH_V1ALPHA1} or {HEALTH_V1}")
        self.api = api
        self.retry_interval_s = retry_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._health: dict[tuple[str, str, str], ReportedHealth] = {}
        self._events: collections.deque[HealthStreamEvent] = collections.deque(maxlen=MAX_EVENTS)

    def watch(self, *, driver: str, endpoint: str, channel: grpc.Channel) -> None:
        """Start watching a newly registered plugin (once per endpoint)."""
        with self._lock:
            if endpoint in self._watches:
                return
            watch = self._watches[endpoint] = _Watch(
                self, driver=driver, endpoint=endpoint, channel=channel
            )
        watch.thread.start()

    def unwatch(self, endpoint: str) -> None:
        """Stop watching a plugin that went away (does not wait for its thread)."""
        with self._lock:
            watch = self._watches.pop(endpoint, None)
        if watch is not None:
            watch.stop()

    def stop(self) -> None:
        """Stop every stream and wait for their threads."""
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        for watch in watches:
            watch.stop()
        for watch in watches:
            watch.thread.join(10)

    # --- queries for tests ----------------------------------------------------------------

    def device_health(self, driver: str | None = None) -> dict[tuple[str, str], ReportedHealth]:
        """Current health by (pool, device), stale reports turned Unknown (§3.2)."""
        now = self._clock()
        with self._lock:
            records = [r for r in self._health.values() if driver in (None, r.driver)]
        result: dict[tuple[str, str], ReportedHealth] = {}
        for record in records:
            if now - record.last_updated > record.timeout_s:
                record = ReportedHealth(
                    driver=record.driver,
                    pool=record.pool,
                    device=record.device,
                    health="Unknown",
                    message=f"no health report for {now - record.last_updated:.0f} s",
                    last_updated=record.last_updated,
                    timeout_s=record.timeout_s,
                )
            result[(record.pool, record.device)] = record
        return result

    def events(self, driver: str | None = None) -> list[HealthStreamEvent]:
        """Every stream event so far, in order."""
        with self._lock:
            return [e for e in self._events if driver in (None, e.driver)]

    # --- called by the stream threads -----------------------------------------------------

    def _event(self, watch: _Watch, kind: str, detail: str = "") -> None:
        if kind in ("failed", "unimplemented"):
            logger.info(
                "health stream of %s at %s %s: %s", watch.driver, watch.endpoint, kind, detail
            )
        with self._lock:
            self._events.append(HealthStreamEvent(watch.driver, watch.endpoint, kind, detail))

    def _record(self, watch: _Watch, response: Any) -> None:
        records = [
            ReportedHealth(
                driver=watch.driver,
                pool=device.device.pool_name,
                device=device.device.device_name,
                health=_HEALTH_NAMES.get(device.health, "Unknown"),
                message=device.message,
                last_updated=device.last_updated_time,
                timeout_s=(
                    float(device.health_check_timeout_seconds)
                    if device.health_check_timeout_seconds > 0
                    else DEFAULT_HEALTH_TIMEOUT_S
                ),
            )
            for device in response.devices
        ]
        with self._lock:
            for record in records:
                self._health[(record.driver, record.pool, record.device)] = record
            self._events.append(
                HealthStreamEvent(watch.driver, watch.endpoint, "response", str(len(records)))
            )
