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
    """A configurable plugin: GetInfo answer, prepare answer, recorded registration status."""

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "drv.example.com",
        socket_name: str | None = None,
        plugin_type: str = "DRAPlugin",
        versions: tuple[str, ...] = BOTH,
        endpoint: str | None = None,
        answer: Callable[[Any, Any], Any] = answer_one_device,
    ) -> None:
        self.registration_socket = directory / (socket_name or f"{name}-reg.sock")
        self.dra_socket = directory / f"{self.registration_socket.stem}.dra"
        self.info = pluginregistration_pb2.PluginInfo(
            type=plugin_type,
            name=name,
            endpoint=endpoint if endpoint is not None else str(self.dra_socket),
            supported_versions=list(versions),
        )
        self.answer = answer
        self.statuses: list[tuple[bool, str]] = []
        self.prepared: list[tuple[str, tuple[str, ...]]] = []
        self.lock = threading.Lock()
        self.servers: list[Any] = []

    def GetInfo(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self.info

    def NotifyRegistrationStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        with self.lock:
            self.statuses.append((request.plugin_registered, request.error))
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

    def start(self) -> Plugin:
        dra = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(self.servicer(dra_v1_pb2), dra)
        dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(self.servicer(dra_v1beta1_pb2), dra)
        assert dra.add_insecure_port(f"unix:{self.dra_socket}")
        dra.start()
        registration = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(self, registration)
        assert registration.add_insecure_port(f"unix:{self.registration_socket}")
        registration.start()
        self.servers = [dra, registration]
        return self

    def stop_dra(self) -> None:
        self.servers[0].stop(grace=None).wait()
        self.dra_socket.unlink(missing_ok=True)

    def stop(self) -> None:
        self.registration_socket.unlink(missing_ok=True)
        for server in self.servers:
            server.stop(grace=None).wait()
        self.dra_socket.unlink(missing_ok=True)


class Harness:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.wiped: list[str] = []
        self.plugins: list[Plugin] = []
        self.manager = PluginManager(
            registry_dir=directory,
            call_timeout_s=5.0,
            retry_interval_s=0.2,
            wiping_delay_s=0.5,
            wipe_driver=self.wiped.append,
            poll_interval_s=0.05,
        )

    def plugin(self, **options: Any) -> Plugin:
        plugin = Plugin(self.directory, **options).start()
        self.plugins.append(plugin)
        return plugin

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


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (
            PluginInfo("CSIPlugin", "d", "/", BOTH),
            r"^no handler registered for plugin type: 'CSIPlugin'$",
        ),
        (PluginInfo("DRAPlugin", "", "/", BOTH), r"^plugin name is empty$"),
        (
            PluginInfo("DRAPlugin", "d", "rel.sock", BOTH),
            r"^endpoint 'rel.sock' is not an absolute path$",
        ),
        (
            PluginInfo("DRAPlugin", "d", "/nonexistent.sock", BOTH),
            r"^endpoint /nonexistent.sock does not exist$",
        ),
        (PluginInfo("DRAPlugin", "d", "/", ()), r"^empty list of supported versions$"),
        (
            PluginInfo("DRAPlugin", "d", "/", ("v1alpha3.NodeService",)),
            r"^none of services supported by the plugin \['v1alpha3.NodeService'\] are supported",
        ),
    ],
    ids=[
        "wrong-type",
        "no-name",
        "relative-endpoint",
        "missing-endpoint",
        "no-versions",
        "unsupported",
    ],
)
def test_invalid_plugin_info_is_rejected(info: PluginInfo, message: str) -> None:
    with pytest.raises(RegistrationRejectedError, match=message):
        validate_plugin_info(info)


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
        ({"plugin_type": "CSIPlugin"}, "no handler registered for plugin type: 'CSIPlugin'"),
        ({"versions": ()}, "empty list of supported versions"),
    ],
    ids=["wrong-type", "no-versions"],
)
def test_rejected_plugin_is_notified_with_the_reason(
    harness: Harness, options: dict[str, Any], message: str
) -> None:
    plugin = harness.plugin(**options)

    wait_for(lambda: plugin.statuses, timeout_s=5, description="a registration status")

    registered, error = plugin.statuses[0]
    assert not registered
    assert error == f"RegisterPlugin error -- plugin registration failed with err: {message}"
    assert harness.manager.registered_plugins() == []
    assert not harness.manager.registration_attempts()[0].accepted


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
        (answer_error, r"NodePrepareResources failed for claim ns/c: no room$"),
        (answer_abort, r"NodePrepareResources failed: UNKNOWN: Exception calling application"),
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
