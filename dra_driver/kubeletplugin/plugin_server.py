"""Both kubelet-facing servers of one node, wired together: what the Go helper's ``Start`` does.

- DRA socket ``<plugin data dir>/dra.sock``: ``v1.DRAPlugin`` and ``v1beta1.DRAPlugin``.
- Registration socket ``<registrar dir>/<driver>-reg.sock``: ``pluginregistration``.

The DRA server starts first and the registration server last, so the kubelet never learns of
an endpoint that is not serving yet; ``stop`` goes the other way round (the kubelet stops
sending once the registration socket is gone), letting in-flight calls finish.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dra_driver.driver import Plugin
from dra_driver.kube import KubeClient, paths
from dra_driver.kubeletplugin.registration import RegistrationServicer, add_registration_service
from dra_driver.kubeletplugin.server import UnixSocketServer, check_socket_path
from dra_driver.kubeletplugin.servicer import (
    SERIALIZE_LOCK_NAME,
    CallContextInterceptor,
    CallSerializer,
    ClaimGetter,
    DraService,
    add_dra_services,
)

logger = logging.getLogger(__name__)

#: The DRA socket's name in the plugin data dir (the Go helper's default).
DRA_SOCKET_NAME = "dra.sock"
#: Worker threads of the DRA server: the kubelet sends one call per pod and driver, and calls
#: wait for each other (serialized) after reading their claims.
DRA_WORKERS = 8
#: The registration server only answers GetInfo and NotifyRegistrationStatus.
REGISTRATION_WORKERS = 2
#: Registration calls are instant; there is nothing to wait for when stopping.
REGISTRATION_GRACE_S = 1.0


def registration_socket_name(driver: str) -> str:
    """``<driver>-reg.sock``, the Go helper's default (one instance per node at a time)."""
    return f"{driver}-reg.sock"


def claim_getter(client: KubeClient) -> ClaimGetter:
    """Read a ResourceClaim from the API server (``resource.k8s.io/v1``) with ``client``."""

    def get_claim(namespace: str, name: str) -> Mapping[str, Any]:
        return client.get(paths.resource_claims(namespace, name))

    return get_claim


class KubeletPluginServer:
    """The DRA and registration servers of one driver on one node."""

    def __init__(
        self,
        *,
        driver_name: str,
        node_name: str,
        registrar_dir: Path,
        data_dir: Path,
        plugin: Plugin,
        get_claim: ClaimGetter,
        lock_across_processes: bool = True,
    ) -> None:
        """Set up both servers; nothing listens before ``start``.

        Raises ``SocketServerError`` at once if a socket path is too long.

        ``lock_across_processes=False``: serialize calls in this process only, for a Plugin
        that takes ``<data dir>/serialize.lock`` itself (see ``CallSerializer``).
        """
        self.driver_name = driver_name
        self.dra_socket = data_dir / DRA_SOCKET_NAME
        self.registration_socket = registrar_dir / registration_socket_name(driver_name)
        # Fail before anything starts (or is published) when a path cannot work.
        check_socket_path(self.dra_socket)
        check_socket_path(self.registration_socket)
        self.service = DraService(
            plugin=plugin,
            get_claim=get_claim,
            driver=driver_name,
            node_name=node_name,
            serializer=CallSerializer(
                data_dir / SERIALIZE_LOCK_NAME, cross_process=lock_across_processes
            ),
        )
        self.registration = RegistrationServicer(driver=driver_name, endpoint=self.dra_socket)
        interceptor = CallContextInterceptor()
        self._dra = UnixSocketServer(
            self.dra_socket,
            name="dra",
            add_services=lambda server: add_dra_services(server, self.service),
            max_workers=DRA_WORKERS,
            interceptors=[interceptor],
        )
        self._registration = UnixSocketServer(
            self.registration_socket,
            name="registration",
            add_services=lambda server: add_registration_service(server, self.registration),
            max_workers=REGISTRATION_WORKERS,
            interceptors=[interceptor],
        )

    @property
    def registered(self) -> threading.Event:
        """Set while the kubelet has accepted our registration."""
        return self.registration.registered

    def start(self) -> None:
        """Serve DRA first, then offer ourselves to the kubelet; raise ``DriverError``."""
        self._dra.start()
        try:
            self._registration.start()
        except BaseException:
            self._dra.stop(0)
            self.service.close()
            raise
        logger.info(
            "serving DRA (v1, v1beta1) on %s; registering with the kubelet via %s",
            self.dra_socket,
            self.registration_socket,
        )

    def stop(self, grace_s: float) -> None:
        """Deregister first, then let in-flight calls finish (up to ``grace_s``) and stop."""
        self._registration.stop(REGISTRATION_GRACE_S)
        self._dra.stop(grace_s)
        self.service.close()
