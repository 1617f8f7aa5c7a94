"""A tiny DRA plugin for the e2e tests (not the real driver).

Real gRPC servers on unix sockets: the registration socket in the fake kubelet's registry dir
and the DRA socket in its plugins dir. Prepare reads the claim from the API server (as the Go
helper does) and answers with one device per allocation result of this driver, CDI ID
``k8s.test.example.com/dev=<claimUID>-<device>[-<shareID>]``. Every request is recorded.
"""

from __future__ import annotations

import os
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from dra_driver.cluster.kube import KubeClient, NotFound, paths
from dra_driver.kubeletplugin._pb import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)

CDI_KIND = "k8s.test.example.com/dev"
ALL_SERVICES = ("v1.DRAPlugin", "v1beta1.DRAPlugin")


def cdi_id(claim_uid: str, device: str, share_id: str | None) -> str:
    """The CDI device ID the stub returns for one allocation result."""
    suffix = f"-{share_id}" if share_id else ""
    return f"{CDI_KIND}={claim_uid}-{device}{suffix}"


@dataclass(frozen=True)
class StubCall:
    """One DRA request the stub received."""

    method: str
    service: str
    claim_uids: tuple[str, ...]


class _DraServicer:
    """NodePrepareResources/NodeUnprepareResources for one API version."""

    def __init__(self, plugin: StubDraPlugin, service: str, pb2: Any) -> None:
        self.plugin = plugin
        self.service = service
        self.pb2 = pb2

    def NodePrepareResources(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.plugin.record(StubCall("NodePrepareResources", self.service, _uids(request)))
        if self.plugin.take_prepare_failure():
            context.abort(grpc.StatusCode.UNAVAILABLE, "stub: injected failure")
        plugin = self.plugin
        if plugin.prepare_barrier is not None:
            try:
                plugin.prepare_barrier.wait()
            except threading.BrokenBarrierError:
                context.abort(grpc.StatusCode.UNAVAILABLE, "stub: no concurrent prepare came")
        if plugin.prepare_gate is not None and not plugin.prepare_gate.wait(30):
            context.abort(grpc.StatusCode.UNAVAILABLE, "stub: prepare gate never opened")
        response = self.pb2.NodePrepareResourcesResponse(
            claims={claim.uid: self._prepare(claim) for claim in request.claims}
        )
        plugin.record(StubCall("NodePrepareResources/done", self.service, _uids(request)))
        return response

    def _prepare(self, claim: Any) -> Any:
        pb2 = self.pb2
        try:
            obj = self.plugin.client.get(paths.resource_claims(claim.namespace, claim.name))
        except NotFound:
            return pb2.NodePrepareResourceResponse(error="claim not found")
        if obj["metadata"]["uid"] != claim.uid:
            return pb2.NodePrepareResourceResponse(error="claim got replaced")
        allocation = (obj.get("status") or {}).get("allocation")
        if not allocation:
            return pb2.NodePrepareResourceResponse(error="claim not allocated")
        devices = []
        for result in allocation["devices"]["results"]:
            if result["driver"] != self.plugin.driver:
                continue
            share_id = result.get("shareID")
            fields: dict[str, Any] = {
                # Base request names: strip a firstAvailable sub-request.
                "request_names": [result["request"].split("/", 1)[0]],
                "pool_name": result["pool"],
                "device_name": result["device"],
                "cdi_device_ids": [cdi_id(claim.uid, result["device"], share_id)],
            }
            if share_id and self.service == "v1.DRAPlugin":
                fields["share_id"] = share_id
            devices.append(pb2.Device(**fields))
        return pb2.NodePrepareResourceResponse(devices=devices)

    def NodeUnprepareResources(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.plugin.record(StubCall("NodeUnprepareResources", self.service, _uids(request)))
        return self.pb2.NodeUnprepareResourcesResponse(
            claims={claim.uid: self.pb2.NodeUnprepareResourceResponse() for claim in request.claims}
        )


def _uids(request: Any) -> tuple[str, ...]:
    return tuple(claim.uid for claim in request.claims)


class _RegistrationServicer:
    def __init__(self, plugin: StubDraPlugin) -> None:
        self.plugin = plugin

    def GetInfo(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pluginregistration_pb2.PluginInfo(
            type=self.plugin.plugin_type,
            name=self.plugin.driver,
            endpoint=str(self.plugin.endpoint),
            supported_versions=list(self.plugin.supported_versions),
        )

    def NotifyRegistrationStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.plugin.lock:
            self.plugin.registration_statuses.append((request.plugin_registered, request.error))
        if not request.plugin_registered:
            # What the Go helper does: record and answer with an error (reference §2.2).
            context.abort(grpc.StatusCode.UNKNOWN, f"registration failed: {request.error}")
        return pluginregistration_pb2.RegistrationStatusResponse()


class StubDraPlugin:
    """Registration + DRA gRPC servers for one driver on one fake node."""

    def __init__(
        self,
        *,
        client: KubeClient,
        driver: str,
        registry_dir: Path,
        plugins_dir: Path,
        services: tuple[str, ...] = ALL_SERVICES,
        supported_versions: tuple[str, ...] | None = None,
        plugin_type: str = "DRAPlugin",
        prepare_failures: int = 0,
        prepare_barrier: threading.Barrier | None = None,
        prepare_gate: threading.Event | None = None,
    ) -> None:
        """``prepare_barrier``: every prepare waits for it (fails when it breaks);
        ``prepare_gate``: every prepare waits until it is set. Finished prepares are recorded
        as ``NodePrepareResources/done``.
        """
        self.client = client
        self.driver = driver
        self.services = services
        self.supported_versions = services if supported_versions is None else supported_versions
        self.plugin_type = plugin_type
        self.registration_socket = registry_dir / f"{driver}-reg.sock"
        self.endpoint = plugins_dir / driver / "dra.sock"
        self.lock = threading.Lock()
        self.calls: list[StubCall] = []
        self.registration_statuses: list[tuple[bool, str]] = []
        self._prepare_failures = prepare_failures
        self.prepare_barrier = prepare_barrier
        self.prepare_gate = prepare_gate
        self._servers: list[Any] = []

    def record(self, call: StubCall) -> None:
        with self.lock:
            self.calls.append(call)

    def take_prepare_failure(self) -> bool:
        """True for the first ``prepare_failures`` prepare calls."""
        with self.lock:
            if self._prepare_failures <= 0:
                return False
            self._prepare_failures -= 1
            return True

    def recorded(self, method: str) -> list[StubCall]:
        with self.lock:
            return [call for call in self.calls if call.method == method]

    def start(self) -> StubDraPlugin:
        """DRA socket first, registration socket last (reference §0)."""
        self.endpoint.parent.mkdir(parents=True, exist_ok=True)
        dra = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        if "v1.DRAPlugin" in self.services:
            dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(
                _DraServicer(self, "v1.DRAPlugin", dra_v1_pb2), dra
            )
        if "v1beta1.DRAPlugin" in self.services:
            dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(
                _DraServicer(self, "v1beta1.DRAPlugin", dra_v1beta1_pb2), dra
            )
        self._listen(dra, self.endpoint)
        registration = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(
            _RegistrationServicer(self), registration
        )
        # gRPC binds a hidden name (the kubelet ignores it) and unlinks only that one when it
        # stops; the registration socket is a second link to the same socket, so kill() can
        # leave it behind as a SIGKILLed process does.
        bound = self.registration_socket.with_name(f".{self.registration_socket.name}")
        self._listen(registration, bound)
        self.registration_socket.unlink(missing_ok=True)
        os.link(bound, self.registration_socket)
        return self

    def _listen(self, server: Any, path: Path) -> None:
        assert len(str(path).encode()) < 108, f"socket path too long: {path}"
        path.unlink(missing_ok=True)
        assert server.add_insecure_port(f"unix:{path}") != 0
        server.start()
        self._servers.append(server)

    def kill(self) -> None:
        """Stop serving and leave the registration socket file behind, as a SIGKILLed plugin
        does: the kubelet sees a dead socket, not a removed one."""
        for server in reversed(self._servers):
            server.stop(grace=None).wait()
        self._servers.clear()

    def stop(self) -> None:
        """Deregister (remove the registration socket) first, then stop serving."""
        self.registration_socket.unlink(missing_ok=True)
        for server in reversed(self._servers):
            server.stop(grace=None).wait()
        self._servers.clear()
        self.endpoint.unlink(missing_ok=True)
