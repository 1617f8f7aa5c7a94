"""``DRAResourceHealth.NodeWatchResources`` (KEP-4680), v1alpha1 and v1, on the DRA socket.

Kubelets 1.34-1.36 call ``/v1alpha1.DRAResourceHealth/NodeWatchResources``, the 1.37 kubelet
only ``/v1.DRAResourceHealth/NodeWatchResources`` (kubelet-plugin-protocol.md §3.3); both
versions have the same messages, so one implementation serves both. Each stream:

- sends the full device list at once, then again whenever a verdict changes and at least
  every ``resend_interval_s`` (5 s), so the kubelet (which marks a device Unknown after 30 s
  without news) always has a fresh report;
- reports ``pool_name`` = the node name, the health, ``last_updated_time`` = the time of the
  check behind it (a stalled monitor therefore goes Unknown in the kubelet, as it should),
  ``health_check_timeout_seconds`` and ``message`` (cut to the kubelet's 1024 characters);
- ends cleanly (status OK) when the service closes at shutdown, and frees its worker thread
  as soon as the kubelet goes away.

Plumbing only: what "healthy" means is ``dra_driver.node.health``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import grpc

from dra_driver.kubeletplugin._pb import (
    dra_health_v1_pb2,
    dra_health_v1_pb2_grpc,
    dra_health_v1alpha1_pb2,
    dra_health_v1alpha1_pb2_grpc,
)
from dra_driver.node.health import DeviceHealth, HealthBoard, HealthStatus

logger = logging.getLogger(__name__)

#: A stream re-sends the unchanged list this often: well inside the kubelet's 30 s timeout.
RESEND_INTERVAL_S = 5.0
#: How long the kubelet may trust a report (``health_check_timeout_seconds``): its default,
#: stated explicitly. Reports come every 5 s, so 30 s tolerates a few slow checks.
HEALTH_CHECK_TIMEOUT_S = 30
#: The kubelet keeps at most 1024 characters of a message and marks the cut with "...".
MAX_MESSAGE_LENGTH = 1024
#: Each open stream holds a server worker thread for its whole life. The kubelet opens one
#: (re-opening after a failure); a few more leave room for a reconnect overlapping an old
#: stream and for debugging tools, and the cap keeps prepare calls from running out of threads.
MAX_STREAMS = 4

_STATUS_NAMES = {
    HealthStatus.UNKNOWN: "UNKNOWN",
    HealthStatus.HEALTHY: "HEALTHY",
    HealthStatus.UNHEALTHY: "UNHEALTHY",
}


def truncate_message(message: str) -> str:
    """Cut a message to what the kubelet keeps, the way it does (1021 characters + ``...``)."""
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    return message[: MAX_MESSAGE_LENGTH - 3] + "..."


class HealthService:
    """The version-neutral stream: which lists to send, and when. Thread-safe."""

    def __init__(
        self,
        board: HealthBoard,
        *,
        pool_name: str,
        resend_interval_s: float = RESEND_INTERVAL_S,
        max_streams: int = MAX_STREAMS,
    ) -> None:
        self.board = board
        self.pool_name = pool_name
        self.resend_interval_s = resend_interval_s
        self.max_streams = max_streams
        self._lock = threading.Lock()
        self._open = 0
        self._closed = threading.Event()

    @property
    def open_streams(self) -> int:
        """Streams being served right now."""
        with self._lock:
            return self._open

    def close(self) -> None:
        """End every stream (they finish with status OK) and refuse new ones."""
        self._closed.set()
        self.board.wake()

    def watch(self, context: grpc.ServicerContext) -> Iterator[tuple[DeviceHealth, ...]]:
        """Yield device lists for one stream until it is cancelled or the service closes.

        Aborts with RESOURCE_EXHAUSTED beyond ``max_streams`` and UNAVAILABLE once closed.
        """
        with self._lock:
            if self._closed.is_set():
                context.abort(grpc.StatusCode.UNAVAILABLE, "the plugin is shutting down")
            if self._open >= self.max_streams:
                context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"already serving {self._open} health streams (the limit)",
                )
            self._open += 1
        # Wake our wait below when the client goes away, so the thread is freed at once.
        context.add_callback(self.board.wake)
        try:
            snapshot = self.board.snapshot()
            while not snapshot.closed and not self._closed.is_set() and context.is_active():
                yield snapshot.devices
                snapshot = self.board.wait(snapshot.revision, timeout_s=self.resend_interval_s)
        finally:
            with self._lock:
                self._open -= 1


class HealthServicer:
    """``NodeWatchResources`` of one API version (the messages are the same in both)."""

    def __init__(self, service: HealthService, *, pb2: ModuleType, version: str) -> None:
        self.service = service
        self.pb2 = pb2
        self.version = version

    def NodeWatchResources(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        """Stream the health of every device of this node's pool."""
        logger.info("the kubelet opened a %s health stream", self.version)
        sent = 0
        try:
            for devices in self.service.watch(context):
                yield self.response(devices)
                sent += 1
        finally:
            logger.info("%s health stream ended after %d update(s)", self.version, sent)

    def response(self, devices: Sequence[DeviceHealth]) -> Any:
        """The wire message for one full device list."""
        pb2 = self.pb2
        return pb2.NodeWatchResourcesResponse(
            devices=[
                pb2.DeviceHealth(
                    device=pb2.DeviceIdentifier(
                        pool_name=self.service.pool_name, device_name=device.device
                    ),
                    health=pb2.HealthStatus.Value(_STATUS_NAMES[device.status]),
                    last_updated_time=int(device.checked_at),
                    health_check_timeout_seconds=HEALTH_CHECK_TIMEOUT_S,
                    message=truncate_message(device.message),
                )
                for device in devices
            ]
        )


def add_health_services(server: grpc.Server, service: HealthService) -> None:
    """Serve ``service`` as v1 and v1alpha1 ``DRAResourceHealth`` on ``server``."""
    dra_health_v1_pb2_grpc.add_DRAResourceHealthServicer_to_server(
        HealthServicer(service, pb2=dra_health_v1_pb2, version="v1"), server
    )
    dra_health_v1alpha1_pb2_grpc.add_DRAResourceHealthServicer_to_server(
        HealthServicer(service, pb2=dra_health_v1alpha1_pb2, version="v1alpha1"), server
    )
