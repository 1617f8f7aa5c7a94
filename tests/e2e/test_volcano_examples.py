"""deploy/examples/volcano/ on the real plugin, scheduled by kube-scheduler (no Volcano here).

Volcano cannot be built on these machines (README, "With Volcano"), so these tests check what
does not need it: the examples' claim templates are allocated by the control plane's
kube-scheduler and prepared by the real plugin with disjoint CU masks, the pods created as
Volcano's job controller would name them, with ``schedulerName`` dropped and a nodeSelector
added. The second test shows what a gang scheduler is for: without one, five quarter-card
tasks on a node of one card start four and hold their shares while the fifth waits.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.node.devices import discover
from dra_driver.node.mock import parse_config
from dra_driver.testing.cluster import (
    allocation_results,
    is_pod_running,
    load_yaml,
    pod_claims,
    wait_for_pod_running,
)
from dra_driver.testing.invariants import node_state_problems
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import DEPLOY_DIR, ONE_Z100, DcuNode, DcuNodeFactory

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("device_classes")]

VOLCANO_EXAMPLES = DEPLOY_DIR / "examples" / "volcano"
HOSTNAME = "kubernetes.io/hostname"


def example(name: str) -> list[dict[str, Any]]:
    return load_yaml((VOLCANO_EXAMPLES / name).read_text())


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def in_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    moved = copy.deepcopy(obj)
    moved["metadata"]["namespace"] = namespace
    return moved


def on_kube_scheduler(pod: dict[str, Any], namespace: str, node: str) -> dict[str, Any]:
    """The pod with the default scheduler, pinned to ``node`` by label (it must be scheduled)."""
    moved = in_namespace(pod, namespace)
    spec = moved["spec"]
    assert spec.pop("schedulerName", None) == "volcano"
    spec["nodeSelector"] = {HOSTNAME: node}
    return moved


def task_pods(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The pods Volcano's job controller makes of a vcjob: ``<job>-<task>-<index>``."""
    for task in job["spec"]["tasks"]:
        for index in range(task["replicas"]):
            yield {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"{job['metadata']['name']}-{task['name']}-{index}"},
                "spec": {**copy.deepcopy(task["template"]["spec"]), "schedulerName": "volcano"},
            }


def consumed(claim: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(device, consumed capacity) of a claim with one share."""
    [result] = allocation_results(claim)
    return result["device"], result.get("consumedCapacity") or {}


def running_pods(kube: KubeClient, namespace: str) -> list[dict[str, Any]]:
    return [p for p in kube.list(paths.pods(namespace))["items"] if is_pod_running(p)]


def test_volcano_examples_are_allocated_and_prepared_with_disjoint_cu_masks(
    kube: KubeClient, namespace: str, dcu_node: DcuNodeFactory
) -> None:
    node = dcu_node()
    pod_file, job_file = example("vdcu-pod.yaml"), example("vdcu-job.yaml")
    for template in of_kind(pod_file, "ResourceClaimTemplate") + of_kind(
        job_file, "ResourceClaimTemplate"
    ):
        kube.create(paths.resource_claim_templates(namespace), in_namespace(template, namespace))
    [job] = of_kind(job_file, "Job")
    pods = [*of_kind(pod_file, "Pod"), *task_pods(job)]
    for pod in pods:
        kube.create(paths.pods(namespace), on_kube_scheduler(pod, namespace, node.name))
    running = [
        wait_for_pod_running(kube, namespace, pod["metadata"]["name"], timeout_s=60) for pod in pods
    ]
    shares = {
        pod["metadata"]["name"]: consumed(claim)
        for pod in running
        for claim in pod_claims(kube, pod).values()
    }
    assert shares["vdcu-demo"][1] == {"cores": "30", "memory": "2Gi", "vdevices": "1"}
    for index in range(4):
        assert shares[f"vdcu-gang-worker-{index}"][1] == {
            "cores": "15",
            "memory": "8188Mi",
            "vdevices": "1",
        }
    # Every share prepared by the plugin; the CU masks and pipes are disjoint on each card.
    assert len(node.plugin.checkpoint_claims()) == 5
    assert node_state_problems(node.plugin, discover(node.root)) == []


@pytest.fixture
def one_card_node(dcu_node: DcuNodeFactory) -> Callable[[dict[str, str]], DcuNode]:
    """Start fake-kubelet nodes of one Z100 each (with extra labels), with the real plugin."""
    return lambda labels: dcu_node(mock=parse_config({"devices": ONE_Z100}), node_labels=labels)


def test_without_a_gang_scheduler_five_quarter_tasks_on_one_card_start_four(
    kube: KubeClient, namespace: str, one_card_node: Callable[[dict[str, str]], DcuNode]
) -> None:
    """What Volcano's minAvailable prevents: a partial start that holds four shares."""
    label = {"volcano-example": namespace}
    first = one_card_node(label)
    job_file = example("vdcu-job.yaml")
    [template] = of_kind(job_file, "ResourceClaimTemplate")
    kube.create(paths.resource_claim_templates(namespace), in_namespace(template, namespace))
    [job] = of_kind(job_file, "Job")
    job = copy.deepcopy(job)
    job["spec"]["tasks"][0]["replicas"] = 5
    for pod in task_pods(job):
        moved = on_kube_scheduler(pod, namespace, first.name)
        moved["spec"]["nodeSelector"] = label
        kube.create(paths.pods(namespace), moved)

    wait_for(
        lambda: len(running_pods(kube, namespace)) == 4,
        timeout_s=60,
        description="four of the five task pods to run",
    )
    # The fifth waits, its claim unallocated; the four hold the card's four slots.
    waiting = [p for p in kube.list(paths.pods(namespace))["items"] if not is_pod_running(p)]
    assert len(waiting) == 1
    assert "nodeName" not in waiting[0]["spec"]
    claims = wait_for(
        lambda: (
            (items := kube.list(paths.resource_claims(namespace))["items"])
            and (items if len(items) == 5 else None)
        ),
        timeout_s=30,
        description="a claim for each of the five task pods",
    )
    assert sorted(len(allocation_results(claim)) for claim in claims) == [0, 1, 1, 1, 1]
    assert len(first.plugin.checkpoint_claims()) == 4
    assert node_state_problems(first.plugin, discover(first.root)) == []

    # A second card (another node of one Z100) lets the fifth start.
    second = one_card_node(label)
    started = wait_for_pod_running(kube, namespace, waiting[0]["metadata"]["name"], timeout_s=60)
    assert started["spec"]["nodeName"] == second.name
    assert len(second.plugin.checkpoint_claims()) == 1
