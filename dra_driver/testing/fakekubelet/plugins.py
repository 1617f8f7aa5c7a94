"""Plugin registration and DRA calls, as the kubelet's plugin watcher and DRA manager do them.

:class:`PluginManager` owns one thread that polls the registration directory, registers and
deregisters plugins (kubelet-plugin-protocol.md §2.4), and wipes the ResourceSlices of drivers
that stayed away too long (§5 "ResourceSlice wiping"). :meth:`PluginManager.prepare` and
:meth:`PluginManager.unprepare` make the DRA calls on a connection reused per endpoint (§5
"Connection") and check the answers the way the kubelet does (§5 "Prepare", "Unprepare").
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from dra_driver.kubeletplugin._pb import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)
from dra_driver.testing.fakekubelet.health import HealthWatcher
from dra_driver.testing.fakekubelet.model import (
    DRA_V1,
    DRA_V1BETA1,
    PREPARE,
    SUPPORTED_DRA_SERVICES,
    UNPREPARE,
    ClaimRef,
    PluginCall,
    PluginCallError,
    PluginInfo,
    PreparedDevice,
    RegisteredPlugin,
    RegistrationAttempt,
    RegistrationRejectedError,
)

logger = logging.getLogger(__name__)

#: The plugin type constant for DRA drivers (§2.1 ``constants.go``).
DRA_PLUGIN_TYPE = "DRAPlugin"

#: Generated modules per negotiated service (§1.1).
_MODULES: dict[str, tuple[ModuleType, ModuleType]] = {
    DRA_V1: (dra_v1_pb2, dra_v1_pb2_grpc),
    DRA_V1BETA1: (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc),
}


def choose_service(supported_versions: Sequence[str]) -> str:
    """``validateSupportedServices`` (§2.3): the first plugin-listed service we speak."""
    if not supported_versions:
        raise RegistrationRejectedError("empty list of supported versions")
    for version in supported_versions:
        if version in SUPPORTED_DRA_SERVICES:
            return version
    raise RegistrationRejectedError(
        f"none of services supported by the plugin {list(supported_versions)} are supported by "
        f"the kubelet {list(SUPPORTED_DRA_SERVICES)}"
    )


def validate_plugin_info(info: PluginInfo) -> str:
    """Check a GetInfo answer (§2.2-2.4); return the DRA service to use."""
    if info.type != DRA_PLUGIN_TYPE:
        raise RegistrationRejectedError(f"no handler registered for plugin type: {info.type!r}")
    if not info.name:
        raise RegistrationRejectedError("plugin name is empty")
    if not os.path.isabs(info.endpoint):
        raise RegistrationRejectedError(f"endpoint {info.endpoint!r} is not an absolute path")
    if not os.path.exists(info.endpoint):
        raise RegistrationRejectedError(f"endpoint {info.endpoint} does not exist")
    return choose_service(info.supported_versions)


def _rpc_error(exc: grpc.RpcError) -> str:
    """``CODE: details`` of a failed call."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code is not None else 'UNKNOWN'}: {details}"


class _Connection:
    """One gRPC channel to a plugin endpoint, with its connectivity state (§5 Connection)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(f"unix:{endpoint}")
        self.users = 0
        self._state: Any = None
        self.channel.subscribe(self._on_state, try_to_connect=True)

    def _on_state(self, state: Any) -> None:
        self._state = state

    @property
    def is_connected(self) -> bool:
        """False once the channel saw the endpoint fail; unknown counts as connected."""
        return self._state not in (
            grpc.ChannelConnectivity.TRANSIENT_FAILURE,
            grpc.ChannelConnectivity.SHUTDOWN,
        )

    def close(self) -> None:
        self.channel.unsubscribe(self._on_state)
        self.channel.close()


@dataclass(slots=True)
class _Socket:
    """A socket file seen in the registration directory."""

    identity: tuple[int, int]
    """(inode, mtime): a socket re-created under the same name is a new plugin."""
    registration: RegisteredPlugin | None = None
    next_attempt: float = 0.0


class PluginManager:
    """Watches the registration directory and talks to registered DRA plugins. Thread-safe."""

    def __init__(
        self,
        *,
        registry_dir: Path,
        call_timeout_s: float,
        retry_interval_s: float,
        wiping_delay_s: float,
        wipe_driver: Callable[[str], None],
        poll_interval_s: float = 0.2,
        registration_timeout_s: float = 5.0,
        health: HealthWatcher | None = None,
    ) -> None:
        self.registry_dir = registry_dir
        self.call_timeout_s = call_timeout_s
        self.retry_interval_s = retry_interval_s
        self.wiping_delay_s = wiping_delay_s
        self._wipe_driver = wipe_driver
        self.poll_interval_s = poll_interval_s
        self.registration_timeout_s = registration_timeout_s
        #: Opens the health stream of every registered plugin (§3.2); None: gate off.
        self.health = health
        self._lock = threading.Lock()
        self._sockets: dict[str, _Socket] = {}
        self._connections: dict[str, _Connection] = {}
        #: Driver → when its slices get wiped, armed when its last plugin went away (§5).
        self._wipe_at: dict[str, float] = {}
        self._sequence = 0
        self._attempts: list[RegistrationAttempt] = []
        self._calls: list[PluginCall] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fakekubelet-plugins", daemon=True)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching the registration directory."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and close every plugin connection."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.health is not None:
            self.health.stop()
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            connection.close()

    # --- queries for tests ----------------------------------------------------------------

    def registered_plugins(self) -> list[RegisteredPlugin]:
        """Currently registered plugins, oldest first."""
        with self._lock:
            plugins = [s.registration for s in self._sockets.values() if s.registration]
        return sorted(plugins, key=lambda plugin: plugin.sequence)

    def registration_attempts(self) -> list[RegistrationAttempt]:
        """Every registration attempt so far, in order."""
        with self._lock:
            return list(self._attempts)

    def calls(self) -> list[PluginCall]:
        """Every DRA call so far, in order."""
        with self._lock:
            return list(self._calls)

    # --- the watcher thread ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._scan()
                self._wipe_due_drivers()
            except Exception:
                logger.exception("plugin watcher pass failed")
            self._stop.wait(self.poll_interval_s)

    def _scan(self) -> None:
        """One pass of the plugin watcher (§2.4)."""
        found: dict[str, tuple[int, int]] = {}
        try:
            entries = list(os.scandir(self.registry_dir))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            # Sockets only; names starting with '.' are ignored (§2.4).
            if entry.name.startswith(".") or not entry.name.endswith(".sock"):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISSOCK(info.st_mode):
                found[entry.path] = (info.st_ino, info.st_mtime_ns)
        now = time.monotonic()
        with self._lock:
            for path, socket in list(self._sockets.items()):
                if found.get(path) != socket.identity:
                    # Removing the socket file = deregistration (§2.4).
                    self._forget_socket(path, now)
            todo = []
            for path, identity in found.items():
                socket = self._sockets.setdefault(path, _Socket(identity))
                if socket.registration is None and socket.next_attempt <= now:
                    todo.append(path)
        for path in todo:
            if self._stop.is_set():
                return
            self._register(path)

    def _register(self, path: str) -> None:
        """GetInfo → validate → register → NotifyRegistrationStatus (§2.4)."""
        info: PluginInfo | None = None
        try:
            with grpc.insecure_channel(f"unix:{path}") as channel:
                stub = pluginregistration_pb2_grpc.RegistrationStub(channel)
                answer = stub.GetInfo(
                    pluginregistration_pb2.InfoRequest(), timeout=self.registration_timeout_s
                )
                info = PluginInfo(
                    type=answer.type,
                    name=answer.name,
                    endpoint=answer.endpoint,
                    supported_versions=tuple(answer.supported_versions),
                )
                try:
                    service = validate_plugin_info(info)
                except RegistrationRejectedError as exc:
                    error = f"RegisterPlugin error -- plugin registration failed with err: {exc}"
                    self._notify(stub, path, registered=False, error=error)
                    self._record_failure(path, info, error)
                    return
                registration = self._add_registration(path, info, service)
                if registration is None:
                    return  # the socket vanished meanwhile
                # Registered first, then notified: a failed notification does not undo it.
                notify_error = self._notify(stub, path, registered=True, error="")
                with self._lock:
                    self._attempts.append(
                        RegistrationAttempt(path, info, accepted=True, error=notify_error)
                    )
                logger.info(
                    "registered DRA plugin %s at %s (%s, socket %s)",
                    info.name,
                    info.endpoint,
                    service,
                    path,
                )
        except grpc.RpcError as exc:
            self._record_failure(path, info, f"GetInfo failed: {_rpc_error(exc)}")

    def _notify(self, stub: Any, path: str, *, registered: bool, error: str) -> str | None:
        """Send NotifyRegistrationStatus; return a description of a failure to send it."""
        try:
            stub.NotifyRegistrationStatus(
                pluginregistration_pb2.RegistrationStatus(
                    plugin_registered=registered, error=error
                ),
                timeout=self.registration_timeout_s,
            )
        except grpc.RpcError as exc:
            if not registered:
                return None  # the Go library answers a rejection with an error on purpose (§2.2)
            logger.warning("failed to send registration status to %s: %s", path, _rpc_error(exc))
            return f"failed to send registration status: {_rpc_error(exc)}"
        return None

    def _record_failure(self, path: str, info: PluginInfo | None, error: str) -> None:
        """Remember a failed attempt; registration restarts from scratch later (§2.4)."""
        logger.warning("registration of plugin socket %s failed: %s", path, error)
        with self._lock:
            self._attempts.append(RegistrationAttempt(path, info, accepted=False, error=error))
            socket = self._sockets.get(path)
            if socket is not None:
                socket.next_attempt = time.monotonic() + self.retry_interval_s

    def _add_registration(
        self, path: str, info: PluginInfo, service: str
    ) -> RegisteredPlugin | None:
        with self._lock:
            socket = self._sockets.get(path)
            if socket is None:
                return None
            self._sequence += 1
            registration = RegisteredPlugin(
                driver=info.name,
                endpoint=info.endpoint,
                socket_path=path,
                service=service,
                sequence=self._sequence,
                supported_versions=info.supported_versions,
            )
            socket.registration = registration
            # A plugin is back: cancel a pending wipe of its slices (§5).
            self._wipe_at.pop(info.name, None)
            connection = self._connections.get(info.endpoint)
            if connection is None:
                connection = self._connections[info.endpoint] = _Connection(info.endpoint)
            connection.users += 1
            if self.health is not None:
                self.health.watch(
                    driver=info.name, endpoint=info.endpoint, channel=connection.channel
                )
            return registration

    def _forget_socket(self, path: str, now: float) -> None:
        """Drop a socket and its registration; arm the wipe when a driver has none left."""
        socket = self._sockets.pop(path)
        registration = socket.registration
        if registration is None:
            return
        logger.info("DRA plugin %s at socket %s deregistered", registration.driver, path)
        connection = self._connections.get(registration.endpoint)
        if connection is not None:
            connection.users -= 1
            if connection.users <= 0:
                del self._connections[registration.endpoint]
                if self.health is not None:
                    self.health.unwatch(registration.endpoint)
                connection.close()
        if not any(
            s.registration and s.registration.driver == registration.driver
            for s in self._sockets.values()
        ):
            self._wipe_at[registration.driver] = now + self.wiping_delay_s

    def _wipe_due_drivers(self) -> None:
        """Delete the slices of drivers without a plugin for the wiping delay (§5)."""
        now = time.monotonic()
        with self._lock:
            due = [driver for driver, at in self._wipe_at.items() if at <= now]
        for driver in due:
            try:
                self._wipe_driver(driver)
            except Exception as exc:
                logger.warning("wiping ResourceSlices of driver %s failed: %s", driver, exc)
                with self._lock:
                    if driver in self._wipe_at:
                        self._wipe_at[driver] = now + self.retry_interval_s
                continue
            with self._lock:
                if self._wipe_at.get(driver, now + 1) <= now:
                    del self._wipe_at[driver]

    # --- DRA calls ------------------------------------------------------------------------

    def _pick(self, driver: str) -> tuple[RegisteredPlugin, _Connection]:
        """The most recently registered connected plugin of ``driver`` (§4.3)."""
        with self._lock:
            candidates = sorted(
                (s.registration for s in self._sockets.values() if s.registration),
                key=lambda registration: -registration.sequence,
            )
            candidates = [c for c in candidates if c.driver == driver]
            if not candidates:
                raise PluginCallError(f"DRA driver {driver} is not registered")
            for candidate in candidates:
                connection = self._connections[candidate.endpoint]
                if connection.is_connected:
                    return candidate, connection
            return candidates[0], self._connections[candidates[0].endpoint]

    def prepare(self, driver: str, claims: Sequence[ClaimRef]) -> dict[str, list[PreparedDevice]]:
        """One NodePrepareResources call with all ``claims`` for ``driver`` (§5 Prepare).

        Raises :class:`PluginCallError` on a gRPC error, a per-claim error, an unknown claim
        UID or missing entries, as all of them fail the pod start in the kubelet.
        """
        plugin, connection = self._pick(driver)
        pb2, pb2_grpc = _MODULES[plugin.service]
        request = pb2.NodePrepareResourcesRequest(
            claims=[pb2.Claim(namespace=c.namespace, uid=c.uid, name=c.name) for c in claims]
        )
        error: str | None = None
        result: dict[str, list[PreparedDevice]] = {}
        try:
            response = pb2_grpc.DRAPluginStub(connection.channel).NodePrepareResources(
                request, timeout=self.call_timeout_s
            )
        except grpc.RpcError as exc:
            error = f"NodePrepareResources failed: {_rpc_error(exc)}"
        else:
            error, result = self._check_prepare(plugin, claims, response)
        call = PluginCall(
            method=PREPARE,
            driver=driver,
            service=plugin.service,
            endpoint=plugin.endpoint,
            claims=tuple(claims),
            error=error,
            devices=tuple(device for devices in result.values() for device in devices),
        )
        with self._lock:
            self._calls.append(call)
        if error is not None:
            raise PluginCallError(f"driver {driver}: {error}")
        return result

    @staticmethod
    def _check_prepare(
        plugin: RegisteredPlugin, claims: Sequence[ClaimRef], response: Any
    ) -> tuple[str | None, dict[str, list[PreparedDevice]]]:
        """The kubelet's checks of a prepare answer; returns (error, devices by claim UID)."""
        by_uid = {claim.uid: claim for claim in claims}
        result: dict[str, list[PreparedDevice]] = {}
        for uid, claim_result in response.claims.items():
            claim = by_uid.get(uid)
            if claim is None:
                return f"NodePrepareResources returned result for unknown claim UID {uid}", {}
            if claim_result.error:
                return (
                    f"NodePrepareResources failed for claim {claim.namespace}/{claim.name}: "
                    f"{claim_result.error}",
                    {},
                )
            result[uid] = [
                PreparedDevice(
                    driver=plugin.driver,
                    pool=device.pool_name,
                    device=device.device_name,
                    request_names=tuple(device.request_names),
                    cdi_device_ids=tuple(device.cdi_device_ids),
                    share_id=(
                        device.share_id
                        if plugin.service == DRA_V1 and device.HasField("share_id")
                        else None
                    ),
                )
                for device in claim_result.devices
            ]
        missing = len(by_uid) - len(result)
        if missing:
            return f"NodePrepareResources skipped {missing} ResourceClaims", {}
        return None, result

    def unprepare(self, driver: str, claims: Sequence[ClaimRef]) -> None:
        """One NodeUnprepareResources call for ``claims`` (§5 Unprepare); raises on failure."""
        plugin, connection = self._pick(driver)
        pb2, pb2_grpc = _MODULES[plugin.service]
        request = pb2.NodeUnprepareResourcesRequest(
            claims=[pb2.Claim(namespace=c.namespace, uid=c.uid, name=c.name) for c in claims]
        )
        error: str | None = None
        try:
            response = pb2_grpc.DRAPluginStub(connection.channel).NodeUnprepareResources(
                request, timeout=self.call_timeout_s
            )
        except grpc.RpcError as exc:
            error = f"NodeUnprepareResources failed: {_rpc_error(exc)}"
        else:
            by_uid = {claim.uid: claim for claim in claims}
            for uid, claim_result in response.claims.items():
                claim = by_uid.get(uid)
                if claim is None:
                    error = f"NodeUnprepareResources returned result for unknown claim UID {uid}"
                    break
                if claim_result.error:
                    error = (
                        f"NodeUnprepareResources failed for claim {claim.namespace}/{claim.name}: "
                        f"{claim_result.error}"
                    )
                    break
            else:
                missing = len(by_uid) - len(response.claims)
                if missing:
                    error = f"NodeUnprepareResources left out {missing} claims"
        call = PluginCall(
            method=UNPREPARE,
            driver=driver,
            service=plugin.service,
            endpoint=plugin.endpoint,
            claims=tuple(claims),
            error=error,
        )
        with self._lock:
            self._calls.append(call)
        if error is not None:
            raise PluginCallError(f"driver {driver}: {error}")
