"""The real daemon answering the kubelet's DRA calls directly over its socket.

Claims are created in the real API server with the allocation the scheduler would write
(through the status subresource), and the test calls NodePrepareResources /
NodeUnprepareResources on the daemon's DRA socket exactly as the kubelet does: v1 and
v1beta1, a claim with two DCUs, 64 calls in parallel, and a reboot (a new boot id).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dra_driver.cluster.kube import KubeClient
from dra_driver.kubeletplugin._pb import (
    dra_v1_pb2,
    dra_v1_pb2_grpc,
    dra_v1beta1_pb2,
    dra_v1beta1_pb2_grpc,
)
from dra_driver.prepare import checkpoint
from dra_driver.vdcu.vdev import read_vdev_dir
from tests.e2e.conftest import (
    K100,
    Z100_A,
    Z100_AND_K100,
    DaemonNodeFactory,
    allocated_claim,
    prepare,
    share,
    v1_ref,
)

pytestmark = pytest.mark.e2e


def test_a_claim_with_two_dcus_gets_both_in_its_vdev_dir(
    daemon_node: DaemonNodeFactory, kube: KubeClient, namespace: str
) -> None:
    daemon = daemon_node(devices=Z100_AND_K100)
    claim = allocated_claim(
        kube, namespace, daemon.name, [share("b", K100, 60, "8Gi"), share("a", Z100_A, 15, "4Gi")]
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
    vdevs = read_vdev_dir(daemon.plugin.vdev_dir(ref.uid))
    # Node-wide vdev numbers; device_id counts within each request ("a" and "b" hold one DCU).
    assert [(v.pci_bus_id, v.device_id, v.vdev_id, v.cu_count, v.memory_mib) for v in vdevs] == [
        ("0000:3b:00.0", 0, 0, 15, 4096),
        ("0000:af:00.0", 0, 1, 60, 8192),
    ]
    done = stub.NodeUnprepareResources(
        dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[ref]), timeout=45
    )
    assert done.claims[ref.uid].error == ""
    assert not daemon.plugin.vdev_dir(ref.uid).exists()


def test_v1beta1_calls_work_without_share_ids(
    daemon_node: DaemonNodeFactory, kube: KubeClient, namespace: str
) -> None:
    daemon = daemon_node(devices=Z100_AND_K100)
    claim = allocated_claim(kube, namespace, daemon.name, [share("dcu", Z100_A, 10, "1Gi")])
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
    daemon_node: DaemonNodeFactory, kube: KubeClient, namespace: str
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
    daemon = daemon_node(devices=devices)
    claims = [
        allocated_claim(
            kube,
            namespace,
            daemon.name,
            [share("dcu", f"dcu-0000-{0x10 + i // 4:02x}-00-0", 15, "8Gi")],
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
        (vdev,) = read_vdev_dir(daemon.plugin.vdev_dir(claim["metadata"]["uid"]))
        for other in seen.setdefault(vdev.pci_bus_id, []):
            assert not vdev.mask.overlaps(other.mask) and vdev.pipe_id != other.pipe_id
        seen[vdev.pci_bus_id].append(vdev)
    assert sorted(len(v) for v in seen.values()) == [4] * 16


def test_a_new_boot_id_drops_prepared_claims(
    daemon_node: DaemonNodeFactory, kube: KubeClient, namespace: str
) -> None:
    daemon = daemon_node(devices=Z100_AND_K100)
    claim = allocated_claim(kube, namespace, daemon.name, [share("dcu", Z100_A, 60, "32752Mi")])
    uid = claim["metadata"]["uid"]
    assert prepare(daemon.plugin.dra_socket, claim)[uid].error == ""
    assert list(daemon.plugin.cdi_dir.iterdir())
    assert daemon.plugin.stop() == 0, daemon.plugin.log_tail()
    daemon.boot_id_file.write_text("boot-2\n")
    daemon.plugin.restart().wait_for_registration_socket()
    state = checkpoint.load(daemon.plugin.data_dir / "checkpoint.json", boot_id="x")
    assert (state.boot_id, state.claims) == ("boot-2", {})
    assert list(daemon.plugin.cdi_dir.iterdir()) == []
    # The kubelet prepares the claims of its running pods again after a reboot: that works.
    assert prepare(daemon.plugin.dra_socket, claim)[uid].error == ""
