"""The node daemon publishes its DCUs as ResourceSlices, against the real control plane.

The daemon runs as a real process (``dcu-dra kubelet-plugin``) on a mock DCU node; the node
is a fake kubelet's Node; the real kube-apiserver stores the slices and the real scheduler
allocates from them.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.cluster.publisher import SlicePublisher
from dra_driver.cluster.slices import Sharing, build_pool
from dra_driver.node.devices import DeviceName, discover
from dra_driver.node.mock import create_mock_node, parse_config
from dra_driver.testing.cluster import ControlPlane, apply_yaml, unique_name
from dra_driver.testing.fakekubelet import FakeKubelet
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import ONE_Z100, FakeKubeletFactory, pinned_pod

pytestmark = pytest.mark.e2e

PluginFactory = Callable[..., PluginProcess]


@pytest.fixture
def plugin(control_plane: ControlPlane, short_sock_dir: Path) -> Iterator[PluginFactory]:
    """Start the daemon for a node, on a mock node of ``devices`` (or at ``root``); no kubelet.

    Killed afterwards.
    """
    started: list[PluginProcess] = []

    def start(
        node_name: str,
        *,
        devices: list[dict[str, object]] | None = None,
        root: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> PluginProcess:
        base = short_sock_dir / f"p{len(started)}"
        if root is None:
            root = base / "node"
            create_mock_node(root, parse_config({"devices": devices or ONE_Z100}))
        process = PluginProcess.in_directory(
            base,
            node_name=node_name,
            root=root,
            kubeconfig=control_plane.kubeconfig,
            extra_args=extra,
        )
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


def node_slices(kube: KubeClient, node: str) -> list[dict[str, Any]]:
    items = kube.list(
        paths.resource_slices(), field_selector=f"spec.driver={DRIVER_NAME},spec.nodeName={node}"
    )["items"]
    return sorted(items, key=lambda s: str(s["metadata"]["name"]))


def wait_for_slices(
    kube: KubeClient,
    node: str,
    predicate: Callable[[list[dict[str, Any]]], bool],
    what: str,
    timeout_s: float = 20,
) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        slices = node_slices(kube, node)
        return slices if predicate(slices) else None

    return wait_for(
        check, timeout_s=timeout_s, description=what, details=lambda: node_slices(kube, node)
    )


def test_published_slice_is_accepted_unchanged(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory, plugin: PluginFactory, mock_root: Path
) -> None:
    node = fake_kubelet()
    process = plugin(node.node_name, root=mock_root)
    (published,) = wait_for_slices(kube, node.node_name, lambda s: len(s) == 1, "one slice")
    desired = build_pool(
        discover(mock_root),
        driver=DRIVER_NAME,
        node_name=node.node_name,
        sharing=Sharing.CONSUMABLE,
    )
    assert published["spec"]["devices"] == list(desired.slices[0])
    assert published["spec"]["pool"] == {
        "name": node.node_name,
        "generation": 1,
        "resourceSliceCount": 1,
    }
    assert published["spec"]["nodeName"] == node.node_name
    node_uid = kube.get(paths.nodes(node.node_name))["metadata"]["uid"]
    assert published["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "name": node.node_name,
            "uid": node_uid,
            "controller": True,
        }
    ]
    assert published["metadata"]["name"].startswith(f"00000-{DRIVER_NAME}-{node.node_name}-")
    assert [d["allowMultipleAllocations"] for d in published["spec"]["devices"]] == [True] * 3
    assert "published" in process.output() and "ms after start" in process.output()


def test_deleted_slice_is_recreated_within_seconds(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory, plugin: PluginFactory
) -> None:
    node = fake_kubelet()
    plugin(node.node_name)
    (first,) = wait_for_slices(kube, node.node_name, lambda s: len(s) == 1, "one slice")
    # What the kubelet does when it starts: delete every slice of the node.
    kube.delete_collection(
        paths.resource_slices(), field_selector=f"spec.nodeName={node.node_name}"
    )
    (second,) = wait_for_slices(
        kube,
        node.node_name,
        lambda s: len(s) == 1 and s[0]["metadata"]["uid"] != first["metadata"]["uid"],
        "the slice to be re-created",
        timeout_s=5,
    )
    assert second["spec"]["devices"] == first["spec"]["devices"]


def test_foreign_and_stale_slices_of_the_pool_are_removed(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory, plugin: PluginFactory
) -> None:
    node = fake_kubelet()
    node_uid = kube.get(paths.nodes(node.node_name))["metadata"]["uid"]
    # A leftover with a name we would never generate, e.g. from an older driver version.
    kube.create(
        paths.resource_slices(),
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": f"leftover-{node.node_name}"},
            "spec": {
                "driver": DRIVER_NAME,
                "nodeName": node.node_name,
                "pool": {"name": node.node_name, "generation": 7, "resourceSliceCount": 1},
                "devices": [],
            },
        },
    )
    plugin(node.node_name)
    (only,) = wait_for_slices(
        kube,
        node.node_name,
        lambda s: len(s) == 1 and not s[0]["metadata"]["name"].startswith("leftover-"),
        "the leftover to be replaced by our slice",
    )
    # The new slice supersedes generation 7.
    assert only["spec"]["pool"]["generation"] == 8
    assert only["metadata"]["ownerReferences"][0]["uid"] == node_uid


def test_device_change_updates_the_slice_in_place(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory, plugin: PluginFactory, short_sock_dir: Path
) -> None:
    node = fake_kubelet()
    root = short_sock_dir / "changing-node"
    create_mock_node(root)
    first = plugin(node.node_name, root=root)
    (before,) = wait_for_slices(kube, node.node_name, lambda s: len(s) == 1, "one slice")
    assert first.stop() == 0
    create_mock_node(root, parse_config({"devices": ONE_Z100}))  # two DCUs gone
    plugin(node.node_name, root=root)
    (after,) = wait_for_slices(
        kube,
        node.node_name,
        lambda s: len(s) == 1 and len(s[0]["spec"]["devices"]) == 1,
        "the slice to list one device",
    )
    # One slice changed in place: same object, same generation (the Go helper's rule).
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["spec"]["pool"] == before["spec"]["pool"]


def test_generation_and_count_when_the_pool_needs_two_slices(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory, mock_root: Path
) -> None:
    """130 devices need two slices; changing both bumps the generation of both."""
    node = fake_kubelet()
    base = discover(mock_root)
    template = base.devices[0]
    many = tuple(
        replace(
            template,
            index=i,
            name=DeviceName(f"dcu-{i:04d}"),
            pci_bus_id=f"0000:{i // 32:02x}:{i % 32:02x}.0",
        )
        for i in range(130)
    )
    pool = build_pool(
        replace(base, devices=many),
        driver=DRIVER_NAME,
        node_name=node.node_name,
        sharing=Sharing.CONSUMABLE,
    )
    publisher = SlicePublisher(kube, pool)
    publisher.sync_once()
    slices = node_slices(kube, node.node_name)
    assert [
        (
            len(s["spec"]["devices"]),
            s["spec"]["pool"]["generation"],
            s["spec"]["pool"]["resourceSliceCount"],
        )
        for s in slices
    ] == [(128, 1, 2), (2, 1, 2)]
    publisher.sync_once()  # nothing changed: nothing written
    assert [s["metadata"]["resourceVersion"] for s in node_slices(kube, node.node_name)] == [
        s["metadata"]["resourceVersion"] for s in slices
    ]
    fewer = replace(base, devices=tuple(replace(d, max_vdevices=2) for d in many))
    publisher.update(
        build_pool(fewer, driver=DRIVER_NAME, node_name=node.node_name, sharing=Sharing.CONSUMABLE)
    )
    publisher.sync_once()
    after = node_slices(kube, node.node_name)
    assert [s["spec"]["pool"]["generation"] for s in after] == [2, 2]
    assert [s["metadata"]["uid"] for s in after] == [s["metadata"]["uid"] for s in slices]


def test_graceful_shutdown_exits_0_and_keeps_the_slices(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory, plugin: PluginFactory
) -> None:
    node = fake_kubelet()
    process = plugin(node.node_name)
    (published,) = wait_for_slices(kube, node.node_name, lambda s: len(s) == 1, "one slice")
    assert process.stop(signal.SIGTERM) == 0
    assert [s["metadata"]["uid"] for s in node_slices(kube, node.node_name)] == [
        published["metadata"]["uid"]
    ]
    assert "stopped; ResourceSlices stay published" in process.output()
    second = plugin(node.node_name)
    wait_for(lambda: "published" in second.output(), timeout_s=20, description="second start")
    assert second.stop(signal.SIGINT) == 0


def test_exclusive_sharing_publishes_whole_devices(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory, plugin: PluginFactory
) -> None:
    node = fake_kubelet()
    plugin(node.node_name, extra=("--sharing", "exclusive"))
    (published,) = wait_for_slices(kube, node.node_name, lambda s: len(s) == 1, "one slice")
    (device,) = published["spec"]["devices"]
    assert "allowMultipleAllocations" not in device
    assert device["capacity"]["cores"] == {"value": "60"}


def test_missing_node_name_or_bad_root_fail_clearly(
    control_plane: ControlPlane, short_sock_dir: Path
) -> None:
    plugin = PluginProcess.in_directory(
        short_sock_dir,
        node_name="n1",
        root=short_sock_dir / "none",
        kubeconfig=control_plane.kubeconfig,
    )
    env = {k: v for k, v in os.environ.items() if k not in {"NODE_NAME", "DCU_DRA_ROOT"}}
    # Its command line, run in the foreground rather than start()ed: the reason must be on
    # stderr, which start() merges into the log.
    done = subprocess.run(
        plugin.args, capture_output=True, text=True, env=env, check=False, timeout=30
    )
    assert done.returncode == 1
    assert "cannot run: root" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert plugin.data_dir.stat().st_mode & 0o777 == 0o700


SHARES = """\
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: CLASS}
spec:
  selectors:
  - cel: {expression: 'device.driver == "dcu.hygon.com" && device.allowMultipleAllocations == true'}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: share, namespace: NS}
spec:
  spec:
    devices:
      requests:
      - name: dcu
        exactly:
          deviceClassName: CLASS
          capacity: {requests: {cores: "10", memory: 4Gi}}
"""


def test_scheduler_shares_a_published_dcu_four_ways(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory, plugin: PluginFactory, namespace: str
) -> None:
    node: FakeKubelet = fake_kubelet()
    plugin(node.node_name)
    wait_for_slices(kube, node.node_name, lambda s: len(s) == 1, "one slice")
    device_class = unique_name("shares")
    apply_yaml(
        kube, SHARES.replace("CLASS", device_class).replace("NS", namespace), namespace=namespace
    )
    try:

        def allocated_claims(count: int) -> list[dict[str, Any]] | None:
            claims = kube.list(paths.resource_claims(namespace))["items"]
            done = [c for c in claims if c.get("status", {}).get("allocation")]
            return done if len(done) == count else None

        # One after the other: pods created at once race in the scheduler, and one that loses
        # (an in-flight allocation took the share it picked) may wait in its unschedulable
        # queue for minutes; the upstream scheduler's behaviour, not what this test is about.
        for i in range(4):
            kube.create(
                paths.pods(namespace), pinned_pod(f"p{i}", node.node_name, template="share")
            )
            claims = wait_for(
                functools.partial(allocated_claims, i + 1),
                timeout_s=30,
                description=f"{i + 1} allocated claims",
            )
        kube.create(paths.pods(namespace), pinned_pod("p4", node.node_name, template="share"))
        results = [c["status"]["allocation"]["devices"]["results"][0] for c in claims]
        assert {r["device"] for r in results} == {"dcu-0000-3b-00-0"}
        assert len({r["shareID"] for r in results}) == 4
        assert all(
            r["consumedCapacity"] == {"cores": "10", "memory": "4Gi", "vdevices": "1"}
            for r in results
        )

        def unschedulable() -> str | None:
            pods = kube.list(paths.pods(namespace))["items"]
            for pod in pods:
                for cond in pod.get("status", {}).get("conditions", []):
                    if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                        return str(cond.get("message"))
            return None

        # 40 of 60 CUs and 16 GiB of 32 GiB are taken: only the 4 vDCU slots stop the fifth.
        message = wait_for(unschedulable, timeout_s=30, description="a fifth, unschedulable pod")
        assert "cannot allocate all claims" in message
    finally:
        kube.delete(paths.device_classes(device_class))


WHOLE = """\
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: whole, namespace: NS}
spec:
  devices:
    requests:
    - name: dcu
      exactly: {deviceClassName: CLASS}
"""


def test_a_claim_without_capacity_requests_takes_the_whole_dcu(
    kube: KubeClient, fake_kubelet: FakeKubeletFactory, plugin: PluginFactory, namespace: str
) -> None:
    node = fake_kubelet()
    plugin(node.node_name)
    wait_for_slices(kube, node.node_name, lambda s: len(s) == 1, "one slice")
    device_class = unique_name("whole")
    apply_yaml(
        kube,
        SHARES.replace("CLASS", device_class).replace("NS", namespace)
        + "---\n"
        + WHOLE.replace("CLASS", device_class).replace("NS", namespace),
        namespace=namespace,
    )
    try:
        kube.create(paths.pods(namespace), pinned_pod("whole", node.node_name, claim="whole"))
        claim = wait_for(
            lambda: (
                (c := kube.get(paths.resource_claims(namespace, "whole")))
                .get("status", {})
                .get("allocation")
                and c
            ),
            timeout_s=30,
            description="the whole-card claim to be allocated",
        )
        (result,) = claim["status"]["allocation"]["devices"]["results"]
        assert result["consumedCapacity"] == {"cores": "60", "memory": "32752Mi", "vdevices": "1"}
        # Nothing is left for a quarter share on the same (only) DCU.
        kube.create(paths.pods(namespace), pinned_pod("quarter", node.node_name, template="share"))
        wait_for(
            lambda: any(
                c.get("reason") == "Unschedulable"
                for c in kube.get(paths.pods(namespace, "quarter"))
                .get("status", {})
                .get("conditions", [])
            ),
            timeout_s=30,
            description="the quarter pod to be unschedulable",
        )
    finally:
        kube.delete(paths.device_classes(device_class))
