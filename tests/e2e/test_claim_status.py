"""--claim-status: the real daemon writes status.devices of what it prepared, and removes it.

The daemon runs as a process against the real API server. Claims are created with the
allocation the scheduler would write (through the status subresource, as admin), and the test
calls NodePrepareResources / NodeUnprepareResources on the daemon's DRA socket as the kubelet
does. The daemon itself authenticates as the plugin's real identity: the ServiceAccount of
deploy/rbac.yaml with a token bound to a Pod on the daemon's node, so the API server's
authorization (RBAC ``resourceclaims/status`` update plus the 1.36 granular
``resourceclaims/driver`` ``associated-node:update``) is what lets the writes through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.testing.cluster import ControlPlane, load_yaml, temporary_objects
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import (
    DEPLOY_DIR,
    K100,
    Z100_A,
    Z100_B,
    DaemonNode,
    DaemonNodeFactory,
    allocated_claim,
    prepare,
    share,
    unprepare,
)

pytestmark = pytest.mark.e2e

OTHER_DRIVER = "nic.test.example.com"


@pytest.fixture(scope="module")
def plugin_rbac(control_plane: ControlPlane) -> Iterator[None]:
    """deploy/rbac.yaml's ServiceAccount and ClusterRole(Binding) (created for this module)."""
    documents = load_yaml((DEPLOY_DIR / "rbac.yaml").read_text())
    with temporary_objects(control_plane.client, documents):
        yield


@pytest.fixture
def status_node(plugin_rbac: None, daemon_node: DaemonNodeFactory) -> DaemonNode:
    """The daemon with --claim-status, as the plugin's ServiceAccount on its node."""
    return daemon_node("--claim-status", plugin_identity=True)


def devices_of(kube: KubeClient, claim: dict[str, Any]) -> list[dict[str, Any]]:
    meta = claim["metadata"]
    current = kube.get(paths.resource_claims(meta["namespace"], meta["name"]))
    return list((current.get("status") or {}).get("devices") or [])


def ours(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in devices if d["driver"] == DRIVER_NAME]


def test_status_shows_the_share_and_is_removed_on_unprepare(
    status_node: DaemonNode, kube: KubeClient, namespace: str
) -> None:
    node = status_node.name
    vdcu = share("dcu", Z100_A, 12, "4Gi")
    other = {"request": "nic", "driver": OTHER_DRIVER, "device": "eth0"}
    claim = allocated_claim(kube, namespace, node, [vdcu, other])
    # Another driver's entry, written by an admin before ours: it must survive our writes.
    claim = kube.get(paths.resource_claims(namespace, claim["metadata"]["name"]))
    other_status = {"driver": OTHER_DRIVER, "pool": node, "device": "eth0", "data": {"ip": "x"}}
    claim["status"]["devices"] = [other_status]
    claim = kube.replace(
        paths.resource_claims(namespace, claim["metadata"]["name"], subresource="status"), claim
    )
    uid = claim["metadata"]["uid"]
    (other_stored,) = claim["status"]["devices"]  # as the server returns it (conditions: null)
    assert other_stored["data"] == other_status["data"]

    answer = prepare(status_node.plugin.dra_socket, claim)[uid]
    assert answer.error == ""

    def written() -> list[dict[str, Any]] | None:
        found = ours(devices_of(kube, claim))
        return found or None

    (entry,) = wait_for(
        written,
        timeout_s=10,
        description="our status.devices entry",
        details=lambda: status_node.plugin.log_tail(),
    )
    assert (entry["pool"], entry["device"], entry["shareID"]) == (node, Z100_A, vdcu["shareID"])
    (ready,) = entry["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Prepared")
    data = entry["data"]
    vdev_file = status_node.plugin.vdev_dir(uid) / "vdev0.conf"
    assert data["cores"] == 12 and data["memoryMiB"] == 4096 and data["wholeDevice"] is False
    assert data["vdevFile"] == str(vdev_file) and vdev_file.is_file()
    assert f"pipe_id: {data['pipeId']}" in vdev_file.read_text()
    assert data["cuMask"][0] in vdev_file.read_text()
    assert data["cus"] == "0-11"
    assert [d for d in devices_of(kube, claim) if d["driver"] == OTHER_DRIVER] == [other_stored]

    assert unprepare(status_node.plugin.dra_socket, claim) == {uid: ""}
    wait_for(
        lambda: not ours(devices_of(kube, claim)),
        timeout_s=10,
        description="our status.devices entry to be removed",
        details=lambda: status_node.plugin.log_tail(),
    )
    assert devices_of(kube, claim) == [other_stored]
    log = status_node.plugin.output()
    assert "cannot write the status" not in log and "Traceback" not in log


def test_a_whole_card_and_a_share_in_one_claim_get_one_entry_each(
    status_node: DaemonNode, kube: KubeClient, namespace: str
) -> None:
    whole = {"request": "big", "driver": DRIVER_NAME, "device": K100}
    claim = allocated_claim(
        kube, namespace, status_node.name, [share("dcu", Z100_B, 6, "1Gi"), whole]
    )
    uid = claim["metadata"]["uid"]
    assert prepare(status_node.plugin.dra_socket, claim)[uid].error == ""
    entries = wait_for(
        lambda: found if len(found := ours(devices_of(kube, claim))) == 2 else None,
        timeout_s=10,
        description="two status.devices entries",
        details=lambda: status_node.plugin.log_tail(),
    )
    by_device = {e["device"]: e for e in entries}
    assert "shareID" not in by_device[K100]
    assert (
        by_device[K100]["data"]["wholeDevice"] is True and by_device[K100]["data"]["cores"] == 120
    )
    assert by_device[Z100_B]["data"]["cores"] == 6
    # A repeated prepare (kubelet restart) changes nothing, not even the transition time.
    before = devices_of(kube, claim)
    assert prepare(status_node.plugin.dra_socket, claim)[uid].error == ""
    status_node.plugin.stop()
    assert devices_of(kube, claim) == before
