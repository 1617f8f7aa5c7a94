"""The ``pluginregistration.Registration`` service: how the kubelet finds the DRA socket.

The kubelet's plugin watcher calls ``GetInfo`` on the registration socket, validates the
answer and reports the outcome with ``NotifyRegistrationStatus`` (kubelet-plugin-protocol.md
§2). ``GetInfo`` must answer fast at all times: some kubelets re-send it as a liveness check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from dra_driver.kubeletplugin._pb import pluginregistration_pb2, pluginregistration_pb2_grpc

logger = logging.getLogger(__name__)

#: The plugin type of DRA drivers (``constants.go``).
DRA_PLUGIN_TYPE = "DRAPlugin"
#: Services we advertise, newest first: the kubelet picks the first one it knows (§2.3).
DRA_SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")
#: The health services, advertised after the DRA ones (which alone decide the DRA version):
#: the 1.37 kubelet calls v1 only, 1.34-1.36 kubelets v1alpha1 only (§3.3).
HEALTH_SERVICES = ("v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth")
#: Everything a plugin that serves device health advertises (the Go helper's list, §0).
DRA_AND_HEALTH_SERVICES = (*DRA_SERVICES, *HEALTH_SERVICES)


class RegistrationServicer:
    """Answers the kubelet's plugin watcher and remembers whether it accepted us.

    ``registered`` is set while the kubelet's last word was "registered" (for tests and a
    liveness check); ``last_error`` holds the kubelet's reason for its last rejection.
    ``on_registered``, if set, is called after each "registered" (the first after start
    included), on the gRPC thread: it must return quickly.
    """

    def __init__(
        self,
        *,
        driver: str,
        endpoint: Path,
        supported_versions: Sequence[str] = DRA_SERVICES,
    ) -> None:
        self.driver = driver
        self.endpoint = endpoint
        self.supported_versions = tuple(supported_versions)
        self.registered = threading.Event()
        self.last_error: str | None = None
        self.on_registered: Callable[[], None] | None = None

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Who we are and where the DRA socket is."""
        return pluginregistration_pb2.PluginInfo(
            type=DRA_PLUGIN_TYPE,
            name=self.driver,
            endpoint=str(self.endpoint),
            supported_versions=list(self.supported_versions),
        )

    def NotifyRegistrationStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Record the kubelet's verdict; a rejection is answered with an error, as in Go."""
        if request.plugin_registered:
            self.last_error = None
            self.registered.set()
            logger.info(
                "registered with the kubelet as DRA driver %s (endpoint %s)",
                self.driver,
                self.endpoint,
            )
            if self.on_registered is not None:
                self.on_registered()
            return pluginregistration_pb2.RegistrationStatusResponse()
        self.registered.clear()
        self.last_error = request.error
        logger.error(
            "the kubelet rejected the registration of DRA driver %s: %s",
            self.driver,
            request.error or "(no reason given)",
        )
        # The Go helper returns a plain error here, which gRPC sends as UNKNOWN.
        context.abort(
            grpc.StatusCode.UNKNOWN,
            f"registration of {self.driver} failed: {request.error or '(no reason given)'}",
        )


def add_registration_service(server: grpc.Server, servicer: RegistrationServicer) -> None:
    """Serve ``servicer`` as ``pluginregistration.Registration`` on ``server``."""
    pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(servicer, server)
