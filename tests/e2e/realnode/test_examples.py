"""End to end on two real nodes: every pod of deploy/examples runs, and verify passes inside it.

The examples are applied unchanged (their image ``python:3.12-slim`` is the local test image
under that name, :data:`~dra_driver.testing.realnode.node.EXAMPLE_IMAGE_ALIASES`). The plugins
authenticate as deploy/rbac.yaml's ServiceAccount with tokens bound to a pod on their node, with
deploy/admission-slices.yaml in force, so this also shows the chart's RBAC and the node-scoped
slice policy are enough for a real kubelet's prepare and unprepare. In every container of every
pod the one-file ``dcu-dra verify`` (copied in, as ``kubectl cp`` would) checks what the
runtime injected; deleting the pods leaves no CDI spec or vdev file on either node.
"""

from __future__ import annotations

import json
from typing import Any

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.testing.cluster import (
    REPO_ROOT,
    apply_yaml,
    delete_namespace,
    wait_for_pod_running,
)
from dra_driver.testing.identity import PLUGIN_ACCOUNT, PLUGIN_NAMESPACE
from dra_driver.testing.realnode import RealNode, RealNodes
from dra_driver.testing.waiting import wait_for
from tests.e2e.realnode.helpers import MARKS, PYZ, copy_into, exec_in

pytestmark = MARKS

EXAMPLES = sorted((REPO_ROOT / "deploy" / "examples").glob("*.yaml"))
IN_CONTAINER_PYZ = "/tmp/dcu-dra.pyz"


def verify_in(node: RealNode, pod: dict[str, Any], container: str) -> dict[str, Any]:
    """Copy the pyz into the container and run ``verify --json`` there; returns its report."""
    copy_into(node, pod, container, PYZ, IN_CONTAINER_PYZ)
    done = exec_in(
        node, pod, container, "python3", "-I", "-S", IN_CONTAINER_PYZ, "verify", "--json"
    )
    assert done.returncode == 0, f"verify failed in {container}:\n{done.stdout}\n{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["ok"] is True, report
    return report


def test_every_example_pod_verifies_on_two_real_nodes(
    real_nodes: RealNodes, kube: KubeClient
) -> None:
    namespaces: list[str] = []
    pods: list[tuple[str, str]] = []
    try:
        for path in EXAMPLES:
            for obj in apply_yaml(kube, path.read_text()):
                meta = obj["metadata"]
                if obj["kind"] == "Namespace":
                    namespaces.append(meta["name"])
                elif obj["kind"] == "Pod":
                    pods.append((meta["namespace"], meta["name"]))
        assert len(pods) == 6, pods
        by_name = {node.name: node for node in real_nodes.nodes}
        placed: dict[str, list[str]] = {}
        for namespace, name in pods:
            pod = wait_for_pod_running(kube, namespace, name, timeout_s=120)
            node = by_name[pod["spec"]["nodeName"]]
            placed.setdefault(node.name, []).append(f"{namespace}/{name}")
            for container in pod["spec"]["containers"]:
                report = verify_in(node, pod, container["name"])
                renders = [n for n in report["deviceNodes"] if "/renderD" in n["path"]]
                assert renders, report
        # The scheduler spreads the six pods over both nodes (one node cannot hold them all).
        assert len(placed) == 2, placed

        # Each plugin's only credential is its ServiceAccount's token bound to its node (the
        # slices it published and the claims it prepared went through the chart's RBAC).
        account = f"system:serviceaccount:{PLUGIN_NAMESPACE}:{PLUGIN_ACCOUNT}"
        for node in real_nodes.nodes:
            assert node.plugin_kubeconfig != node.kubeconfig
            as_plugin = KubeClient.from_kubeconfig(node.plugin_kubeconfig)
            review = as_plugin.create(
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
            user = review["status"]["userInfo"]
            assert user["username"] == account, user
            assert user["extra"]["authentication.kubernetes.io/node-name"] == [node.name], user
            assert node.plugin.slices(kube), node.name
    finally:
        for namespace in namespaces:
            delete_namespace(kube, namespace)
    for node in real_nodes.nodes:
        wait_for(
            lambda: not node.plugin.spec_files() and not node.plugin.vdev_files(),  # noqa: B023
            timeout_s=60,
            description=f"every claim on {node.name} unprepared",
        )
    leftover = kube.list(paths.pods(), field_selector="status.phase=Running").get("items") or []
    assert all(p["metadata"]["namespace"] == PLUGIN_NAMESPACE for p in leftover), leftover
