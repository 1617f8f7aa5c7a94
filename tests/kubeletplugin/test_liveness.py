"""The gRPC liveness endpoint against the real kubelet-facing servers on real sockets."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dra_driver import cli
from dra_driver.config import ConfigError, PluginConfig
from dra_driver.kubeletplugin.liveness import (
    NOT_SERVING,
    SERVING,
    LivenessServer,
    LivenessServerError,
    LivenessServicer,
    check_sockets,
)
from dra_driver.kubeletplugin.plugin_server import KubeletPluginServer
from tests.kubeletplugin.test_servicer import DRIVER, FakeClaims, FakePlugin


@dataclass
class Probed:
    plugin: KubeletPluginServer
    liveness: LivenessServer
    channel: grpc.Channel

    def check(self, service: str = "liveness") -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(response.status)


@pytest.fixture
def probed(short_sock_dir: Path) -> Iterator[Probed]:
    """The plugin's servers with a fake Plugin, and the liveness server on a free port."""
    plugin = KubeletPluginServer(
        driver_name=DRIVER,
        node_name="node-a",
        registrar_dir=short_sock_dir / "reg",
        data_dir=short_sock_dir / "data",
        plugin=FakePlugin(),
        get_claim=FakeClaims().get,
    )
    liveness = LivenessServer(
        LivenessServicer(
            registration_socket=plugin.registration_socket,
            dra_socket=plugin.dra_socket,
            timeout_s=0.5,
        ),
        host="127.0.0.1",
        port=0,
    )
    plugin.start()
    liveness.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{liveness.port}") as channel:
            yield Probed(plugin, liveness, channel)
    finally:
        liveness.stop()
        plugin.stop(1)


def test_serving_while_both_sockets_answer(probed: Probed) -> None:
    assert probed.liveness.port > 0
    assert probed.check("liveness") == SERVING
    assert probed.check("") == SERVING


def test_other_services_are_not_found(probed: Probed) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        probed.check("dcu.hygon.com")
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("gone", ["dra", "registration"])
def test_not_serving_when_a_socket_file_is_gone(
    probed: Probed, gone: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server still runs, but nobody can connect to it any more: that is dead to the kubelet."""
    path = probed.plugin.dra_socket if gone == "dra" else probed.plugin.registration_socket
    assert probed.check() == SERVING
    path.unlink()
    with caplog.at_level(logging.INFO, logger="dra_driver.kubeletplugin.liveness"):
        assert probed.check() == NOT_SERVING
        assert probed.check() == NOT_SERVING
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # changes are logged, not every probe
    assert warnings[0].startswith(f"liveness: NOT_SERVING: the {gone.replace('dra', 'DRA')} ")
    assert str(path) in warnings[0]


def test_not_serving_after_the_plugin_stopped(probed: Probed) -> None:
    probed.plugin.stop(0)
    assert probed.check() == NOT_SERVING


def test_not_serving_once_shutting_down(probed: Probed) -> None:
    probed.liveness.servicer.shut_down()
    assert probed.check() == NOT_SERVING


def test_the_daemon_s_stop_event_turns_it_not_serving_at_once(probed: Probed) -> None:
    """The daemon passes its own stop event: the first signal flips liveness, before the drain."""
    stopping = threading.Event()
    liveness = LivenessServer(
        LivenessServicer(
            registration_socket=probed.plugin.registration_socket,
            dra_socket=probed.plugin.dra_socket,
            shutting_down=stopping,
        ),
        host="127.0.0.1",
        port=0,
    )
    liveness.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{liveness.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="liveness")
            assert stub.Check(request, timeout=5).status == SERVING
            stopping.set()
            assert stub.Check(request, timeout=5).status == NOT_SERVING
    finally:
        liveness.stop()


def test_a_socket_that_accepts_but_never_answers_is_not_serving(short_sock_dir: Path) -> None:
    """A hung plugin: the socket takes connections, but no gRPC ever comes back."""
    hung = short_sock_dir / "hung.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(hung))
        listener.listen(8)
        started = time.monotonic()
        problem = check_sockets(registration_socket=hung, dra_socket=hung, timeout_s=0.3)
        elapsed = time.monotonic() - started
    assert problem is not None
    assert problem.startswith(f"the registration socket {hung} does not answer: DEADLINE_EXCEEDED")
    assert elapsed < 2


def test_a_busy_port_is_one_clear_error(probed: Probed) -> None:
    taken = LivenessServer(probed.liveness.servicer, host="127.0.0.1", port=probed.liveness.port)
    with pytest.raises(
        LivenessServerError,
        match=rf"^cannot serve the liveness endpoint on 127\.0\.0\.1:{probed.liveness.port}",
    ):
        taken.start()


def test_listens_on_every_interface_by_default(short_sock_dir: Path) -> None:
    """The kubelet probes the pod's IP: [::] must take IPv4 connections too."""
    liveness = LivenessServer(
        LivenessServicer(
            registration_socket=short_sock_dir / "none.sock", dra_socket=short_sock_dir / "x"
        ),
        port=0,
    )
    liveness.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{liveness.port}") as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="liveness"), timeout=5
            )
        assert response.status == NOT_SERVING  # reachable; no plugin sockets behind it
    finally:
        liveness.stop()


def test_healthcheck_port_flag_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["kubelet-plugin", "--node-name", "n"]
    assert cli.build_parser().parse_args(base).healthcheck_port == 0
    assert cli.build_parser().parse_args([*base, "--healthcheck-port", "51515"]).healthcheck_port
    monkeypatch.setenv("HEALTHCHECK_PORT", "51516")
    assert cli.build_parser().parse_args(base).healthcheck_port == 51516
    monkeypatch.setenv("HEALTHCHECK_PORT", "high")
    with pytest.raises(SystemExit, match=r"HEALTHCHECK_PORT='high' is not a whole number$"):
        cli.build_parser()
    PluginConfig(node_name="n", healthcheck_port=51515).validate()
    with pytest.raises(ConfigError, match=r"^--healthcheck-port 70000 must be a TCP port"):
        PluginConfig(node_name="n", healthcheck_port=70000).validate()
