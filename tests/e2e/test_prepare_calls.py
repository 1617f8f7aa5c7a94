"""The real daemon answering the kubelet's DRA calls directly over its socket.

Claims are created in the real API server with the allocation the scheduler would write
(through the status subresource), and the test calls NodePrepareResources /
NodeUnprepareResources on the daemon's DRA socket exactly as the kubelet does: v1 and
v1beta1, a claim with two DCUs, 64 calls in parallel, and a reboot (a new boot id).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dra_driver import checkpoint
from dra_driver.kube import KubeClient, paths
from dra_driver.kubeletplugin._pb import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
)
from dra_driver.mock import create_mock_node, parse_config
from dra_driver.testing.cluster import ControlPlane, unique_name
from dra_driver.testing.waiting import wait_for
from dra_driver.vdev import read_vdev_dir
from tests.e2e.test_publisher import DCU_DRA

pytestmark = pytest.mark.e2e

Z100_A, K100 = "dcu-0000-3b-00-0", "dcu-0000-af-00-0"


class Daemon:
    """One ``dcu-dra kubelet-plugin`` with its own node, directories and boot id file."""

    def __init__(self, plane: ControlPlane, base: Path, devices: list[dict[str, object]] | None):
        self.kube = plane.client
        self.node = unique_name("calls")
        self.base = base
        self.root = base / "root"
        create_mock_node(
            self.root,
            parse_config({"devices": devices})
            if devices
            else None
            or parse_config(
                {
                    "devices": [
                        {
                            "model": "Z100",
                            "computeUnits": 60,
                            "memory": 34342961152,
                            "pciBusID": "0000:3b:00.0",
                        },
                        {
                            "model": "K100_AI",
                            "computeUnits": 120,
                            "memory": "64Gi",
                            "pciBusID": "0000:af:00.0",
                        },
                    ]
                }
            ),
        )
        self.data = base / "data"
        self.cdi = base / "cdi"
        self.boot_id = base / "boot_id"
        self.boot_id.write_text("boot-1\n")
        self.kubeconfig = plane.kubeconfig
        self.process: subprocess.Popen[bytes] | None = None
        self.kube.create(
            paths.nodes(), {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node}}
        )

    def start(self) -> Daemon:
        log = (self.base / "plugin.log").open("ab")
        self.process = subprocess.Popen(
            [
                DCU_DRA,
                "kubelet-plugin",
                "--node-name",
                self.node,
                "--root",
                str(self.root),
                "--kubeconfig",
                str(self.kubeconfig),
                "--registrar-dir",
                str(self.base / "reg"),
                "--plugin-data-dir",
                str(self.data),
                "--cdi-dir",
                str(self.cdi),
                "--boot-id-file",
                str(self.boot_id),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(
            lambda: (self.base / "reg" / "dcu.hygon.com-reg.sock").exists(),
            timeout_s=30,
            description="the plugin's registration socket",
        )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=20) == 0

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"unix:{self.data / 'dra.sock'}")

    def allocated_claim(self, namespace: str, results: list[dict[str, Any]]) -> dict[str, Any]:
        """Create a claim and write the allocation the scheduler would."""
        name = unique_name("claim")
        created = self.kube.create(
            paths.resource_claims(namespace),
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "devices": {
                        "requests": [
                            {
                                "name": r["request"],
                                "exactly": {"deviceClassName": "vdcu.dcu.hygon.com"},
                            }
                            for r in results
                        ]
                    }
                },
            },
        )
        created["status"] = {
            "allocation": {
                "devices": {
                    "results": [
                        {"driver": "dcu.hygon.com", "pool": self.node, **r} for r in results
                    ]
                },
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": [self.node]}
                            ]
                        }
                    ]
                },
            }
        }
        return self.kube.replace(paths.resource_claims(namespace, name) + "/status", created)


def share(request: str, device: str, cores: int, memory: str) -> dict[str, Any]:
    return {
        "request": request,
        "device": device,
        "shareID": str(uuid.uuid4()),
        "consumedCapacity": {"cores": str(cores), "memory": memory, "vdevices": "1"},
    }


@pytest.fixture
def daemon_factory(control_plane: ControlPlane) -> Iterator[Any]:
    started: list[Daemon] = []
    base = Path(tempfile.mkdtemp(prefix="dc-", dir="/tmp"))

    def make(devices: list[dict[str, object]] | None = None) -> Daemon:
        daemon = Daemon(control_plane, base / f"d{len(started)}", devices)
        started.append(daemon)
        return daemon.start()

    yield make
    for daemon in started:
        if daemon.process is not None:
            if daemon.process.poll() is None:
                daemon.process.kill()
            daemon.process.wait(timeout=20)
        daemon.kube.delete(paths.nodes(daemon.node))
    shutil.rmtree(base, ignore_errors=True)


def v1_ref(claim: dict[str, Any]) -> dra_v1_pb2.Claim:
    meta = claim["metadata"]
    return dra_v1_pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def test_a_claim_with_two_dcus_gets_both_in_one_vdev_dir(
    daemon_factory: Any, kube: KubeClient, namespace: str
) -> None:
    daemon = daemon_factory()
    claim = daemon.allocated_claim(
        namespace, [share("b", K100, 60, "8Gi"), share("a", Z100_A, 15, "4Gi")]
    )
    ref = v1_ref(claim)
    stub = dra_v1_pb2_grpc.DRAPluginStub(daemon.channel())
    response = stub.NodePrepareResources(
        dra_v1_pb2.NodePrepareResourcesRequest(claims=[ref]), timeout=45
    )
    entry = response.claims[ref.uid]
    assert entry.error == ""
    assert [(d.device_name, list(d.request_names)) for d in entry.devices] == [
        (Z100_A, ["a"]),
        (K100, ["b"]),
    ]
    assert all(d.HasField("share_id") for d in entry.devices)
    vdevs = read_vdev_dir(daemon.data / "vdev" / ref.uid)
    assert [(v.pci_bus_id, v.device_id, v.vdev_id, v.cu_count, v.memory_mib) for v in vdevs] == [
        ("0000:3b:00.0", 0, 0, 15, 4096),
        ("0000:af:00.0", 1, 1, 60, 8192),
    ]
    done = stub.NodeUnprepareResources(
        dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[ref]), timeout=45
    )
    assert done.claims[ref.uid].error == ""
    assert not (daemon.data / "vdev" / ref.uid).exists()


def test_v1beta1_calls_work_without_share_ids(
    daemon_factory: Any, kube: KubeClient, namespace: str
) -> None:
    daemon = daemon_factory()
    claim = daemon.allocated_claim(namespace, [share("dcu", Z100_A, 10, "1Gi")])
    meta = claim["metadata"]
    ref = dra_v1beta1_pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
    stub = dra_v1beta1_pb2_grpc.DRAPluginStub(daemon.channel())
    response = stub.NodePrepareResources(
        dra_v1beta1_pb2.NodePrepareResourcesRequest(claims=[ref]), timeout=45
    )
    (device,) = response.claims[ref.uid].devices
    assert response.claims[ref.uid].error == ""
    assert list(device.cdi_device_ids) == [
        f"k8s.dcu.hygon.com/dcu={meta['uid']}-{Z100_A}-"
        f"{claim['status']['allocation']['devices']['results'][0]['shareID']}"
    ]
    assert "share_id" not in dra_v1beta1_pb2.Device.DESCRIPTOR.fields_by_name
    stub.NodeUnprepareResources(
        dra_v1beta1_pb2.NodeUnprepareResourcesRequest(claims=[ref]), timeout=45
    )


def test_64_parallel_prepare_calls_over_16_dcus(
    daemon_factory: Any, kube: KubeClient, namespace: str
) -> None:
    devices: list[dict[str, object]] = [
        {
            "model": "Z100",
            "computeUnits": 60,
            "memory": "32Gi",
            "pciBusID": f"0000:{0x10 + i:02x}:00.0",
        }
        for i in range(16)
    ]
    daemon = daemon_factory(devices)
    claims = [
        daemon.allocated_claim(
            namespace, [share("dcu", f"dcu-0000-{0x10 + i // 4:02x}-00-0", 15, "8Gi")]
        )
        for i in range(64)
    ]
    errors: list[str] = []

    def prepare(claim: dict[str, Any]) -> None:
        with daemon.channel() as channel:
            stub = dra_v1_pb2_grpc.DRAPluginStub(channel)
            ref = v1_ref(claim)
            response = stub.NodePrepareResources(
                dra_v1_pb2.NodePrepareResourcesRequest(claims=[ref]), timeout=45
            )
            if response.claims[ref.uid].error:
                errors.append(response.claims[ref.uid].error)

    threads = [threading.Thread(target=prepare, args=(c,)) for c in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    seen: dict[str, list[Any]] = {}
    for claim in claims:
        (vdev,) = read_vdev_dir(daemon.data / "vdev" / claim["metadata"]["uid"])
        for other in seen.setdefault(vdev.pci_bus_id, []):
            assert not vdev.mask.overlaps(other.mask) and vdev.pipe_id != other.pipe_id
        seen[vdev.pci_bus_id].append(vdev)
    assert sorted(len(v) for v in seen.values()) == [4] * 16


def test_a_new_boot_id_drops_prepared_claims(
    daemon_factory: Any, kube: KubeClient, namespace: str
) -> None:
    daemon = daemon_factory()
    claim = daemon.allocated_claim(namespace, [share("dcu", Z100_A, 60, "32752Mi")])
    ref = v1_ref(claim)
    stub = dra_v1_pb2_grpc.DRAPluginStub(daemon.channel())
    assert (
        stub.NodePrepareResources(dra_v1_pb2.NodePrepareResourcesRequest(claims=[ref]), timeout=45)
        .claims[ref.uid]
        .error
        == ""
    )
    assert list(daemon.cdi.iterdir())
    daemon.stop()
    daemon.boot_id.write_text("boot-2\n")
    daemon.start()
    state = checkpoint.load(daemon.data / "checkpoint.json", boot_id="x")
    assert (state.boot_id, state.claims) == ("boot-2", {})
    assert list(daemon.cdi.iterdir()) == []
    # The kubelet prepares the claims of its running pods again after a reboot: that works.
    stub = dra_v1_pb2_grpc.DRAPluginStub(daemon.channel())
    assert (
        stub.NodePrepareResources(dra_v1_pb2.NodePrepareResourcesRequest(claims=[ref]), timeout=45)
        .claims[ref.uid]
        .error
        == ""
    )
