"""The liveness endpoint: the standard ``grpc.health.v1.Health`` service on a TCP port.

The chart's liveness probe (a kubelet gRPC probe, ``service: liveness``) calls ``Check``, which
answers SERVING only if the plugin's own sockets answer right now:

- the registration socket: ``GetInfo``, what the kubelet's plugin watcher calls;
- the DRA socket: an empty ``NodePrepareResources`` (v1), which touches no claim and takes no
  lock, so it answers at once even while a long prepare runs.

Anything else is NOT_SERVING, and after a few of those the kubelet restarts the container,
which is the point: a plugin whose sockets are gone or hung cannot prepare claims.
dra-example-driver's ``health.go`` checks the same two calls. Each check opens fresh
connections: a socket file deleted under a running server keeps old connections working,
but the kubelet cannot connect any more, and only a new connection notices.

Services: ``liveness`` (the example driver's name) and ``""`` (the whole server) are checked;
any other name is NOT_FOUND, as the health protocol says. ``Watch`` and ``List`` are
UNIMPLEMENTED (probes only call ``Check``).

Listens on every interface (``[::]``, which takes IPv4 too): the kubelet runs gRPC probes
against the pod's IP from the node's network namespace, so with ``hostNetwork: false`` a
server on 127.0.0.1 would be unreachable. The service tells nothing but up or down.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dra_driver.errors import DriverError
from dra_driver.kubeletplugin._pb import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)

logger = logging.getLogger(__name__)

#: The service name the chart's probe asks for (the example driver's), and the whole server.
CHECKED_SERVICES = frozenset({"liveness", ""})
#: Every interface, IPv6 and IPv4 (see the module docstring).
ALL_INTERFACES = "[::]"
#: Per socket: both calls answer in about a millisecond; a plugin that needs a second to say
#: hello is hung. Two of them fit well inside a probe timeout of a few seconds.
PROBE_TIMEOUT_S = 1.0
#: The probe checks one call at a time; a second worker answers a concurrent probe.
LIVENESS_WORKERS = 2

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class LivenessServerError(DriverError):
    """The liveness endpoint cannot listen (port in use, bad address)."""


def check_sockets(
    *, registration_socket: Path, dra_socket: Path, timeout_s: float = PROBE_TIMEOUT_S
) -> str | None:
    """Call both sockets over fresh connections; None when both answer, else the problem."""
    try:
        with grpc.insecure_channel(f"unix:{registration_socket}") as channel:
            pluginregistration_pb2_grpc.RegistrationStub(channel).GetInfo(
                pluginregistration_pb2.InfoRequest(), timeout=timeout_s
            )
    except grpc.RpcError as exc:
        return _problem("registration", registration_socket, exc)
    try:
        with grpc.insecure_channel(f"unix:{dra_socket}") as channel:
            dra_v1_pb2_grpc.DRAPluginStub(channel).NodePrepareResources(
                dra_v1_pb2.NodePrepareResourcesRequest(), timeout=timeout_s
            )
    except grpc.RpcError as exc:
        return _problem("DRA", dra_socket, exc)
    return None


def _problem(what: str, path: Path, exc: grpc.RpcError) -> str:
    return f"the {what} socket {path} does not answer: {exc.code().name} {exc.details()}"


class LivenessServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # untyped base
    """``Check``: probe the plugin's sockets. Thread-safe.

    Once ``shutting_down`` is set (``shut_down``, or the daemon's own stop event passed in),
    every check is NOT_SERVING without probing: the sockets are about to go, and saying so
    first is the graceful-shutdown order.
    """

    def __init__(
        self,
        *,
        registration_socket: Path,
        dra_socket: Path,
        timeout_s: float = PROBE_TIMEOUT_S,
        shutting_down: threading.Event | None = None,
    ) -> None:
        self.registration_socket = registration_socket
        self.dra_socket = dra_socket
        self.timeout_s = timeout_s
        self.shutting_down = shutting_down or threading.Event()
        self._lock = threading.Lock()
        self._last_problem: str | None = None

    def shut_down(self) -> None:
        """Answer NOT_SERVING from now on."""
        self.shutting_down.set()

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """SERVING if both sockets answer, else NOT_SERVING; NOT_FOUND for other services."""
        if request.service not in CHECKED_SERVICES:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown service {request.service!r}; ask for 'liveness' or ''",
            )
        if self.shutting_down.is_set():
            return health_pb2.HealthCheckResponse(status=NOT_SERVING)
        problem = check_sockets(
            registration_socket=self.registration_socket,
            dra_socket=self.dra_socket,
            timeout_s=self._timeout(context),
        )
        self._note(problem)
        return health_pb2.HealthCheckResponse(status=NOT_SERVING if problem else SERVING)

    def _timeout(self, context: grpc.ServicerContext) -> float:
        """Per socket: ours, or less so both fit in the prober's deadline."""
        remaining = context.time_remaining()
        if remaining is None:
            return self.timeout_s
        return max(min(self.timeout_s, float(remaining) / 2 - 0.05), 0.01)

    def _note(self, problem: str | None) -> None:
        """Log changes only: a probe every few seconds must not flood the log."""
        with self._lock:
            changed, self._last_problem = problem != self._last_problem, problem
        if not changed:
            return
        if problem is None:
            logger.info("liveness: the plugin's sockets answer again")
        else:
            logger.warning("liveness: NOT_SERVING: %s", problem)


class LivenessServer:
    """``grpc.health.v1.Health`` on ``host:port``. Start once, stop once."""

    def __init__(self, servicer: LivenessServicer, *, port: int, host: str = ALL_INTERFACES):
        self.servicer = servicer
        self.host = host
        self.port = port
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Listen and serve; ``port`` becomes the bound port. Raises ``LivenessServerError``."""
        executor = ThreadPoolExecutor(max_workers=LIVENESS_WORKERS, thread_name_prefix="liveness")
        # gRPC sets SO_REUSEPORT by default, so a second server (another instance on the host
        # network) would silently share the port and answer for us: make that a bind error.
        server = grpc.server(executor, options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        address = f"{self.host}:{self.port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            bound, reason = 0, f": {exc}"
        else:
            reason = ""
        if not bound:
            executor.shutdown(wait=False)
            raise LivenessServerError(
                f"cannot serve the liveness endpoint on {address}{reason}; is the port in use? "
                "choose another --healthcheck-port"
            )
        server.start()
        self._server, self._executor, self.port = server, executor, bound
        logger.info(
            "serving gRPC liveness (grpc.health.v1, service 'liveness') on %s:%d", self.host, bound
        )

    def stop(self, grace_s: float = 1.0) -> None:
        """Answer NOT_SERVING to probes still arriving, then stop."""
        self.servicer.shut_down()
        server, self._server = self._server, None
        if server is None:
            return
        started = time.monotonic()
        server.stop(grace_s).wait()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        logger.debug("liveness server stopped in %.0f ms", (time.monotonic() - started) * 1000)
