"""The DRA health stream (v1alpha1 and v1) over a real unix socket, as the kubelet reads it.

Expectations come from kubelet-plugin-protocol.md §3 (paths, fields, timing) and §2.3
(advertised versions and their order).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from dra_driver.kubeletplugin._pb import (
    dra_health_v1_pb2,
    dra_health_v1_pb2_grpc,
    dra_health_v1alpha1_pb2,
    dra_health_v1alpha1_pb2_grpc,
    pluginregistration_pb2,
    pluginregistration_pb2_grpc,
)
from dra_driver.kubeletplugin.health_servicer import (
    HEALTH_CHECK_TIMEOUT_S,
    MAX_STREAMS,
    HealthService,
    add_health_services,
    truncate_message,
)
from dra_driver.kubeletplugin.plugin_server import KubeletPluginServer
from dra_driver.kubeletplugin.server import UnixSocketServer
from dra_driver.node.devices import DeviceName
from dra_driver.node.health import DeviceHealth, HealthBoard, HealthStatus, UnhealthyReason
from tests.kubeletplugin.test_servicer import DRIVER, NODE, FakeClaims, FakePlugin

TIMEOUT_S = 10
DEV_A = DeviceName("dcu-0000-3b-00-0")
DEV_B = DeviceName("dcu-0000-5e-00-0")
VERSIONS = {
    "v1alpha1": (dra_health_v1alpha1_pb2, dra_health_v1alpha1_pb2_grpc),
    "v1": (dra_health_v1_pb2, dra_health_v1_pb2_grpc),
}


def healthy(device: DeviceName, at: float = 1_785_000_000.9) -> DeviceHealth:
    return DeviceHealth(
        device=device,
        status=HealthStatus.HEALTHY,
        reason=None,
        message="",
        since=at,
        checked_at=at,
    )


def unhealthy(device: DeviceName, message: str, at: float = 1_785_000_005.2) -> DeviceHealth:
    return DeviceHealth(
        device=device,
        status=HealthStatus.UNHEALTHY,
        reason=UnhealthyReason.DEVICE_NODE_MISSING,
        message=message,
        since=at,
        checked_at=at,
    )


@dataclass
class Served:
    server: KubeletPluginServer
    board: HealthBoard
    channel: grpc.Channel
    registration: grpc.Channel

    def watch(self, version: str) -> Any:
        pb2, pb2_grpc = VERSIONS[version]
        return pb2_grpc.DRAResourceHealthStub(self.channel).NodeWatchResources(
            pb2.NodeWatchResourcesRequest(), timeout=30
        )


def start_server(base: Path, board: HealthBoard | None) -> KubeletPluginServer:
    server = KubeletPluginServer(
        driver_name=DRIVER,
        node_name=NODE,
        registrar_dir=base / "reg",
        data_dir=base / "data",
        plugin=FakePlugin(),
        get_claim=FakeClaims().get,
        health=board,
    )
    server.start()
    return server


@pytest.fixture
def served(short_sock_dir: Path) -> Iterator[Served]:
    board = HealthBoard([healthy(DEV_A), healthy(DEV_B)])
    server = start_server(short_sock_dir, board)
    try:
        with (
            grpc.insecure_channel(f"unix:{server.dra_socket}") as channel,
            grpc.insecure_channel(f"unix:{server.registration_socket}") as registration,
        ):
            yield Served(server, board, channel, registration)
    finally:
        server.stop(1)


def summary(response: Any) -> list[tuple[str, str, int, str]]:
    return [
        (d.device.pool_name, d.device.device_name, d.health, d.message) for d in response.devices
    ]


def test_get_info_advertises_health_after_the_dra_services(served: Served) -> None:
    info = pluginregistration_pb2_grpc.RegistrationStub(served.registration).GetInfo(
        pluginregistration_pb2.InfoRequest(), timeout=TIMEOUT_S
    )
    assert list(info.supported_versions) == [
        "v1.DRAPlugin",
        "v1beta1.DRAPlugin",
        "v1.DRAResourceHealth",
        "v1alpha1.DRAResourceHealth",
    ]


@pytest.mark.parametrize("version", ["v1alpha1", "v1"])
def test_the_full_list_comes_at_once_with_every_field(served: Served, version: str) -> None:
    pb2, _ = VERSIONS[version]
    call = served.watch(version)
    started = time.monotonic()
    first = next(call)
    assert time.monotonic() - started < 1
    assert summary(first) == [
        (NODE, DEV_A, pb2.HEALTHY, ""),
        (NODE, DEV_B, pb2.HEALTHY, ""),
    ]
    assert {d.last_updated_time for d in first.devices} == {1_785_000_000}
    assert {d.health_check_timeout_seconds for d in first.devices} == {HEALTH_CHECK_TIMEOUT_S}
    call.cancel()


@pytest.mark.parametrize("version", ["v1alpha1", "v1"])
def test_a_change_is_sent_at_once_with_its_message(served: Served, version: str) -> None:
    pb2, _ = VERSIONS[version]
    call = served.watch(version)
    next(call)
    started = time.monotonic()
    served.board.update([healthy(DEV_A), unhealthy(DEV_B, "/dev/dri/renderD130 missing")])
    changed = next(call)
    assert time.monotonic() - started < 1  # not after the 5 s resend interval
    assert summary(changed) == [
        (NODE, DEV_A, pb2.HEALTHY, ""),
        (NODE, DEV_B, pb2.UNHEALTHY, "/dev/dri/renderD130 missing"),
    ]
    assert changed.devices[1].last_updated_time == 1_785_000_005
    served.board.update([healthy(DEV_A), healthy(DEV_B)])
    assert [d.health for d in next(call).devices] == [pb2.HEALTHY, pb2.HEALTHY]
    call.cancel()


def test_unknown_health_is_sent_as_unknown(served: Served) -> None:
    unknown = DeviceHealth(
        device=DEV_A,
        status=HealthStatus.UNKNOWN,
        reason=None,
        message="cannot read",
        since=1.0,
        checked_at=1.0,
    )
    call = served.watch("v1")
    next(call)
    served.board.update([unknown])
    assert summary(next(call)) == [(NODE, DEV_A, dra_health_v1_pb2.UNKNOWN, "cannot read")]
    call.cancel()


def test_long_messages_are_cut_the_way_the_kubelet_cuts_them(served: Served) -> None:
    long = "x" * 2000
    assert truncate_message("y" * 1024) == "y" * 1024
    call = served.watch("v1")
    next(call)
    served.board.update([unhealthy(DEV_A, long)])
    message = next(call).devices[0].message
    assert (len(message), message[-4:]) == (1024, "x...")
    call.cancel()


def test_an_unchanged_list_is_sent_again_every_resend_interval(short_sock_dir: Path) -> None:
    board = HealthBoard([healthy(DEV_A)])
    service = HealthService(board, pool_name=NODE, resend_interval_s=0.2)
    server = UnixSocketServer(
        short_sock_dir / "h.sock",
        name="health",
        add_services=lambda s: add_health_services(s, service),
    )
    server.start()
    try:
        with grpc.insecure_channel(f"unix:{short_sock_dir / 'h.sock'}") as channel:
            call = dra_health_v1_pb2_grpc.DRAResourceHealthStub(channel).NodeWatchResources(
                dra_health_v1_pb2.NodeWatchResourcesRequest(), timeout=30
            )
            next(call)
            board.update([healthy(DEV_A, at=1_785_000_100.0)])  # a check with no news
            started = time.monotonic()
            again = [next(call), next(call)]
            elapsed = time.monotonic() - started
            assert 0.3 <= elapsed < 2, elapsed
            # Each resend carries the time of the latest check.
            assert [r.devices[0].last_updated_time for r in again] == [1_785_000_100] * 2
            call.cancel()
    finally:
        server.stop(1)


def test_stop_ends_streams_cleanly_without_waiting_for_the_grace_period(
    short_sock_dir: Path,
) -> None:
    board = HealthBoard([healthy(DEV_A)])
    server = start_server(short_sock_dir, board)
    with grpc.insecure_channel(f"unix:{server.dra_socket}") as channel:
        call = dra_health_v1alpha1_pb2_grpc.DRAResourceHealthStub(channel).NodeWatchResources(
            dra_health_v1alpha1_pb2.NodeWatchResourcesRequest(), timeout=30
        )
        next(call)
        started = time.monotonic()
        server.stop(10)
        assert time.monotonic() - started < 3
        assert list(call) == []  # no error: the stream simply ends
        assert call.code() is grpc.StatusCode.OK


def test_streams_beyond_the_limit_are_refused_and_a_closed_one_frees_its_slot(
    served: Served,
) -> None:
    calls = [served.watch("v1") for _ in range(MAX_STREAMS)]
    for call in calls:
        next(call)
    assert served.server.health is not None
    assert served.server.health.open_streams == MAX_STREAMS
    extra = served.watch("v1alpha1")
    with pytest.raises(grpc.RpcError) as refused:
        next(extra)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "already serving 4 health streams" in str(refused.value.details())

    calls[0].cancel()
    deadline = time.monotonic() + 5
    while served.server.health.open_streams >= MAX_STREAMS and time.monotonic() < deadline:
        time.sleep(0.02)
    assert served.server.health.open_streams == MAX_STREAMS - 1
    replacement = served.watch("v1alpha1")
    assert len(next(replacement).devices) == 2
    for call in [*calls[1:], replacement]:
        call.cancel()


def test_prepare_calls_still_get_workers_while_health_streams_are_open(served: Served) -> None:
    from dra_driver.kubeletplugin._pb import dra_v1_pb2, dra_v1_pb2_grpc

    calls = [served.watch("v1") for _ in range(MAX_STREAMS)]
    for call in calls:
        next(call)
    results: list[Any] = []

    def unprepare(n: int) -> None:
        stub = dra_v1_pb2_grpc.DRAPluginStub(served.channel)
        results.append(
            stub.NodeUnprepareResources(
                dra_v1_pb2.NodeUnprepareResourcesRequest(
                    claims=[
                        dra_v1_pb2.Claim(
                            namespace="ns", name=f"c{n}", uid=f"00000000-0000-4000-8000-{n:012d}"
                        )
                    ]
                ),
                timeout=TIMEOUT_S,
            )
        )

    threads = [threading.Thread(target=unprepare, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert len(results) == 8
    for call in calls:
        call.cancel()


@pytest.mark.parametrize("version", ["v1alpha1", "v1"])
def test_without_health_the_service_is_unimplemented_and_not_advertised(
    short_sock_dir: Path, version: str
) -> None:
    server = start_server(short_sock_dir, None)
    try:
        with (
            grpc.insecure_channel(f"unix:{server.dra_socket}") as channel,
            grpc.insecure_channel(f"unix:{server.registration_socket}") as registration,
        ):
            pb2, pb2_grpc = VERSIONS[version]
            call = pb2_grpc.DRAResourceHealthStub(channel).NodeWatchResources(
                pb2.NodeWatchResourcesRequest(), timeout=TIMEOUT_S
            )
            with pytest.raises(grpc.RpcError) as error:
                next(call)
            assert error.value.code() is grpc.StatusCode.UNIMPLEMENTED
            info = pluginregistration_pb2_grpc.RegistrationStub(registration).GetInfo(
                pluginregistration_pb2.InfoRequest(), timeout=TIMEOUT_S
            )
            assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    finally:
        server.stop(1)


# --- the fake kubelet's side of the stream ------------------------------------------------------


def wait_until(predicate: Any, *, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_the_fake_kubelet_reads_the_stream_and_ages_reports_to_unknown(served: Served) -> None:
    from dra_driver.testing.fakekubelet.health import HealthWatcher

    now = [1_785_000_001.0]
    watcher = HealthWatcher(api="v1alpha1", retry_interval_s=0.1, clock=lambda: now[0])
    watcher.watch(driver=DRIVER, endpoint=str(served.server.dra_socket), channel=served.channel)
    try:
        wait_until(lambda: len(watcher.device_health(DRIVER)) == 2)
        report = watcher.device_health(DRIVER)[(NODE, DEV_A)]
        assert (report.health, report.last_updated, report.timeout_s) == (
            "Healthy",
            1_785_000_000,
            HEALTH_CHECK_TIMEOUT_S,
        )
        served.board.update([healthy(DEV_A), unhealthy(DEV_B, "gone", at=1_785_000_001.0)])
        wait_until(lambda: watcher.device_health(DRIVER)[(NODE, DEV_B)].health == "Unhealthy")
        assert watcher.device_health(DRIVER)[(NODE, DEV_B)].message == "gone"
        now[0] += 31  # no fresh report within the timeout: the kubelet says Unknown
        stale = watcher.device_health(DRIVER)[(NODE, DEV_A)]
        assert (stale.health, stale.message) == ("Unknown", "no health report for 32 s")
        assert [e.kind for e in watcher.events(DRIVER)][:2] == ["opened", "response"]
    finally:
        watcher.stop()


def test_the_fake_kubelet_stops_watching_a_plugin_without_health(short_sock_dir: Path) -> None:
    from dra_driver.testing.fakekubelet.health import HealthWatcher

    server = start_server(short_sock_dir, None)
    watcher = HealthWatcher(api="v1", retry_interval_s=0.05)
    try:
        with grpc.insecure_channel(f"unix:{server.dra_socket}") as channel:
            watcher.watch(driver=DRIVER, endpoint=str(server.dra_socket), channel=channel)
            wait_until(lambda: any(e.kind == "unimplemented" for e in watcher.events()))
            time.sleep(0.3)  # several retry intervals: no second attempt
            assert [e.kind for e in watcher.events()] == ["opened", "unimplemented"]  # one try
            assert watcher.device_health() == {}
    finally:
        watcher.stop()
        server.stop(1)
