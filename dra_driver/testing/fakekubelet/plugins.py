"""Plugin registration and DRA calls, as the kubelet's plugin watcher and DRA manager do them.

:class:`PluginManager` owns one thread that walks the registration directory tree and starts a
registration attempt per new socket, each in its own thread (kubelet-plugin-protocol.md §2.4;
kubelet ``pluginmanager/pluginwatcher``, ``operationexecutor``). Every registered plugin gets
its own gRPC connection whose state decides whether the driver counts as connected, and a
driver without a connected plugin loses its ResourceSlices after the wiping delay (§5
"ResourceSlice wiping"; kubelet ``cm/dra/plugin/dra_plugin_manager.go``).
:meth:`PluginManager.prepare` and :meth:`PluginManager.unprepare` make the DRA calls on that
connection (§5 "Connection") and check the answers the way the kubelet does (§5 "Prepare",
"Unprepare"). Differences from the kubelet v1.36.3 that remain are listed in :mod:`.kubelet`.
"""

from __future__ import annotations

import json
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
#: The kubelet gives GetInfo one second (``operation_generator.go``:
#: ``context.WithTimeout(ctx, time.Second)``); a slower plugin is not registered.
GET_INFO_TIMEOUT_S = 1.0
#: The kubelet's blocking dial of a registration socket (``dialTimeoutDuration``).
DIAL_TIMEOUT_S = 10.0
#: The kubelet's deadline for NotifyRegistrationStatus (``notifyTimeoutDuration``).
NOTIFY_TIMEOUT_S = 5.0
#: How often a registration attempt waiting for its dial checks whether we are stopping.
_STOP_CHECK_S = 0.1
#: A channel that had connectivity subscribers is closed this much later: gRPC's poller
#: thread wakes every 0.2 s and may still use the channel once (it then raises "Channel
#: closed!" in its own thread); after two of its periods it has let go.
_CLOSE_DELAY_S = 0.5


def _close_later(channel: grpc.Channel) -> None:
    """Close ``channel`` after ``_CLOSE_DELAY_S``, once gRPC's connectivity poller let go."""
    timer = threading.Timer(_CLOSE_DELAY_S, channel.close)
    timer.daemon = True
    timer.start()


#: Generated modules per negotiated service (§1.1).
_MODULES: dict[str, tuple[ModuleType, ModuleType]] = {
    DRA_V1: (dra_v1_pb2, dra_v1_pb2_grpc),
    DRA_V1BETA1: (dra_v1beta1_pb2, dra_v1beta1_pb2_grpc),
}


def _go_quote(values: Sequence[str]) -> str:
    """A string slice as Go's ``%q`` prints it: ``["a" "b"]``."""
    return "[" + " ".join(json.dumps(value, ensure_ascii=False) for value in values) + "]"


def choose_service(supported_versions: Sequence[str]) -> str:
    """``validateSupportedServices`` (§2.3): the first plugin-listed service we speak.

    Raises :class:`RegistrationRejectedError` with the kubelet's own reason.
    """
    if not supported_versions:
        raise RegistrationRejectedError(
            "empty list of supported gRPC services (aka supported versions)"
        )
    for version in supported_versions:
        if version in SUPPORTED_DRA_SERVICES:
            return version
    raise RegistrationRejectedError(
        f"none of services supported by the plugin ({_go_quote(supported_versions)}) "
        f"are supported by the kubelet ({_go_quote(SUPPORTED_DRA_SERVICES)})"
    )


def plugin_endpoint(info: PluginInfo, socket_path: str) -> str:
    """The DRA endpoint of a plugin: an empty ``endpoint`` means the registration socket.

    The kubelet's operation generator substitutes the socket path before it validates or
    registers the plugin, so the DRA service is then expected on the registration socket.
    """
    return info.endpoint or socket_path


def validate_plugin_info(info: PluginInfo, socket_path: str) -> str:
    """Check a GetInfo answer as the kubelet does; return the DRA service to use.

    Raises :class:`RegistrationRejectedError` whose text is exactly the ``error`` the kubelet
    v1.36 sends in NotifyRegistrationStatus. The kubelet checks nothing else here: an empty
    name, a relative or missing endpoint are registered (and the endpoint then never
    connects, which starts the slice wipe).
    """
    if info.type != DRA_PLUGIN_TYPE:
        raise RegistrationRejectedError(
            f"RegisterPlugin error -- no handler registered for plugin type: {info.type} "
            f"at socket {socket_path}"
        )
    endpoint = plugin_endpoint(info, socket_path)
    try:
        return choose_service(info.supported_versions)
    except RegistrationRejectedError as exc:
        raise RegistrationRejectedError(
            "RegisterPlugin error -- plugin validation failed with err: invalid supported gRPC "
            f"versions of DRA driver plugin {info.name} at endpoint {endpoint}: {exc}"
        ) from None


def _go_rpc_error(exc: grpc.RpcError) -> str:
    """A failed call as Go's gRPC prints it: ``rpc error: code = Unavailable desc = ...``."""
    code = exc.code() if hasattr(exc, "code") else None
    name = "".join(part.capitalize() for part in (code.name if code else "UNKNOWN").split("_"))
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"rpc error: code = {name} desc = {details}"


class _Connection:
    """One registered plugin's gRPC channel and whether it is connected (§5 Connection).

    Connected means the channel is READY: the kubelet tracks gRPC's ConnBegin/ConnEnd per
    plugin (``monitoredPlugin.HandleConn``), and a plugin starts unconnected.
    """

    def __init__(self, endpoint: str, on_change: Callable[[], None]) -> None:
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(f"unix:{endpoint}")
        self.is_connected = False
        self._on_change = on_change
        self._lock = threading.Lock()
        self._closed = False
        self._ready: grpc.Future | None = None
        self.channel.subscribe(self._on_state, try_to_connect=True)

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        # Called on gRPC's delivery thread, never while it holds the channel's lock.
        connected = state == grpc.ChannelConnectivity.READY
        with self._lock:
            if self._closed or connected == self.is_connected:
                return
            self.is_connected = connected
        self._on_change()

    def reconnect(self) -> None:
        """Ask gRPC to connect again when it is not connected.

        The kubelet calls ``conn.Connect()`` on every ConnEnd, otherwise gRPC would stay idle
        and never notice a restarted plugin; a pending ready-future does the same here.
        """
        with self._lock:
            if self._closed or self.is_connected:
                return
            if self._ready is not None and not self._ready.done():
                return
            self._ready = grpc.channel_ready_future(self.channel)

    def close(self) -> None:
        """Close the channel (a call in flight is cancelled within ``_CLOSE_DELAY_S``).

        No state change is reported afterwards.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            ready, self._ready = self._ready, None
        if ready is not None:
            ready.cancel()
        self.channel.unsubscribe(self._on_state)
        _close_later(self.channel)


@dataclass(slots=True)
class _Socket:
    """A socket file seen in the registration directory tree."""

    identity: tuple[int, int]
    """(inode, mtime): a socket re-created under the same name is a new plugin."""
    registration: RegisteredPlugin | None = None
    connection: _Connection | None = None
    next_attempt: float = 0.0
    attempting: bool = False
    """A registration attempt for this socket is running (one at a time per socket)."""


class PluginManager:
    """Watches the registration directory tree and talks to registered DRA plugins.

    Thread-safe. Registration attempts run one thread per socket, so a plugin that never
    answers delays only its own registration.
    """

    def __init__(
        self,
        *,
        registry_dir: Path,
        call_timeout_s: float,
        retry_interval_s: float,
        wiping_delay_s: float,
        wipe_driver: Callable[[str], None],
        poll_interval_s: float = 0.2,
        get_info_timeout_s: float = GET_INFO_TIMEOUT_S,
        health: HealthWatcher | None = None,
    ) -> None:
        self.registry_dir = registry_dir
        self.call_timeout_s = call_timeout_s
        self.retry_interval_s = retry_interval_s
        self.wiping_delay_s = wiping_delay_s
        self._wipe_driver = wipe_driver
        self.poll_interval_s = poll_interval_s
        self.get_info_timeout_s = get_info_timeout_s
        #: Opens the health stream of every registered plugin (§3.2); None: gate off.
        self.health = health
        self._lock = threading.Lock()
        self._sockets: dict[str, _Socket] = {}
        #: Directories walked in the last pass; None before the first one (see _find_sockets).
        self._walked: set[str] | None = None
        #: Driver → when its slices get wiped, armed when it has no connected plugin (§5).
        self._wipe_at: dict[str, float] = {}
        self._sequence = 0
        self._attempts: list[RegistrationAttempt] = []
        self._calls: list[PluginCall] = []
        self._registering: set[threading.Thread] = set()
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
        with self._lock:
            registering = list(self._registering)
        for thread in registering:
            thread.join()
        if self.health is not None:
            self.health.stop()
        with self._lock:
            connections = [s.connection for s in self._sockets.values() if s.connection]
            for socket in self._sockets.values():
                socket.connection = None
        for connection in connections:
            connection.close()

    # --- queries for tests ----------------------------------------------------------------

    def registered_plugins(self) -> list[RegisteredPlugin]:
        """Currently registered plugins, oldest first."""
        with self._lock:
            plugins = [s.registration for s in self._sockets.values() if s.registration]
        return sorted(plugins, key=lambda plugin: plugin.sequence)

    def connected_plugins(self) -> list[RegisteredPlugin]:
        """Registered plugins whose gRPC connection is up, oldest first."""
        with self._lock:
            plugins = [
                s.registration
                for s in self._sockets.values()
                if s.registration and s.connection and s.connection.is_connected
            ]
        return sorted(plugins, key=lambda plugin: plugin.sequence)

    def is_registered(self, driver: str) -> bool:
        """Whether any plugin of ``driver`` is registered (connected or not)."""
        with self._lock:
            return any(
                s.registration and s.registration.driver == driver for s in self._sockets.values()
            )

    def seen_sockets(self) -> list[str]:
        """Paths of the sockets the watcher's last pass found, registered or not, sorted."""
        with self._lock:
            return sorted(self._sockets)

    def pending_wipes(self) -> dict[str, float]:
        """Drivers whose slices will be wiped, with the seconds left until then."""
        now = time.monotonic()
        with self._lock:
            return {driver: at - now for driver, at in self._wipe_at.items()}

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
                self._reconnect()
                self._wipe_due_drivers()
            except Exception:
                logger.exception("plugin watcher pass failed")
            self._stop.wait(self.poll_interval_s)

    def _find_sockets(self) -> dict[str, tuple[int, int]]:
        """Walk the registration directory tree as the plugin watcher does (§2.4).

        Every unix socket counts, whatever its name, unless its name starts with '.'.
        Subdirectories are walked too. A directory whose name starts with '.' is walked only
        if it was there before: the kubelet walks the whole tree when it starts, but ignores
        such a directory when it is created later (``handleCreateEvent``).
        """
        found: dict[str, tuple[int, int]] = {}
        walked: set[str] = set()
        pending = [str(self.registry_dir)]
        while pending:
            directory = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            walked.add(directory)
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                hidden = entry.name.startswith(".")
                if stat.S_ISDIR(info.st_mode):
                    if hidden and self._walked is not None and entry.path not in self._walked:
                        continue
                    pending.append(entry.path)
                elif stat.S_ISSOCK(info.st_mode) and not hidden:
                    found[entry.path] = (info.st_ino, info.st_mtime_ns)
        self._walked = walked
        return found

    def _scan(self) -> None:
        """One pass of the plugin watcher (§2.4)."""
        found = self._find_sockets()
        now = time.monotonic()
        closing: list[_Connection] = []
        todo: list[tuple[str, tuple[int, int]]] = []
        with self._lock:
            for path, socket in list(self._sockets.items()):
                if found.get(path) != socket.identity:
                    # Removing the socket file = deregistration (§2.4).
                    closing.extend(self._forget_socket(path))
            for path, identity in found.items():
                socket = self._sockets.setdefault(path, _Socket(identity))
                if (
                    socket.registration is None
                    and not socket.attempting
                    and socket.next_attempt <= now
                    and not self._stop.is_set()
                ):
                    socket.attempting = True
                    todo.append((path, identity))
        for connection in closing:
            connection.close()
        for path, identity in todo:
            thread = threading.Thread(
                target=self._register,
                args=(path, identity),
                name="fakekubelet-register",
                daemon=True,
            )
            with self._lock:
                self._registering.add(thread)
            thread.start()

    def _reconnect(self) -> None:
        with self._lock:
            connections = [s.connection for s in self._sockets.values() if s.connection]
        for connection in connections:
            connection.reconnect()

    def _register(self, path: str, identity: tuple[int, int]) -> None:
        """Dial → GetInfo → validate → register → NotifyRegistrationStatus (§2.4)."""
        try:
            self._attempt_registration(path, identity)
        except Exception as exc:
            logger.exception("registration of plugin socket %s failed unexpectedly", path)
            self._record_failure(path, None, f"unexpected failure: {exc!r}")
        finally:
            with self._lock:
                socket = self._sockets.get(path)
                if socket is not None and socket.identity == identity:
                    socket.attempting = False
                self._registering.discard(threading.current_thread())

    def _attempt_registration(self, path: str, identity: tuple[int, int]) -> None:
        channel = grpc.insecure_channel(f"unix:{path}")
        try:
            self._attempt_registration_on(channel, path, identity)
        finally:
            _close_later(channel)

    def _attempt_registration_on(
        self, channel: grpc.Channel, path: str, identity: tuple[int, int]
    ) -> None:
        if not self._dial(channel):
            if not self._stop.is_set():
                self._record_failure(
                    path,
                    None,
                    f"RegisterPlugin error -- dial failed at socket {path}, err: failed to "
                    f"dial socket {path}, err: context deadline exceeded",
                )
            return
        stub = pluginregistration_pb2_grpc.RegistrationStub(channel)
        try:
            answer = stub.GetInfo(
                pluginregistration_pb2.InfoRequest(), timeout=self.get_info_timeout_s
            )
        except grpc.RpcError as exc:
            self._record_failure(
                path,
                None,
                "RegisterPlugin error -- failed to get plugin info using RPC GetInfo at "
                f"socket {path}, err: {_go_rpc_error(exc)}",
            )
            return
        info = PluginInfo(
            type=answer.type,
            name=answer.name,
            endpoint=answer.endpoint,
            supported_versions=tuple(answer.supported_versions),
        )
        try:
            service = validate_plugin_info(info, path)
            registration = self._add_registration(path, identity, info, service)
        except RegistrationRejectedError as exc:
            # The Go library answers a rejection with an error on purpose (§2.2): ignored.
            self._notify(stub, registered=False, error=str(exc))
            self._record_failure(path, info, str(exc))
            return
        if registration is None:
            return  # the socket vanished or was replaced meanwhile
        notify_error = self._notify(stub, registered=True, error="")
        if notify_error is not None:
            # The kubelet undoes a registration the plugin did not acknowledge.
            self._deregister(path, identity)
            self._record_failure(
                path,
                info,
                "RegisterPlugin error -- failed to send registration status at socket "
                f"{path}, err: {notify_error}",
            )
            return
        with self._lock:
            self._attempts.append(RegistrationAttempt(path, info, accepted=True, error=None))
        logger.info(
            "registered DRA plugin %s at %s (%s, socket %s)",
            info.name,
            registration.endpoint,
            service,
            path,
        )

    def _dial(self, channel: grpc.Channel) -> bool:
        """The kubelet's blocking dial: wait until connected, up to DIAL_TIMEOUT_S."""
        ready = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + DIAL_TIMEOUT_S
        try:
            while not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    ready.result(timeout=min(remaining, _STOP_CHECK_S))
                except grpc.FutureTimeoutError:
                    continue
                return True
            return False
        finally:
            ready.cancel()

    def _notify(self, stub: Any, *, registered: bool, error: str) -> str | None:
        """Send NotifyRegistrationStatus; return the failure to send it, Go-formatted."""
        try:
            stub.NotifyRegistrationStatus(
                pluginregistration_pb2.RegistrationStatus(
                    plugin_registered=registered, error=error
                ),
                timeout=NOTIFY_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            return f"{error}: {_go_rpc_error(exc)}"
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
        self, path: str, identity: tuple[int, int], info: PluginInfo, service: str
    ) -> RegisteredPlugin | None:
        """``DRAPluginManager.add``: store the plugin, open its connection, sync the wipe."""
        endpoint = plugin_endpoint(info, path)
        with self._lock:
            socket = self._sockets.get(path)
            if socket is None or socket.identity != identity:
                return None
            for other in self._sockets.values():
                taken = other.registration
                if taken and taken.driver == info.name and taken.endpoint == endpoint:
                    # One plugin instance cannot hijack the endpoint of another instance.
                    raise RegistrationRejectedError(
                        "RegisterPlugin error -- plugin registration failed with err: "
                        f"endpoint {endpoint} already registered for DRA driver plugin "
                        f"{info.name}"
                    )
            self._sequence += 1
            registration = RegisteredPlugin(
                driver=info.name,
                endpoint=endpoint,
                socket_path=path,
                service=service,
                sequence=self._sequence,
                supported_versions=info.supported_versions,
            )
            driver = info.name
            connection = _Connection(endpoint, on_change=lambda: self._on_connection(driver))
            socket.registration, socket.connection = registration, connection
            if self.health is not None:
                self.health.watch(driver=driver, endpoint=endpoint, channel=connection.channel)
            # Not connected yet, so this arms the wipe unless it is armed already, as in the
            # kubelet; the connection coming up cancels it.
            self._sync(driver)
            return registration

    def _deregister(self, path: str, identity: tuple[int, int]) -> None:
        """Undo a registration of this socket incarnation (its socket stays known)."""
        closing: list[_Connection] = []
        with self._lock:
            socket = self._sockets.get(path)
            if socket is not None and socket.identity == identity:
                closing = self._forget_socket(path)
                self._sockets[path] = _Socket(identity)
        for connection in closing:
            connection.close()

    def _forget_socket(self, path: str) -> list[_Connection]:
        """Drop a socket and its registration (lock held); return the connection to close.

        The caller closes it after releasing the lock: gRPC may be delivering a state change
        that waits for the lock.
        """
        socket = self._sockets.pop(path)
        registration = socket.registration
        if registration is None:
            return []
        logger.info("DRA plugin %s at socket %s deregistered", registration.driver, path)
        if self.health is not None:
            self.health.unwatch(registration.endpoint)
        self._sync(registration.driver)
        return [socket.connection] if socket.connection is not None else []

    def _on_connection(self, driver: str) -> None:
        """A plugin's connection went up or down (``monitoredPlugin.HandleConn``)."""
        with self._lock:
            self._sync(driver)

    def _sync(self, driver: str) -> None:
        """``DRAPluginManager.sync`` (lock held): cancel or arm the wipe of ``driver``.

        A driver is usable while one of its registered plugins is connected. When it is not,
        its slices are wiped after the delay; an already armed wipe keeps its time.
        """
        usable = any(
            s.registration.driver == driver and s.connection.is_connected
            for s in self._sockets.values()
            if s.registration is not None and s.connection is not None
        )
        if usable:
            if self._wipe_at.pop(driver, None) is not None:
                logger.info("DRA driver %s is connected again: slice wipe cancelled", driver)
        elif driver not in self._wipe_at:
            logger.info(
                "DRA driver %s has no connected plugin: its slices go in %.1f s",
                driver,
                self.wiping_delay_s,
            )
            self._wipe_at[driver] = time.monotonic() + self.wiping_delay_s

    def _wipe_due_drivers(self) -> None:
        """Delete the slices of drivers without a connected plugin for the delay (§5)."""
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
        """The most recently registered connected plugin of ``driver``, else the newest (§4.3)."""
        with self._lock:
            candidates = sorted(
                (
                    (s.registration, s.connection)
                    for s in self._sockets.values()
                    if s.registration is not None
                    and s.connection is not None
                    and s.registration.driver == driver
                ),
                key=lambda pair: -pair[0].sequence,
            )
            if not candidates:
                raise PluginCallError(f"DRA driver {driver} is not registered")
            for registration, connection in candidates:
                if connection.is_connected:
                    return registration, connection
            return candidates[0]

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
            error = f"NodePrepareResources: {_go_rpc_error(exc)}"
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
                    f"NodePrepareResources failed for ResourceClaim {claim.name}: "
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
            error = f"NodeUnprepareResources: {_go_rpc_error(exc)}"
        else:
            by_uid = {claim.uid: claim for claim in claims}
            for uid, claim_result in response.claims.items():
                claim = by_uid.get(uid)
                if claim is None:
                    error = f"NodeUnprepareResources returned result for unknown claim UID {uid}"
                    break
                if claim_result.error:
                    error = (
                        f"NodeUnprepareResources failed for ResourceClaim {claim.name}: "
                        f"{claim_result.error}"
                    )
                    break
            else:
                missing = len(by_uid) - len(response.claims)
                if missing:
                    error = f"NodeUnprepareResources skipped {missing} ResourceClaims"
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
