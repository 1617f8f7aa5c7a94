"""The real kubelet's DRA checkpoint, read as the demo's table needs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dra_driver.testing.realnode.kubelet import (
    DRA_CHECKPOINT,
    FEATURE_GATES,
    Kubelet,
    read_prepared_claims,
)

CDI_ID = "k8s.dcu.hygon.com/dcu=uid-1-dcu-0000-3b-00-0-share-1"


def write_checkpoint(root: Path, states: list[dict[str, object]]) -> None:
    """As pkg/kubelet/cm/dra/state writes it: the data as a JSON string inside JSON."""
    data = json.dumps(
        {
            "kind": "DRACheckpoint",
            "apiVersion": "checkpoint.dra.kubelet.k8s.io/v1",
            "ClaimInfoStateList": states,
        }
    )
    (root / DRA_CHECKPOINT).write_text(json.dumps({"Data": data, "Checksum": 1234}))


def test_claims_devices_and_pods_are_read(tmp_path: Path) -> None:
    device = {
        "PoolName": "127.0.0.2",
        "DeviceName": "dcu-0000-3b-00-0",
        "ShareID": "share-1",
        "RequestNames": ["dcu"],
        "CDIDeviceIDs": [CDI_ID],
    }
    write_checkpoint(
        tmp_path,
        [
            {
                "ClaimUID": "uid-1",
                "ClaimName": "shared-dcu",
                "Namespace": "dcu-shared",
                "PodUIDs": ["pod-a", "pod-b"],
                # The kubelet records a shared claim's devices again for its second pod.
                "DriverState": {"dcu.hygon.com": {"Devices": [device, device]}},
            }
        ],
    )
    (claim,) = read_prepared_claims(tmp_path).values()
    assert (claim.namespace, claim.name, claim.uid) == ("dcu-shared", "shared-dcu", "uid-1")
    assert claim.drivers == ("dcu.hygon.com",)
    assert claim.pod_uids == {"pod-a", "pod-b"}
    assert len(claim.devices) == 2
    first = claim.devices[0]
    assert (first.pool, first.device, first.share_id) == (
        "127.0.0.2",
        "dcu-0000-3b-00-0",
        "share-1",
    )
    assert first.cdi_device_ids == (CDI_ID,) and first.request_names == ("dcu",)


def test_no_checkpoint_is_nothing_prepared_and_a_broken_one_raises(tmp_path: Path) -> None:
    assert read_prepared_claims(tmp_path) == {}
    (tmp_path / DRA_CHECKPOINT).write_text("{}")
    with pytest.raises(KeyError):
        read_prepared_claims(tmp_path)


def kubelet(tmp_path: Path, **kwargs: object) -> Kubelet:
    return Kubelet(
        base=tmp_path,
        binary=tmp_path / "kubelet",
        node_ip="127.0.0.1",
        kubeconfig=tmp_path / "kubeconfig",
        runtime_endpoint="unix:///run/containerd.sock",
        cgroup_root="/x",
        port=10250,
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_kubelet_gets_the_default_gates_or_those_of_its_version(tmp_path: Path) -> None:
    assert kubelet(tmp_path).config()["featureGates"] == FEATURE_GATES
    older = {"DRAConsumableCapacity": True, "ResourceHealthStatus": True}
    assert kubelet(tmp_path, feature_gates=older).config()["featureGates"] == older
