"""The real daemon prepares and unprepares claims for a (fake) kubelet, against the real scheduler.

``dcu-dra kubelet-plugin`` runs as a process on the default mock node (2x Z100 with 60 CUs,
1x K100_AI with 120 CUs), registered with a fake kubelet exactly as the DaemonSet mounts it:
the kubelet's registration dir as ``--registrar-dir`` and ``<plugins dir>/<driver>`` as
``--plugin-data-dir``. Pods are pinned to the fake kubelet's node; the real scheduler allocates
their claims, the fake kubelet calls NodePrepareResources/NodeUnprepareResources, and the tests
look at what the daemon leaves on disk: per-claim CDI specs, vdev files and the checkpoint.
"""

from __future__ import annotations

import copy
import json
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dra_driver import DRIVER_NAME, cdi
from dra_driver.checkpoint import CHECKPOINT_FILE
from dra_driver.kube import AlreadyExists, KubeClient, paths
from dra_driver.mock import create_mock_node
from dra_driver.state import VDEV_SUBDIR, claim_kind
from dra_driver.testing.cluster import (
    ControlPlane,
    apply_yaml,
    create_object,
    load_yaml,
    pod_claims,
    wait_for_pod_gone,
    wait_for_pod_running,
)
from dra_driver.testing.fakekubelet import FakeKubelet
from dra_driver.testing.waiting import wait_for
from dra_driver.vdev import VdevConfig, check_pipe_ids_unique, parse_vdev, read_vdev_dir
from tests.e2e.conftest import FakeKubeletFactory
from tests.e2e.test_publisher import DCU_DRA

pytestmark = pytest.mark.e2e

DEVICE_CLASSES = Path(__file__).resolve().parents[2] / "deploy" / "deviceclass.yaml"
KIND = claim_kind(DRIVER_NAME)
WHOLE_CLASS = "dcu.hygon.com"
SHARE_CLASS = "vdcu.dcu.hygon.com"
PAUSE = "registry.k8s.io/pause:3.10"


class PluginProcess:
    """``dcu-dra kubelet-plugin`` for one fake kubelet's node, as the DaemonSet would run it."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        kubelet: FakeKubelet,
        root: Path,
        cdi_dir: Path,
        log: Path,
    ) -> None:
        assert kubelet.plugins_dir is not None
        self.log = log
        self.data_dir = kubelet.plugins_dir / DRIVER_NAME
        self.cdi_dir = cdi_dir
        self.args = [
            DCU_DRA,
            "kubelet-plugin",
            "--node-name",
            kubelet.node_name,
            "--root",
            str(root),
            "--kubeconfig",
            str(kubeconfig),
            "--registrar-dir",
            str(kubelet.registry_dir),
            "--plugin-data-dir",
            str(self.data_dir),
            "--cdi-dir",
            str(cdi_dir),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PluginProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def restart(self) -> PluginProcess:
        """A new process with the same arguments (and so the same directories)."""
        again = copy.copy(self)
        again.process = None
        return again.start()

    def output(self) -> str:
        return self.log.read_text()

    # --- what the daemon keeps on disk ---------------------------------------------------

    def spec_file(self, claim_uid: str) -> Path:
        return self.cdi_dir / cdi.spec_file_name(KIND, claim_uid)

    def vdev_dir(self, claim_uid: str) -> Path:
        return self.data_dir / VDEV_SUBDIR / claim_uid

    def checkpoint_claims(self) -> dict[str, Any]:
        document = json.loads((self.data_dir / CHECKPOINT_FILE).read_text())
        return dict(document["claims"])


class Node:
    """A fake kubelet with the real daemon registered with it."""

    def __init__(self, kubelet: FakeKubelet, plugin: PluginProcess) -> None:
        self.kubelet = kubelet
        self.plugin = plugin

    @property
    def name(self) -> str:
        return self.kubelet.node_name


NodeFactory = Callable[[], Node]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pr-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def device_classes(kube: KubeClient) -> None:
    """The DeviceClasses of deploy/deviceclass.yaml (cluster-scoped: created once, kept)."""
    for obj in load_yaml(DEVICE_CLASSES.read_text()):
        try:
            create_object(kube, obj)
        except AlreadyExists:
            pass


@pytest.fixture
def dcu_node(
    control_plane: ControlPlane,
    fake_kubelet: FakeKubeletFactory,
    short_dir: Path,
    device_classes: None,
) -> Iterator[NodeFactory]:
    """Start a fake kubelet and the daemon on a default mock node, registered with it."""
    nodes: list[Node] = []

    def start() -> Node:
        kubelet = fake_kubelet()
        base = short_dir / f"d{len(nodes)}"
        base.mkdir()
        root = base / "node"
        create_mock_node(root)
        plugin = PluginProcess(
            kubeconfig=control_plane.kubeconfig,
            kubelet=kubelet,
            root=root,
            cdi_dir=base / "cdi",
            log=base / "plugin.log",
        ).start()
        node = Node(kubelet, plugin)
        nodes.append(node)
        kubelet.wait_for_plugin(DRIVER_NAME, timeout_s=30)
        wait_for(
            lambda: node_has_slice(control_plane.client, kubelet.node_name),
            timeout_s=20,
            description=f"the daemon to publish the slice of {kubelet.node_name}",
        )
        return node

    yield start
    for node in nodes:
        if node.plugin.process is not None:
            node.plugin.stop(signal.SIGKILL)


def node_has_slice(kube: KubeClient, node: str) -> bool:
    items = kube.list(
        paths.resource_slices(), field_selector=f"spec.driver={DRIVER_NAME},spec.nodeName={node}"
    )["items"]
    return len(items) == 1


def restart_plugin(node: Node, sig: int) -> None:
    """Stop the daemon with ``sig`` and start it again with the same directories."""
    node.plugin.stop(sig)
    node.plugin = node.plugin.restart()
    wait_for(
        lambda: node.plugin.output().count("registered with the kubelet as DRA driver") >= 2,
        timeout_s=30,
        description="the restarted daemon to register again",
        details=lambda: node.plugin.output()[-3000:],
    )


# --- objects ----------------------------------------------------------------------------


SHARE_TEMPLATE = """\
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: NAME}
spec:
  spec:
    devices:
      requests:
      - name: dcu
        exactly:
          deviceClassName: CLASS
          selectors:
          - cel: {expression: 'device.attributes["dcu.hygon.com"].index == 0'}
          capacity: {requests: {cores: "10", memory: 4Gi}}
"""

SHARE_CLAIM = """\
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: NAME}
spec:
  devices:
    requests:
    - name: dcu
      exactly:
        deviceClassName: CLASS
        capacity: {requests: {cores: "10", memory: 4Gi}}
"""

# Pinned to the K100_AI (index 2) so it never competes with the shares pinned to index 0.
WHOLE_CLAIM = """\
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: NAME}
spec:
  devices:
    requests:
    - name: dcu
      exactly:
        deviceClassName: CLASS
        selectors:
        - cel: {expression: 'device.attributes["dcu.hygon.com"].index == 2'}
"""


def apply(kube: KubeClient, namespace: str, text: str, name: str, device_class: str) -> None:
    apply_yaml(kube, text.replace("NAME", name).replace("CLASS", device_class), namespace=namespace)


def pod(
    name: str, node: str, *, template: str | None = None, claim: str | None = None
) -> dict[str, Any]:
    source = (
        {"resourceClaimTemplateName": template}
        if template is not None
        else {"resourceClaimName": claim}
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "c", "image": PAUSE, "resources": {"claims": [{"name": "dcu"}]}}
            ],
            "resourceClaims": [{"name": "dcu", **source}],
        },
    }


def run_pods(kube: KubeClient, namespace: str, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for body in pods:
        kube.create(paths.pods(namespace), body)
    return [
        wait_for_pod_running(kube, namespace, body["metadata"]["name"], timeout_s=40)
        for body in pods
    ]


def claim_uid(kube: KubeClient, running_pod: dict[str, Any]) -> str:
    (claim,) = pod_claims(kube, running_pod).values()
    return str(claim["metadata"]["uid"])


def delete_pod(kube: KubeClient, namespace: str, name: str) -> None:
    kube.delete(paths.pods(namespace, name))
    wait_for_pod_gone(kube, namespace, name, timeout_s=30)


def assert_cdi_ids_resolve(node: Node, namespace: str, name: str, uid: str) -> None:
    """Every CDI id of the pod's container names a device of the claim's spec file."""
    ids = node.kubelet.container_cdi_ids((namespace, name))
    assert list(ids) == ["c"] and ids["c"], ids
    spec_file = node.plugin.spec_file(uid)
    assert spec_file.is_file(), spec_file
    spec = json.loads(spec_file.read_text())
    assert spec["kind"] == KIND
    names = {device["name"] for device in spec["devices"]}
    for cdi_id in ids["c"]:
        kind, _, device = cdi_id.partition("=")
        assert kind == KIND and device in names, (cdi_id, names)


def read_vdevs(node: Node, uid: str) -> list[VdevConfig]:
    directory = node.plugin.vdev_dir(uid)
    configs = read_vdev_dir(directory)
    for path in sorted(directory.iterdir()):
        assert parse_vdev(path.read_text(), file_name=path.name) in configs
    return configs


def wait_until_unprepared(node: Node, uid: str) -> None:
    wait_for(
        lambda: (
            uid not in node.kubelet.prepared_claims()
            and not node.plugin.spec_file(uid).exists()
            and not node.plugin.vdev_dir(uid).exists()
        ),
        timeout_s=20,
        description=f"claim {uid} to be unprepared and its files removed",
        details=lambda: {
            "kubelet": list(node.kubelet.prepared_claims()),
            "spec": node.plugin.spec_file(uid).exists(),
            "vdev": node.plugin.vdev_dir(uid).exists(),
        },
    )


def snapshot_files(node: Node, uid: str) -> dict[str, bytes]:
    files = {"spec": node.plugin.spec_file(uid).read_bytes()}
    vdev_dir = node.plugin.vdev_dir(uid)
    if vdev_dir.exists():
        files.update({f"vdev/{p.name}": p.read_bytes() for p in sorted(vdev_dir.iterdir())})
    return files


# --- tests ------------------------------------------------------------------------------


def test_four_shares_of_one_card_get_disjoint_vdevs(
    kube: KubeClient, dcu_node: NodeFactory, namespace: str
) -> None:
    node = dcu_node()
    apply(kube, namespace, SHARE_TEMPLATE, "quarter", SHARE_CLASS)
    running = run_pods(
        kube, namespace, [pod(f"p{i}", node.name, template="quarter") for i in range(4)]
    )
    uids = [claim_uid(kube, p) for p in running]
    assert len(set(uids)) == 4
    configs: list[VdevConfig] = []
    for p, uid in zip(running, uids, strict=True):
        (config,) = read_vdevs(node, uid)
        assert config.pci_bus_id == "0000:3b:00.0"
        assert config.cu_count == 10
        assert config.memory_mib == 4096
        configs.append(config)
        assert_cdi_ids_resolve(node, namespace, p["metadata"]["name"], uid)
    check_pipe_ids_unique(configs)
    assert len({c.pipe_id for c in configs}) == 4
    masks = [(c.mask.word0, c.mask.word1) for c in configs]
    for i, (a0, a1) in enumerate(masks):
        for b0, b1 in masks[i + 1 :]:
            assert a0 & b0 == 0 and a1 & b1 == 0, masks
    assert set(node.plugin.checkpoint_claims()) == set(uids)


def test_shared_claim_is_prepared_once_and_unprepared_after_the_last_pod(
    kube: KubeClient, dcu_node: NodeFactory, namespace: str
) -> None:
    node = dcu_node()
    apply(kube, namespace, SHARE_CLAIM, "shared", SHARE_CLASS)
    running = run_pods(kube, namespace, [pod(f"s{i}", node.name, claim="shared") for i in range(2)])
    uid = claim_uid(kube, running[0])
    assert claim_uid(kube, running[1]) == uid
    prepares = [
        call
        for call in node.kubelet.calls(method="NodePrepareResources", driver=DRIVER_NAME)
        if uid in {c.uid for c in call.claims}
    ]
    assert len(prepares) == 1, prepares
    assert prepares[0].error is None
    for p in running:
        assert_cdi_ids_resolve(node, namespace, p["metadata"]["name"], uid)
    assert node.kubelet.prepared_claims()[uid].pod_uids == {p["metadata"]["uid"] for p in running}

    delete_pod(kube, namespace, "s0")
    assert not node.kubelet.calls(method="NodeUnprepareResources", driver=DRIVER_NAME)
    assert node.plugin.spec_file(uid).is_file()
    assert len(read_vdevs(node, uid)) == 1

    delete_pod(kube, namespace, "s1")
    wait_until_unprepared(node, uid)
    (unprepare,) = node.kubelet.calls(method="NodeUnprepareResources", driver=DRIVER_NAME)
    assert [c.uid for c in unprepare.claims] == [uid] and unprepare.error is None
    assert uid not in node.plugin.checkpoint_claims()


def test_whole_card_claim_has_a_spec_and_no_vdev_files(
    kube: KubeClient, dcu_node: NodeFactory, namespace: str
) -> None:
    node = dcu_node()
    apply(kube, namespace, WHOLE_CLAIM, "whole", WHOLE_CLASS)
    (running,) = run_pods(kube, namespace, [pod("w", node.name, claim="whole")])
    uid = claim_uid(kube, running)
    assert_cdi_ids_resolve(node, namespace, "w", uid)
    assert not node.plugin.vdev_dir(uid).exists()
    (share,) = node.plugin.checkpoint_claims()[uid]["shares"]
    assert share["wholeDevice"] is True and share["vdevID"] is None

    delete_pod(kube, namespace, "w")
    wait_until_unprepared(node, uid)


def test_unprepare_after_the_plugin_was_killed_and_restarted(
    kube: KubeClient, dcu_node: NodeFactory, namespace: str
) -> None:
    node = dcu_node()
    apply(kube, namespace, SHARE_TEMPLATE, "quarter", SHARE_CLASS)
    running = run_pods(
        kube, namespace, [pod(f"k{i}", node.name, template="quarter") for i in range(2)]
    )
    uids = [claim_uid(kube, p) for p in running]
    before = {uid: snapshot_files(node, uid) for uid in uids}

    restart_plugin(node, signal.SIGKILL)
    assert {uid: snapshot_files(node, uid) for uid in uids} == before

    for p in running:
        delete_pod(kube, namespace, p["metadata"]["name"])
    for uid in uids:
        wait_until_unprepared(node, uid)
    assert node.plugin.checkpoint_claims() == {}
    assert not any(node.plugin.cdi_dir.iterdir())
    assert not any((node.plugin.data_dir / VDEV_SUBDIR).iterdir())
    assert "Traceback" not in node.plugin.output()


def test_files_deleted_behind_the_plugins_back_are_regenerated_identically(
    kube: KubeClient, dcu_node: NodeFactory, namespace: str
) -> None:
    node = dcu_node()
    apply(kube, namespace, SHARE_TEMPLATE, "quarter", SHARE_CLASS)
    apply(kube, namespace, WHOLE_CLAIM, "whole", WHOLE_CLASS)
    running = run_pods(
        kube,
        namespace,
        [
            pod("r0", node.name, template="quarter"),
            pod("r1", node.name, template="quarter"),
            pod("rw", node.name, claim="whole"),
        ],
    )
    uids = [claim_uid(kube, p) for p in running]
    before = {uid: snapshot_files(node, uid) for uid in uids}
    assert sum(len(files) for files in before.values()) == 2 * 2 + 1

    for uid in uids:
        node.plugin.spec_file(uid).unlink()
        shutil.rmtree(node.plugin.vdev_dir(uid), ignore_errors=True)
    restart_plugin(node, signal.SIGTERM)

    assert {uid: snapshot_files(node, uid) for uid in uids} == before
    assert "regenerated the" in node.plugin.output()
    assert set(node.plugin.checkpoint_claims()) == set(uids)
