"""The real daemon registers with a (fake) kubelet and deregisters cleanly on SIGTERM.

``dcu-dra kubelet-plugin`` runs as a process on a mock DCU node, with the fake kubelet's
registration directory and a plugin data dir under its plugins directory, exactly as the
DaemonSet mounts them. A second test runs ``daemon.run`` in this process with an injected
Plugin, to show the factory is what the kubelet's calls reach.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

from dra_driver import DRIVER_NAME, daemon
from dra_driver.config import PluginConfig
from dra_driver.errors import DriverError
from dra_driver.kubeletplugin._pb import dra_v1_pb2, dra_v1_pb2_grpc
from dra_driver.node.devices import Inventory
from dra_driver.node.mock import create_mock_node, parse_config
from dra_driver.prepare.model import Claim, ClaimRef, ClaimUID, PrepareResult
from dra_driver.testing.cluster import ControlPlane
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import ONE_Z100, DcuNodeFactory, FakeKubeletFactory

pytestmark = pytest.mark.e2e


def test_daemon_registers_and_deregisters_on_sigterm(dcu_node: DcuNodeFactory) -> None:
    node = dcu_node()
    kubelet, plugin = node.kubelet, node.plugin
    assert kubelet.plugins_dir is not None
    data_dir = kubelet.plugins_dir / DRIVER_NAME
    registered = kubelet.wait_for_plugin(DRIVER_NAME, timeout_s=30)
    dra_socket = data_dir / "dra.sock"
    registration_socket = kubelet.registry_dir / f"{DRIVER_NAME}-reg.sock"
    assert registered.service == "v1.DRAPlugin"
    assert registered.endpoint == str(dra_socket)
    assert registered.socket_path == str(registration_socket)
    assert registered.supported_versions == (
        "v1.DRAPlugin",
        "v1beta1.DRAPlugin",
        "v1.DRAResourceHealth",
        "v1alpha1.DRAResourceHealth",
    )
    # The kubelet registers a plugin before it sends NotifyRegistrationStatus; the attempt
    # is recorded once that answer is in, a moment after the plugin shows as registered.
    (attempt,) = wait_for(
        kubelet.registration_attempts, timeout_s=10, description="the registration attempt"
    )
    assert attempt.accepted and attempt.error is None
    wait_for(
        lambda: "registered with the kubelet as DRA driver" in plugin.output(),
        timeout_s=10,
        description="the daemon to log its registration",
    )
    for path in (dra_socket, registration_socket):
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600, path
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700

    assert plugin.stop(signal.SIGTERM) == 0, plugin.log_tail()
    assert not dra_socket.exists()
    assert not registration_socket.exists()
    wait_for(
        lambda: not kubelet.registered_plugins(),
        timeout_s=10,
        description="the fake kubelet to notice the plugin is gone",
        details=kubelet.registered_plugins,
    )
    output = plugin.output()
    assert "Traceback" not in output
    assert "deregistering from the kubelet" in output
    assert "stopped; ResourceSlices stay published" in output


class RecordingPlugin:
    """A stand-in core: records unprepare calls, never prepares anything."""

    def __init__(self) -> None:
        self.unprepared: list[list[ClaimRef]] = []

    def prepare_claims(
        self, claims: Sequence[Claim]
    ) -> dict[ClaimUID, PrepareResult | DriverError]:
        return {claim.ref.uid: DriverError("not in this test") for claim in claims}

    def unprepare_claims(self, refs: Sequence[ClaimRef]) -> dict[ClaimUID, DriverError | None]:
        self.unprepared.append(list(refs))
        return {ref.uid: None for ref in refs}


def test_daemon_serves_an_injected_plugin(
    control_plane: ControlPlane, fake_kubelet: FakeKubeletFactory, short_sock_dir: Path
) -> None:
    """``run(plugin_factory=...)`` in this process: the factory gets the discovered inventory,
    and the kubelet's calls reach the plugin it built."""
    kubelet = fake_kubelet()
    assert kubelet.plugins_dir is not None
    root = short_sock_dir / "node"
    create_mock_node(root, parse_config({"devices": ONE_Z100}))
    config = PluginConfig(
        node_name=kubelet.node_name,
        root=root,
        kubeconfig=control_plane.kubeconfig,
        registrar_dir=kubelet.registry_dir,
        plugin_data_dir=kubelet.plugins_dir / DRIVER_NAME,
        cdi_dir=short_sock_dir / "cdi",
    )
    plugin = RecordingPlugin()
    built: list[Inventory] = []

    def factory(inventory: Inventory, given: PluginConfig) -> RecordingPlugin:
        assert given is config
        built.append(inventory)
        return plugin

    claim_uid = "00000000-0000-4000-8000-000000000001"
    outcome: list[object] = []

    def kubelet_side() -> None:
        try:
            registered = kubelet.wait_for_plugin(DRIVER_NAME, timeout_s=30)
            with grpc.insecure_channel(f"unix:{registered.endpoint}") as channel:
                response = dra_v1_pb2_grpc.DRAPluginStub(channel).NodeUnprepareResources(
                    dra_v1_pb2.NodeUnprepareResourcesRequest(
                        claims=[dra_v1_pb2.Claim(namespace="ns", name="c", uid=claim_uid)]
                    ),
                    timeout=10,
                )
            outcome.append(dict(response.claims))
        except BaseException as exc:  # reported by the main thread
            outcome.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    helper = threading.Thread(target=kubelet_side, daemon=True)
    helper.start()
    try:
        assert daemon.run(config, plugin_factory=factory) == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        helper.join(timeout=30)
    (result,) = outcome
    assert isinstance(result, dict), result
    assert list(result) == [claim_uid] and result[claim_uid].error == ""
    assert [[ref.uid for ref in call] for call in plugin.unprepared] == [[claim_uid]]
    assert [device.name for inventory in built for device in inventory.devices] == [
        "dcu-0000-3b-00-0"
    ]
    assert not (kubelet.plugins_dir / DRIVER_NAME / "dra.sock").exists()
