"""--claim-status: the real daemon writes status.devices of what it prepared, and removes it.

The daemon runs as a process against the real API server. Claims are created with the
allocation the scheduler would write (through the status subresource, as admin), and the test
calls NodePrepareResources / NodeUnprepareResources on the daemon's DRA socket as the kubelet
does. The daemon itself authenticates as the plugin's real identity: the ServiceAccount of
deploy/rbac.yaml with a token bound to a Pod on the daemon's node, so the API server's
authorization (RBAC ``resourceclaims/status`` update plus the 1.36 granular
``resourceclaims/driver`` ``associated-node:update``) is what lets the writes through.

Also holds the helpers the other operations e2e tests share (test_rolling_update.py,
test_orphans.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from dra_driver import DRIVER_NAME
from dra_driver.kube import AlreadyExists, ApiError, KubeClient, NotFound, paths
from dra_driver.kubeletplugin._pb import dra_v1_pb2, dra_v1_pb2_grpc
from dra_driver.mock import create_mock_node
from dra_driver.testing.cluster import ControlPlane, load_yaml, unique_name
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for

pytestmark = pytest.mark.e2e

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
PLUGIN_NAMESPACE = "dcu-dra"
PLUGIN_ACCOUNT = "dcu-dra-kubelet-plugin"
Z100_A, Z100_B, K100 = "dcu-0000-3b-00-0", "dcu-0000-5e-00-0", "dcu-0000-af-00-0"
OTHER_DRIVER = "nic.test.example.com"


# --- helpers shared by the operations e2e tests -------------------------------------------


def share(request: str, device: str, cores: int, memory: str) -> dict[str, Any]:
    """An allocation result of a vDCU share, as the scheduler writes it."""
    return {
        "request": request,
        "driver": DRIVER_NAME,
        "device": device,
        "shareID": str(uuid.uuid4()),
        "consumedCapacity": {"cores": str(cores), "memory": memory, "vdevices": "1"},
    }


def allocated_claim(
    kube: KubeClient, namespace: str, node: str, results: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Create a claim and write the allocation the scheduler would (pool = node)."""
    name = unique_name("claim")
    requests = sorted({r["request"] for r in results})
    created = kube.create(
        paths.resource_claims(namespace),
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "devices": {
                    "requests": [
                        {"name": r, "exactly": {"deviceClassName": "vdcu.dcu.hygon.com"}}
                        for r in requests
                    ]
                }
            },
        },
    )
    created["status"] = {
        "allocation": {
            "devices": {"results": [{"pool": node, **r} for r in results]},
            "nodeSelector": {
                "nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                ]
            },
        }
    }
    return kube.replace(paths.resource_claims(namespace, name, subresource="status"), created)


def v1_ref(claim: dict[str, Any]) -> dra_v1_pb2.Claim:
    meta = claim["metadata"]
    return dra_v1_pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def prepare(dra_socket: Path, *claims: dict[str, Any]) -> dict[str, Any]:
    """NodePrepareResources on a DRA socket; returns the per-claim answers by UID."""
    with grpc.insecure_channel(f"unix:{dra_socket}") as channel:
        response = dra_v1_pb2_grpc.DRAPluginStub(channel).NodePrepareResources(
            dra_v1_pb2.NodePrepareResourcesRequest(claims=[v1_ref(c) for c in claims]),
            timeout=45,
        )
    return dict(response.claims)


def unprepare(dra_socket: Path, *claims: dict[str, Any]) -> dict[str, str]:
    """NodeUnprepareResources on a DRA socket; returns the per-claim errors by UID."""
    with grpc.insecure_channel(f"unix:{dra_socket}") as channel:
        response = dra_v1_pb2_grpc.DRAPluginStub(channel).NodeUnprepareResources(
            dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[v1_ref(c) for c in claims]),
            timeout=45,
        )
    return {uid: answer.error for uid, answer in response.claims.items()}


def create_node(kube: KubeClient, name: str) -> None:
    kube.create(paths.nodes(), {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


def delete_quietly(kube: KubeClient, path: str) -> None:
    try:
        kube.delete(path, grace_period_s=0)
    except NotFound:
        pass
    except ApiError as exc:  # cleanup must not hide the test's own result
        print(f"cleanup of {path} failed: {exc}")


# --- the plugin's real identity -------------------------------------------------------------


def plugin_kubeconfig(
    kube: KubeClient, admin_kubeconfig: Path, node: str, directory: Path
) -> tuple[Path, str]:
    """A kubeconfig with a token of the plugin's ServiceAccount bound to a Pod on ``node``.

    Returns the file and the Pod's name (delete it afterwards).
    """
    pod_name = unique_name("plugin")
    pod = kube.create(
        paths.pods(PLUGIN_NAMESPACE),
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": PLUGIN_NAMESPACE},
            "spec": {
                "nodeName": node,
                "serviceAccountName": PLUGIN_ACCOUNT,
                "containers": [{"name": "plugin", "image": "registry.k8s.io/pause:3.10"}],
            },
        },
    )
    answer = kube.create(
        paths.service_accounts(PLUGIN_NAMESPACE, PLUGIN_ACCOUNT) + "/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod_name,
                    "uid": pod["metadata"]["uid"],
                },
            },
        },
    )
    # The admin kubeconfig's cluster (server, CA), with the plugin's token as the only user.
    document = yaml.safe_load(admin_kubeconfig.read_text())
    document["users"] = [{"name": "plugin", "user": {"token": answer["status"]["token"]}}]
    for context in document["contexts"]:
        context["context"]["user"] = "plugin"
    path = directory / "plugin.kubeconfig"
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path, pod_name


def wait_for_settled_namespace(kube: KubeClient, name: str) -> None:
    """Wait until namespace ``name`` is Active or gone (not Terminating)."""

    def settled() -> bool:
        try:
            namespace = kube.get(paths.namespaces(name))
        except NotFound:
            return True
        return bool(namespace.get("status", {}).get("phase") != "Terminating")

    wait_for(settled, timeout_s=120, description=f"namespace {name} to finish terminating")


@pytest.fixture(scope="module")
def plugin_rbac(control_plane: ControlPlane) -> Iterator[None]:
    """deploy/rbac.yaml's ServiceAccount and ClusterRole(Binding) (created for this module)."""
    kube = control_plane.client
    created: list[dict[str, Any]] = []
    for doc in load_yaml((DEPLOY_DIR / "rbac.yaml").read_text()):
        if doc["kind"] == "Namespace":
            # An earlier module may have deleted it: nothing can be created in it until the
            # namespace controller has finished, so wait for it to be gone or still active.
            wait_for_settled_namespace(kube, doc["metadata"]["name"])
        try:
            created.append(kube.create(paths.collection_path(doc), doc))
        except AlreadyExists:
            pass
    try:
        yield
    finally:
        for obj in reversed(created):
            if obj["kind"] != "Namespace":  # other modules may still use it
                delete_quietly(kube, paths.object_path(obj))


# --- the tests ------------------------------------------------------------------------------


class StatusNode:
    """A Node, the plugin's identity on it, and the daemon running with --claim-status."""

    def __init__(self, plane: ControlPlane, base: Path) -> None:
        self.kube = plane.client
        self.node = unique_name("status")
        create_node(self.kube, self.node)
        self.kubeconfig, self.identity_pod = plugin_kubeconfig(
            self.kube, plane.kubeconfig, self.node, base
        )
        root = base / "root"
        create_mock_node(root)
        self.plugin = PluginProcess(
            node_name=self.node,
            root=root,
            kubeconfig=self.kubeconfig,
            registrar_dir=base / "reg",
            data_dir=base / "data",
            cdi_dir=base / "cdi",
            log_file=base / "plugin.log",
            extra_args=["--claim-status"],
        ).start()
        self.plugin.wait_for_registration_socket()

    @property
    def dra_socket(self) -> Path:
        return self.plugin.data_dir / "dra.sock"

    def close(self) -> None:
        if self.plugin.process is not None:
            self.plugin.stop()
        delete_quietly(self.kube, paths.pods(PLUGIN_NAMESPACE, self.identity_pod))
        delete_quietly(self.kube, paths.nodes(self.node))


@pytest.fixture
def status_node(
    control_plane: ControlPlane, plugin_rbac: None, short_sock_dir: Path
) -> Iterator[StatusNode]:
    node = StatusNode(control_plane, short_sock_dir)
    try:
        yield node
    finally:
        node.close()


def devices_of(kube: KubeClient, claim: dict[str, Any]) -> list[dict[str, Any]]:
    meta = claim["metadata"]
    current = kube.get(paths.resource_claims(meta["namespace"], meta["name"]))
    return list((current.get("status") or {}).get("devices") or [])


def ours(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in devices if d["driver"] == DRIVER_NAME]


def test_status_shows_the_share_and_is_removed_on_unprepare(
    status_node: StatusNode, kube: KubeClient, namespace: str
) -> None:
    node = status_node.node
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

    answer = prepare(status_node.dra_socket, claim)[uid]
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

    assert unprepare(status_node.dra_socket, claim) == {uid: ""}
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
    status_node: StatusNode, kube: KubeClient, namespace: str
) -> None:
    whole = {"request": "big", "driver": DRIVER_NAME, "device": K100}
    claim = allocated_claim(
        kube, namespace, status_node.node, [share("dcu", Z100_B, 6, "1Gi"), whole]
    )
    uid = claim["metadata"]["uid"]
    assert prepare(status_node.dra_socket, claim)[uid].error == ""
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
    assert prepare(status_node.dra_socket, claim)[uid].error == ""
    status_node.plugin.stop()
    assert devices_of(kube, claim) == before
