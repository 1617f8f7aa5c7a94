"""Orphan cleanup: a prepared claim whose ResourceClaim is gone gets unprepared by the daemon.

The real daemon runs against the real API server; claims carry the allocation the scheduler
would write, and the test calls the daemon's DRA socket as the kubelet does.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dra_driver.kube import KubeClient, NotFound, paths
from dra_driver.mock import create_mock_node
from dra_driver.testing.cluster import ControlPlane, unique_name
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for
from tests.e2e.test_claim_status import (
    Z100_A,
    allocated_claim,
    create_node,
    delete_quietly,
    prepare,
    share,
)

pytestmark = pytest.mark.e2e

#: "Within a few seconds" of the plugin's start, as the issue asks.
CLEANUP_TIMEOUT_S = 5.0
#: The finalizer the scheduler puts on a claim it allocates (resource-api.md §6.3).
DELETE_PROTECTION = "resource.kubernetes.io/delete-protection"


class OrphanNode:
    """A Node and the daemon on a default mock node."""

    def __init__(self, plane: ControlPlane, base: Path, extra_args: list[str]) -> None:
        self.kube = plane.client
        self.node = unique_name("orphans")
        create_node(self.kube, self.node)
        root = base / "root"
        create_mock_node(root)
        self.plugin = PluginProcess(
            node_name=self.node,
            root=root,
            kubeconfig=plane.kubeconfig,
            registrar_dir=base / "reg",
            data_dir=base / "data",
            cdi_dir=base / "cdi",
            log_file=base / "plugin.log",
            extra_args=extra_args,
        )

    @property
    def dra_socket(self) -> Path:
        return self.plugin.data_dir / "dra.sock"

    def start(self) -> None:
        self.plugin.start().wait_for_registration_socket()

    def is_clean(self, uid: str) -> bool:
        return (
            uid not in self.plugin.checkpoint_claims()
            and not self.plugin.spec_file(uid).exists()
            and not self.plugin.vdev_dir(uid).exists()
        )


NodeFactory = Callable[..., OrphanNode]


@pytest.fixture
def orphan_node(control_plane: ControlPlane, short_sock_dir: Path) -> Iterator[NodeFactory]:
    nodes: list[OrphanNode] = []

    def make(*extra_args: str) -> OrphanNode:
        node = OrphanNode(control_plane, short_sock_dir / f"n{len(nodes)}", list(extra_args))
        nodes.append(node)
        node.start()
        return node

    yield make
    for node in nodes:
        if node.plugin.process is not None:
            node.plugin.stop(signal.SIGKILL)
        delete_quietly(control_plane.client, paths.nodes(node.node))


def full_card_share() -> dict[str, Any]:
    """Every CU of the first Z100: while it is prepared, no other share fits."""
    return share("dcu", Z100_A, 60, "8Gi")


def test_claim_deleted_while_the_plugin_was_down_is_cleaned_up_after_restart(
    orphan_node: NodeFactory, kube: KubeClient, namespace: str
) -> None:
    node = orphan_node()
    claim = allocated_claim(kube, namespace, node.node, [full_card_share()])
    uid = claim["metadata"]["uid"]
    assert prepare(node.dra_socket, claim)[uid].error == ""
    waiting = allocated_claim(kube, namespace, node.node, [share("dcu", Z100_A, 10, "1Gi")])
    refused = prepare(node.dra_socket, waiting)[waiting["metadata"]["uid"]].error
    assert "CUs" in refused, refused  # the card's CUs are all taken

    node.plugin.stop()
    kube.delete(paths.resource_claims(namespace, claim["metadata"]["name"]))
    with pytest.raises(NotFound):
        kube.get(paths.resource_claims(namespace, claim["metadata"]["name"]))
    started = time.monotonic()
    node.plugin = node.plugin.restart()
    node.plugin.wait_for_registration_socket()

    wait_for(
        lambda: node.is_clean(uid),
        timeout_s=CLEANUP_TIMEOUT_S,
        description="the orphaned claim's files and checkpoint entry to go",
        details=lambda: node.plugin.log_tail(),
    )
    print(f"orphan cleaned {time.monotonic() - started:.2f} s after the restart began")
    assert prepare(node.dra_socket, waiting)[waiting["metadata"]["uid"]].error == ""
    log = node.plugin.output()
    assert (
        f"unprepared orphaned claim {namespace}/{claim['metadata']['name']} (uid {uid}): "
        "its ResourceClaim was deleted"
    ) in log
    assert "Traceback" not in log


def test_deleted_and_replaced_claims_are_cleaned_up_periodically_and_live_ones_kept(
    orphan_node: NodeFactory, kube: KubeClient, namespace: str
) -> None:
    node = orphan_node("--orphan-interval", "0.5")
    deleted, replaced, live = (
        allocated_claim(kube, namespace, node.node, [share("dcu", Z100_A, 10, "1Gi")])
        for _ in range(3)
    )
    claims = [deleted, replaced, live]
    answers = prepare(node.dra_socket, *claims)
    assert {c["metadata"]["uid"]: answers[c["metadata"]["uid"]].error for c in claims} == {
        c["metadata"]["uid"]: "" for c in claims
    }
    kube.delete(paths.resource_claims(namespace, deleted["metadata"]["name"]))
    name = replaced["metadata"]["name"]
    kube.delete(paths.resource_claims(namespace, name))
    kube.create(
        paths.resource_claims(namespace),
        {**{k: replaced[k] for k in ("apiVersion", "kind", "spec")}, "metadata": {"name": name}},
    )

    for gone in (deleted, replaced):
        gone_uid = str(gone["metadata"]["uid"])
        wait_for(
            lambda: node.is_clean(gone_uid),  # noqa: B023 - called before the loop moves on
            timeout_s=CLEANUP_TIMEOUT_S,
            description=f"claim {gone['metadata']['name']} to be cleaned up",
            details=lambda: node.plugin.log_tail(),
        )
    time.sleep(1.5)  # three more rounds: the live claim stays
    assert set(node.plugin.checkpoint_claims()) == {live["metadata"]["uid"]}
    assert node.plugin.spec_file(live["metadata"]["uid"]).is_file()
    log = node.plugin.output()
    assert f"(uid {replaced['metadata']['uid']}): its ResourceClaim was replaced by uid" in log
    assert log.count("unprepared orphaned claim") == 2


def test_orphan_interval_zero_turns_cleanup_off(
    orphan_node: NodeFactory, kube: KubeClient, namespace: str
) -> None:
    node = orphan_node("--orphan-interval", "0")
    claim = allocated_claim(kube, namespace, node.node, [share("dcu", Z100_A, 10, "1Gi")])
    uid = claim["metadata"]["uid"]
    assert prepare(node.dra_socket, claim)[uid].error == ""
    node.plugin.stop()
    kube.delete(paths.resource_claims(namespace, claim["metadata"]["name"]))
    node.plugin = node.plugin.restart()
    node.plugin.wait_for_registration_socket()
    time.sleep(1.0)
    assert uid in node.plugin.checkpoint_claims()


def test_a_deleted_claim_stays_prepared_while_its_pod_holds_it(
    orphan_node: NodeFactory, kube: KubeClient, namespace: str
) -> None:
    """Why "claim gone" is enough (orphans.py): a reserved claim outlives its deletion.

    The claim carries the finalizer the scheduler adds when it allocates and is reserved for a
    pod, as the scheduler leaves it. Deleted, it stays (with a deletionTimestamp) while the pod
    exists, so the cleaner keeps it prepared; once the pod is gone, the real resourceclaim
    controller drops the reservation and the finalizer, the claim disappears and the cleaner
    unprepares it.
    """
    node = orphan_node("--orphan-interval", "0.5")
    claim = allocated_claim(kube, namespace, node.node, [share("dcu", Z100_A, 10, "1Gi")])
    name, uid = claim["metadata"]["name"], claim["metadata"]["uid"]
    # The pod names the claim, as a real one does: the controller looks at a pod's claims
    # when the pod changes or goes.
    pod = kube.create(
        paths.pods(namespace),
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": unique_name("holder"), "namespace": namespace},
            "spec": {
                "nodeName": node.node,
                "resourceClaims": [{"name": "dcu", "resourceClaimName": name}],
                "containers": [
                    {
                        "name": "ctr",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"claims": [{"name": "dcu"}]},
                    }
                ],
            },
        },
    )
    claim["metadata"]["finalizers"] = [DELETE_PROTECTION]
    claim = kube.replace(paths.resource_claims(namespace, name), claim)
    claim["status"]["reservedFor"] = [
        {"resource": "pods", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}
    ]
    claim = kube.replace(paths.resource_claims(namespace, name, subresource="status"), claim)
    assert prepare(node.dra_socket, claim)[uid].error == ""

    kube.delete(paths.resource_claims(namespace, name))
    time.sleep(1.5)  # three cleanup rounds
    held = kube.get(paths.resource_claims(namespace, name))
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["uid"] == uid
    assert not node.is_clean(uid), "a claim its pod still holds was unprepared"

    kube.delete(paths.pods(namespace, pod["metadata"]["name"]), grace_period_s=0)
    wait_for(
        lambda: node.is_clean(uid),
        timeout_s=60,
        description="the claim to go with its pod and be unprepared",
        details=lambda: node.plugin.log_tail(),
    )
    with pytest.raises(NotFound):
        kube.get(paths.resource_claims(namespace, name))
