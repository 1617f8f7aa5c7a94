"""Both kubelet-facing servers of one node, wired together: what the Go helper's ``Start`` does.

- DRA socket ``<plugin data dir>/dra.sock``: ``v1.DRAPlugin`` and ``v1beta1.DRAPlugin``, and
  with a health board ``v1.DRAResourceHealth`` and ``v1alpha1.DRAResourceHealth`` (without
  one they are neither served nor advertised: the kubelet gets UNIMPLEMENTED and stops
  watching, §3.2).
- Registration socket ``<registrar dir>/<driver>-reg.sock``: ``pluginregistration``.

With a pod UID (``--rolling-update``) every instance has sockets of its own, so an old and a
new instance can serve side by side during a DaemonSet rolling update: ``dra-<podUID>.sock``
and ``<driver>-<podUID>-reg.sock``, the Go helper's names (kubelet-plugin-protocol.md §4).
A registration name that would make the path too long for ``sun_path`` is shortened by
hashing, with the Go helper's three candidates (§4.2); sockets of other instances are never
touched (the other instance may be alive and serving).

The DRA server starts first and the registration server last, so the kubelet never learns of
an endpoint that is not serving yet; ``stop`` goes the other way round (the kubelet stops
sending once the registration socket is gone), letting in-flight calls finish.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.kubeletplugin.health_servicer import (
    MAX_STREAMS,
    HealthService,
    add_health_services,
)
from dra_driver.kubeletplugin.registration import (
    DRA_AND_HEALTH_SERVICES,
    DRA_SERVICES,
    RegistrationServicer,
    add_registration_service,
)
from dra_driver.kubeletplugin.server import (
    MAX_SOCKET_PATH_BYTES,
    UnixSocketServer,
    check_socket_path,
)
from dra_driver.kubeletplugin.servicer import (
    SERIALIZE_LOCK_NAME,
    CallContextInterceptor,
    CallSerializer,
    ClaimGetter,
    DraService,
    add_dra_services,
)
from dra_driver.node.health import HealthBoard
from dra_driver.prepare.driver import Plugin

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


def registration_socket_name(
    driver: str, *, pod_uid: str | None = None, registrar_dir: Path | None = None
) -> str:
    """The registration socket's file name in ``registrar_dir``.

    Without ``pod_uid``: ``<driver>-reg.sock``, the Go helper's default (one instance per node
    at a time). With it, the first of the Go helper's rolling-update candidates
    (``RollingUpdateRegistrarSocketFile``, kubelet-plugin-protocol.md §4.2) whose full path
    fits: ``<driver>-<podUID>-reg.sock``, then ``<driver>-<B1>-reg.sock``, then
    ``dra-<B2>-reg.sock`` (returned even if it does not fit; the server then refuses the path
    with a clear message). ``B1``/``B2`` are unpadded base64url of the first 8/16 bytes of
    SHA-256(podUID) / SHA-256(driver NUL podUID).

    "Fits" means at most ``MAX_SOCKET_PATH_BYTES`` (107) bytes, one byte stricter than the Go
    helper's 108: our server needs room for the terminating NUL, and the example chart is as
    strict. Names only differ from Go's for a path of exactly 108 bytes.
    """
    if pod_uid is None:
        return f"{driver}-reg.sock"
    b1 = _b64(hashlib.sha256(pod_uid.encode()).digest()[:8])
    b2 = _b64(hashlib.sha256(f"{driver}\0{pod_uid}".encode()).digest()[:16])
    candidates = (f"{driver}-{pod_uid}-reg.sock", f"{driver}-{b1}-reg.sock", f"dra-{b2}-reg.sock")
    return _first_fitting(registrar_dir, candidates)


def dra_socket_name(*, pod_uid: str | None = None, data_dir: Path | None = None) -> str:
    """The DRA socket's file name in the plugin data dir.

    ``dra.sock`` without ``pod_uid``; ``dra-<podUID>.sock`` with it (the Go helper's names).
    The Go helper never shortens this one; we fall back to ``dra-<B1>.sock`` (``B1`` as for
    the registration socket) when the full path would not fit, since the kubelet learns the
    endpoint from GetInfo and any unique name works.
    """
    if pod_uid is None:
        return DRA_SOCKET_NAME
    b1 = _b64(hashlib.sha256(pod_uid.encode()).digest()[:8])
    return _first_fitting(data_dir, (f"dra-{pod_uid}.sock", f"dra-{b1}.sock"))


def _first_fitting(directory: Path | None, candidates: tuple[str, ...]) -> str:
    """The first candidate whose path in ``directory`` fits in ``sun_path``, else the last."""
    if directory is None:
        return candidates[0]
    for name in candidates:
        if len(os.fsencode(directory / name)) <= MAX_SOCKET_PATH_BYTES:
            return name
    return candidates[-1]


def _b64(digest: bytes) -> str:
    """Unpadded base64url: file-name safe, as Go's ``base64.RawURLEncoding``."""
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def claim_getter(client: KubeClient) -> ClaimGetter:
    """Read a ResourceClaim from the API server (``resource.k8s.io/v1``) with ``client``.

    Through the client's kept-open ``reader``, not urllib3: this read is on every prepare.
    """
    reader = client.reader

    def get_claim(namespace: str, name: str) -> Mapping[str, Any]:
        return reader.get(paths.resource_claims(namespace, name))

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
        pod_uid: str | None = None,
        health: HealthBoard | None = None,
    ) -> None:
        """Set up both servers; nothing listens before ``start``.

        Raises ``SocketServerError`` at once if a socket path is too long.

        ``lock_across_processes=False``: serialize calls in this process only, for a Plugin
        that takes ``<data dir>/serialize.lock`` itself (see ``CallSerializer``).
        ``pod_uid``: socket names of their own for this instance (a rolling update).
        ``health``: serve and advertise the device health stream from this board.
        """
        self.driver_name = driver_name
        self.dra_socket = data_dir / dra_socket_name(pod_uid=pod_uid, data_dir=data_dir)
        self.registration_socket = registrar_dir / registration_socket_name(
            driver_name, pod_uid=pod_uid, registrar_dir=registrar_dir
        )
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
        self.health = None if health is None else HealthService(health, pool_name=node_name)
        self.registration = RegistrationServicer(
            driver=driver_name,
            endpoint=self.dra_socket,
            supported_versions=DRA_SERVICES if health is None else DRA_AND_HEALTH_SERVICES,
        )
        interceptor = CallContextInterceptor()
        self._dra = UnixSocketServer(
            self.dra_socket,
            name="dra",
            add_services=self._add_dra_services,
            # Every open health stream holds a worker for its whole life.
            max_workers=DRA_WORKERS + (0 if health is None else MAX_STREAMS),
            interceptors=[interceptor],
        )
        self._registration = UnixSocketServer(
            self.registration_socket,
            name="registration",
            add_services=lambda server: add_registration_service(server, self.registration),
            max_workers=REGISTRATION_WORKERS,
            interceptors=[interceptor],
        )

    def _add_dra_services(self, server: Any) -> None:
        add_dra_services(server, self.service)
        if self.health is not None:
            add_health_services(server, self.health)

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
            "serving DRA (v1, v1beta1)%s on %s; registering with the kubelet via %s",
            "" if self.health is None else " and device health (v1, v1alpha1)",
            self.dra_socket,
            self.registration_socket,
        )

    def stop(self, grace_s: float) -> None:
        """Deregister first, then let in-flight calls finish (up to ``grace_s``) and stop."""
        self._registration.stop(REGISTRATION_GRACE_S)
        if self.health is not None:
            self.health.close()  # health streams end now; the grace is for prepare calls
        self._dra.stop(grace_s)
        self.service.close()
