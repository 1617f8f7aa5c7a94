"""The fake kubelet registers plugins and checks their answers like the kubelet (§2, §5).

Real gRPC servers on unix sockets in a short temp dir; no API server is involved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from dra_driver.kubeletplugin._pb import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)
from dra_driver.testing.fakekubelet.model import (
    ClaimRef,
    PluginCallError,
    PluginInfo,
    RegistrationRejectedError,
)
from dra_driver.testing.fakekubelet.plugins import (
    GET_INFO_TIMEOUT_S,
    PluginManager,
    choose_service,
    validate_plugin_info,
)
from dra_driver.testing.waiting import wait_for

CLAIM = ClaimRef(namespace="ns", name="c", uid="uid-1")
BOTH = ("v1.DRAPlugin", "v1beta1.DRAPlugin")

Answer = Callable[[Any, Any], Any]


def answer_one_device(pb2: Any, request: Any) -> Any:
    """One shared device per claim (share_id only where the message has it)."""
    fields: dict[str, Any] = {
        "request_names": ["r"],
        "pool_name": "pool",
        "device_name": "dev",
        "cdi_device_ids": ["v/c=x"],
    }
    if pb2 is dra_v1_pb2:
        fields["share_id"] = "s-1"
    return pb2.NodePrepareResourcesResponse(
        claims={
            c.uid: pb2.NodePrepareResourceResponse(devices=[pb2.Device(**fields)])
            for c in request.claims
        }
    )


class Plugin:
    """A configurable plugin: GetInfo answer, prepare answer, recorded registration status.

    Its registration socket is in the registry directory (``socket_name`` may name a
    subdirectory), its DRA socket in a directory the kubelet does not watch, or, with
    ``endpoint=""``, the registration socket serves DRA too.
    """

    def __init__(
        self,
        registry_dir: Path,
        dra_dir: Path,
        *,
        name: str = "drv.example.com",
        socket_name: str | None = None,
        plugin_type: str = "DRAPlugin",
        versions: tuple[str, ...] = BOTH,
        endpoint: str | None = None,
        answer: Callable[[Any, Any], Any] = answer_one_device,
        get_info_gate: threading.Event | None = None,
        refuse_notification: bool = False,
    ) -> None:
        self.registration_socket = registry_dir / (socket_name or f"{name}-reg.sock")
        self.dra_socket = (
            self.registration_socket
            if endpoint == ""
            else dra_dir / f"{self.registration_socket.name}.dra"
        )
        self.info = pluginregistration_pb2.PluginInfo(
            type=plugin_type,
            name=name,
            endpoint=endpoint if endpoint is not None else str(self.dra_socket),
            supported_versions=list(versions),
        )
        self.answer = answer
        self.get_info_gate = get_info_gate
        self.refuse_notification = refuse_notification
        self.statuses: list[tuple[bool, str]] = []
        self.prepared: list[tuple[str, tuple[str, ...]]] = []
        self.lock = threading.Lock()
        self.servers: list[Any] = []

    def GetInfo(self, request: Any, context: Any) -> Any:  # noqa: N802
        if self.get_info_gate is not None:
            self.get_info_gate.wait(10)
        return self.info

    def NotifyRegistrationStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.lock:
            self.statuses.append((request.plugin_registered, request.error))
        if self.refuse_notification:
            context.abort(grpc.StatusCode.INTERNAL, "plugin refuses the status")
        return pluginregistration_pb2.RegistrationStatusResponse()

    def servicer(self, pb2: Any) -> Any:
        plugin = self

        class Servicer:
            def NodePrepareResources(self, request: Any, context: Any) -> Any:  # noqa: N802
                with plugin.lock:
                    plugin.prepared.append((pb2.__name__, tuple(c.uid for c in request.claims)))
                return plugin.answer(pb2, request)

            def NodeUnprepareResources(self, request: Any, context: Any) -> Any:  # noqa: N802
                return pb2.NodeUnprepareResourcesResponse(
                    claims={c.uid: pb2.NodeUnprepareResourceResponse() for c in request.claims}
                )

        return Servicer()

    def _dra_server(self) -> Any:
        dra = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(self.servicer(dra_v1_pb2), dra)
        dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(self.servicer(dra_v1beta1_pb2), dra)
        return dra

    def start(self) -> Plugin:
        self.registration_socket.parent.mkdir(parents=True, exist_ok=True)
        self.dra_socket.parent.mkdir(parents=True, exist_ok=True)
        if self.dra_socket == self.registration_socket:
            both = self._dra_server()
            pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(self, both)
            assert both.add_insecure_port(f"unix:{self.registration_socket}")
            both.start()
            self.servers = [both]
            return self
        dra = self._dra_server()
        assert dra.add_insecure_port(f"unix:{self.dra_socket}")
        dra.start()
        registration = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(self, registration)
        assert registration.add_insecure_port(f"unix:{self.registration_socket}")
        registration.start()
        self.servers = [dra, registration]
        return self

    def stop_dra(self) -> None:
        """The DRA server goes away; the registration socket stays (a crashed DRA server)."""
        self.servers[0].stop(grace=None).wait()
        self.dra_socket.unlink(missing_ok=True)

    def restart_dra(self) -> None:
        """Serve DRA again at the same endpoint."""
        dra = self._dra_server()
        assert dra.add_insecure_port(f"unix:{self.dra_socket}")
        dra.start()
        self.servers[0] = dra

    def stop(self) -> None:
        self.registration_socket.unlink(missing_ok=True)
        for server in self.servers:
            server.stop(grace=None).wait()
        self.dra_socket.unlink(missing_ok=True)


class Harness:
    def __init__(self, directory: Path) -> None:
        self.directory = directory / "reg"
        self.dra_dir = directory / "dra"
        self.wiped: list[str] = []
        self.plugins: list[Plugin] = []
        self.manager = PluginManager(
            registry_dir=self.directory,
            call_timeout_s=5.0,
            retry_interval_s=0.2,
            wiping_delay_s=0.5,
            wipe_driver=self.wiped.append,
            poll_interval_s=0.05,
        )

    def plugin(self, **options: Any) -> Plugin:
        plugin = Plugin(self.directory, self.dra_dir, **options).start()
        self.plugins.append(plugin)
        return plugin

    def wait_connected(self, driver: str) -> None:
        wait_for(
            lambda: [p for p in self.manager.connected_plugins() if p.driver == driver],
            timeout_s=5,
            description=f"a connected plugin of {driver}",
        )

    def wait_registered(self, driver: str, *, count: int = 1) -> None:
        wait_for(
            lambda: (
                len([p for p in self.manager.registered_plugins() if p.driver == driver]) >= count
            ),
            timeout_s=5,
            description=f"{count} registration(s) of {driver}",
            details=self.manager.registration_attempts,
        )


@pytest.fixture
def harness(short_sock_dir: Path) -> Iterator[Harness]:
    harness = Harness(short_sock_dir)
    harness.manager.start()
    try:
        yield harness
    finally:
        harness.manager.stop()
        for plugin in harness.plugins:
            plugin.stop()


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        (("v1.DRAPlugin", "v1beta1.DRAPlugin"), "v1.DRAPlugin"),
        (("v1beta1.DRAPlugin", "v1.DRAPlugin"), "v1beta1.DRAPlugin"),
        (("v1.DRAResourceHealth", "v1beta1.DRAPlugin"), "v1beta1.DRAPlugin"),
    ],
    ids=["v1-first", "plugin-order-wins", "health-ignored"],
)
def test_first_plugin_listed_supported_service_is_chosen(
    versions: tuple[str, ...], expected: str
) -> None:
    assert choose_service(versions) == expected


SOCKET = "/reg/d-reg.sock"
NONE_SUPPORTED = (
    'none of services supported by the plugin (["v1alpha3.NodeService"]) are supported by '
    'the kubelet (["v1.DRAPlugin" "v1beta1.DRAPlugin"])'
)


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (
            PluginInfo("CSIPlugin", "d", "/dra.sock", BOTH),
            "RegisterPlugin error -- no handler registered for plugin type: CSIPlugin at "
            "socket /reg/d-reg.sock",
        ),
        (
            PluginInfo("DRAPlugin", "d", "/dra.sock", ()),
            "RegisterPlugin error -- plugin validation failed with err: invalid supported gRPC "
            "versions of DRA driver plugin d at endpoint /dra.sock: empty list of supported "
            "gRPC services (aka supported versions)",
        ),
        (
            PluginInfo("DRAPlugin", "d", "", ("v1alpha3.NodeService",)),
            "RegisterPlugin error -- plugin validation failed with err: invalid supported gRPC "
            f"versions of DRA driver plugin d at endpoint /reg/d-reg.sock: {NONE_SUPPORTED}",
        ),
    ],
    ids=["wrong-type", "no-versions", "unsupported-with-empty-endpoint"],
)
def test_invalid_plugin_info_is_rejected_with_the_kubelets_text(
    info: PluginInfo, message: str
) -> None:
    """The texts of kubelet v1.36.3's operation_generator.go and dra_plugin_manager.go."""
    with pytest.raises(RegistrationRejectedError) as raised:
        validate_plugin_info(info, SOCKET)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    "info",
    [
        PluginInfo("DRAPlugin", "", "/dra.sock", BOTH),
        PluginInfo("DRAPlugin", "d", "rel.sock", BOTH),
        PluginInfo("DRAPlugin", "d", "/nonexistent.sock", BOTH),
    ],
    ids=["no-name", "relative-endpoint", "missing-endpoint"],
)
def test_the_kubelet_does_not_check_name_or_endpoint(info: PluginInfo) -> None:
    """Only the type and the services are validated; a bad endpoint just never connects."""
    assert validate_plugin_info(info, SOCKET) == "v1.DRAPlugin"


def test_plugin_is_registered_and_notified(harness: Harness) -> None:
    plugin = harness.plugin(versions=("v1beta1.DRAPlugin", "v1.DRAPlugin"))

    harness.wait_registered("drv.example.com")

    (registered,) = harness.manager.registered_plugins()
    assert (registered.service, registered.endpoint) == (
        "v1beta1.DRAPlugin",
        str(plugin.dra_socket),
    )
    wait_for(lambda: plugin.statuses, timeout_s=5, description="registration status")
    assert plugin.statuses == [(True, "")]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"plugin_type": "CSIPlugin"},
            "RegisterPlugin error -- no handler registered for plugin type: CSIPlugin at "
            "socket {socket}",
        ),
        (
            {"versions": ()},
            "RegisterPlugin error -- plugin validation failed with err: invalid supported gRPC "
            "versions of DRA driver plugin drv.example.com at endpoint {endpoint}: empty list "
            "of supported gRPC services (aka supported versions)",
        ),
    ],
    ids=["wrong-type", "no-versions"],
)
def test_rejected_plugin_is_notified_with_the_kubelets_reason(
    harness: Harness, options: dict[str, Any], message: str
) -> None:
    plugin = harness.plugin(**options)

    wait_for(lambda: plugin.statuses, timeout_s=5, description="a registration status")

    expected = message.format(socket=plugin.registration_socket, endpoint=plugin.dra_socket)
    assert plugin.statuses[0] == (False, expected)
    assert harness.manager.registered_plugins() == []
    wait_for(harness.manager.registration_attempts, timeout_s=5, description="the attempt")
    attempt = harness.manager.registration_attempts()[0]
    assert (attempt.accepted, attempt.error) == (False, expected)


def test_second_socket_with_a_registered_endpoint_is_rejected(harness: Harness) -> None:
    """``DRAPluginManager.add``: one instance cannot hijack another's endpoint."""
    first = harness.plugin(socket_name="a-reg.sock")
    harness.wait_registered("drv.example.com")
    second = harness.plugin(socket_name="b-reg.sock", endpoint=str(first.dra_socket))

    wait_for(lambda: second.statuses, timeout_s=5, description="the second plugin's status")

    assert second.statuses[0] == (
        False,
        "RegisterPlugin error -- plugin registration failed with err: endpoint "
        f"{first.dra_socket} already registered for DRA driver plugin drv.example.com",
    )
    assert [p.socket_path for p in harness.manager.registered_plugins()] == [
        str(first.registration_socket)
    ]


def test_plugin_that_refuses_the_registered_status_is_not_registered(harness: Harness) -> None:
    """The kubelet deregisters a plugin whose NotifyRegistrationStatus(true) fails."""
    plugin = harness.plugin(refuse_notification=True)

    wait_for(
        lambda: [a for a in harness.manager.registration_attempts() if a.info is not None],
        timeout_s=5,
        description="a registration attempt with GetInfo answered",
    )

    (attempt, *_) = harness.manager.registration_attempts()
    assert not attempt.accepted
    assert attempt.error == (
        "RegisterPlugin error -- failed to send registration status at socket "
        f"{plugin.registration_socket}, err: : rpc error: code = Internal desc = plugin "
        "refuses the status"
    )
    assert plugin.statuses[0] == (True, "")
    assert harness.manager.registered_plugins() == []


def test_get_info_times_out_after_one_second(harness: Harness) -> None:
    """The kubelet gives GetInfo 1 s (operation_generator.go); a slower plugin is refused."""
    gate = threading.Event()
    plugin = harness.plugin(get_info_gate=gate)
    try:
        wait_for(harness.manager.registration_attempts, timeout_s=5, description="a failed attempt")
    finally:
        gate.set()

    attempt = harness.manager.registration_attempts()[0]
    assert (attempt.accepted, attempt.info) == (False, None)
    assert attempt.error == (
        "RegisterPlugin error -- failed to get plugin info using RPC GetInfo at socket "
        f"{plugin.registration_socket}, err: rpc error: code = DeadlineExceeded desc = "
        "Deadline Exceeded"
    )
    assert harness.manager.get_info_timeout_s == GET_INFO_TIMEOUT_S == 1.0


def test_empty_endpoint_means_the_registration_socket_serves_dra(harness: Harness) -> None:
    """operation_generator.go: ``if infoResp.Endpoint == "" { Endpoint = socketPath }``."""
    plugin = harness.plugin(endpoint="")
    harness.wait_registered("drv.example.com")

    (registered,) = harness.manager.registered_plugins()
    assert registered.endpoint == registered.socket_path == str(plugin.registration_socket)
    devices = harness.manager.prepare("drv.example.com", [CLAIM])
    assert [d.device for d in devices["uid-1"]] == ["dev"]
    assert plugin.prepared == [("dra_driver.kubeletplugin._pb.dra_v1_pb2", ("uid-1",))]


def test_sockets_in_subdirectories_are_registered(harness: Harness) -> None:
    """The plugin watcher walks the tree and watches new subdirectories too."""
    harness.plugin(name="a.example.com", socket_name="sub/deeper/a-reg.sock")
    harness.wait_registered("a.example.com")
    harness.plugin(name="b.example.com", socket_name="new/b")  # any socket name counts

    harness.wait_registered("b.example.com")

    assert sorted(p.socket_path for p in harness.manager.registered_plugins()) == [
        str(harness.directory / "new/b"),
        str(harness.directory / "sub/deeper/a-reg.sock"),
    ]


def test_hidden_directory_is_walked_only_if_it_was_there_at_start(short_sock_dir: Path) -> None:
    """The kubelet walks the whole tree at start but ignores '.' directories created later."""
    early = Harness(short_sock_dir)
    early.plugin(name="early.example.com", socket_name=".old/e-reg.sock")
    early.manager.start()
    try:
        early.wait_registered("early.example.com")
        early.plugin(name="late.example.com", socket_name=".new/l-reg.sock")
        early.plugin(name="probe.example.com")
        # The probe is found in a later pass than the one that first saw .new.
        early.wait_registered("probe.example.com")

        assert sorted(p.driver for p in early.manager.registered_plugins()) == [
            "early.example.com",
            "probe.example.com",
        ]
        assert early.manager.seen_sockets() == sorted(
            str(early.directory / name)
            for name in (".old/e-reg.sock", "probe.example.com-reg.sock")
        )
    finally:
        early.manager.stop()
        for plugin in early.plugins:
            plugin.stop()


def test_hidden_sockets_are_ignored(harness: Harness) -> None:
    plugin = harness.plugin(socket_name=".hidden-reg.sock")
    visible = harness.plugin(name="other.example.com")

    harness.wait_registered("other.example.com")

    assert [p.driver for p in harness.manager.registered_plugins()] == ["other.example.com"]
    assert plugin.statuses == []
    assert visible.statuses == [(True, "")]


def test_removing_the_socket_deregisters_and_wipes_slices_after_the_delay(harness: Harness) -> None:
    plugin = harness.plugin()
    harness.wait_registered("drv.example.com")

    plugin.stop()

    wait_for(
        lambda: not harness.manager.registered_plugins(), timeout_s=5, description="deregistration"
    )
    assert harness.wiped == []
    wait_for(lambda: harness.wiped, timeout_s=5, description="slices wiped")
    assert harness.wiped == ["drv.example.com"]


def test_a_plugin_that_lost_its_connection_loses_its_slices_while_registered(
    harness: Harness,
) -> None:
    """The kubelet arms the wipe when no plugin is connected, not when the socket goes."""
    plugin = harness.plugin()
    harness.wait_connected("drv.example.com")
    assert harness.manager.pending_wipes() == {}

    plugin.stop_dra()  # the registration socket stays, like a SIGKILLed plugin's

    wait_for(lambda: harness.wiped, timeout_s=5, description="slices wiped")
    assert harness.wiped == ["drv.example.com"]
    assert [p.driver for p in harness.manager.registered_plugins()] == ["drv.example.com"]
    assert harness.manager.connected_plugins() == []


def test_a_reconnected_plugin_cancels_the_wipe(short_sock_dir: Path) -> None:
    """gRPC is asked to reconnect (the kubelet's conn.Connect() on ConnEnd)."""
    harness = Harness(short_sock_dir)
    harness.manager.wiping_delay_s = 60.0
    harness.manager.start()
    try:
        plugin = harness.plugin()
        harness.wait_connected("drv.example.com")
        plugin.stop_dra()
        wait_for(
            lambda: "drv.example.com" in harness.manager.pending_wipes(),
            timeout_s=5,
            description="the wipe to be armed",
        )

        plugin.restart_dra()

        harness.wait_connected("drv.example.com")
        assert harness.manager.pending_wipes() == {}
        assert harness.wiped == []
    finally:
        harness.manager.stop()
        for plugin in harness.plugins:
            plugin.stop()


def test_an_armed_wipe_keeps_its_time_when_the_socket_goes_later(short_sock_dir: Path) -> None:
    """``DRAPluginManager.sync``: an already queued wipe keeps its original time."""
    harness = Harness(short_sock_dir)
    harness.manager.wiping_delay_s = 60.0
    harness.manager.start()
    try:
        plugin = harness.plugin()
        harness.wait_connected("drv.example.com")
        plugin.stop_dra()
        armed = wait_for(
            lambda: harness.manager.pending_wipes().get("drv.example.com"),
            timeout_s=5,
            description="the wipe to be armed",
        )

        plugin.stop()
        wait_for(
            lambda: not harness.manager.registered_plugins(),
            timeout_s=5,
            description="deregistration",
        )

        assert harness.manager.pending_wipes()["drv.example.com"] <= armed
    finally:
        harness.manager.stop()


def test_re_registration_within_the_delay_cancels_the_wipe(harness: Harness) -> None:
    harness.plugin(socket_name="a-reg.sock").stop()
    harness.plugin(socket_name="b-reg.sock")

    harness.wait_registered("drv.example.com")
    wait_for(
        lambda: (
            [p.socket_path for p in harness.manager.registered_plugins()]
            == [str(harness.directory / "b-reg.sock")]
        ),
        timeout_s=5,
        description="only the second socket registered",
    )
    threading.Event().wait(1.0)  # twice the wiping delay

    assert harness.wiped == []


def test_newest_connected_plugin_gets_the_calls(harness: Harness) -> None:
    old = harness.plugin(socket_name="old-reg.sock")
    harness.wait_registered("drv.example.com")
    new = harness.plugin(socket_name="new-reg.sock")
    harness.wait_registered("drv.example.com", count=2)

    harness.manager.prepare("drv.example.com", [CLAIM])
    new.stop_dra()

    def prepared_by_old() -> bool:
        try:
            harness.manager.prepare("drv.example.com", [CLAIM])
        except PluginCallError:
            return False  # the kubelet retries; the failed call marks the channel as down
        return bool(old.prepared)

    wait_for(
        prepared_by_old,
        timeout_s=10,
        description="calls to fail over to the older, still connected plugin",
    )

    assert new.prepared == [("dra_driver.kubeletplugin._pb.dra_v1_pb2", ("uid-1",))]


def test_v1_prepare_records_devices_with_share_id(harness: Harness) -> None:
    harness.plugin()
    harness.wait_registered("drv.example.com")

    devices = harness.manager.prepare("drv.example.com", [CLAIM])

    (device,) = devices["uid-1"]
    assert (device.pool, device.device, device.share_id) == ("pool", "dev", "s-1")
    assert (device.request_names, device.cdi_device_ids) == (("r",), ("v/c=x",))
    (call,) = harness.manager.calls()
    assert call.grpc_method == "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources"
    assert call.error is None


def test_v1beta1_prepare_has_no_share_id(harness: Harness) -> None:
    harness.plugin(versions=("v1beta1.DRAPlugin",))
    harness.wait_registered("drv.example.com")

    devices = harness.manager.prepare("drv.example.com", [CLAIM])

    assert devices["uid-1"][0].share_id is None
    assert harness.manager.calls()[0].grpc_method == (
        "/k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin/NodePrepareResources"
    )


def answer_unknown_uid(pb2: Any, request: Any) -> Any:
    return pb2.NodePrepareResourcesResponse(claims={"other": pb2.NodePrepareResourceResponse()})


def answer_nothing(pb2: Any, request: Any) -> Any:
    return pb2.NodePrepareResourcesResponse()


def answer_error(pb2: Any, request: Any) -> Any:
    return pb2.NodePrepareResourcesResponse(
        claims={c.uid: pb2.NodePrepareResourceResponse(error="no room") for c in request.claims}
    )


def answer_abort(pb2: Any, request: Any) -> Any:
    raise RuntimeError("plugin crashed")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (answer_unknown_uid, r"NodePrepareResources returned result for unknown claim UID other$"),
        (answer_nothing, r"NodePrepareResources skipped 1 ResourceClaims$"),
        (answer_error, r"NodePrepareResources failed for ResourceClaim c: no room$"),
        (
            answer_abort,
            r"NodePrepareResources: rpc error: code = Unknown desc = Exception calling application",
        ),
    ],
    ids=["unknown-uid", "missing-entry", "claim-error", "grpc-error"],
)
def test_bad_prepare_answers_fail_the_call(harness: Harness, answer: Answer, message: str) -> None:
    harness.plugin(answer=answer)
    harness.wait_registered("drv.example.com")

    with pytest.raises(PluginCallError, match=r"^driver drv.example.com: " + message):
        harness.manager.prepare("drv.example.com", [CLAIM])

    assert harness.manager.calls()[0].error is not None


def test_call_to_an_unregistered_driver_fails(harness: Harness) -> None:
    with pytest.raises(PluginCallError, match=r"^DRA driver nope.example.com is not registered$"):
        harness.manager.prepare("nope.example.com", [CLAIM])
