"""Proof that one device is shared through consumable capacity (resource-api.md §3).

A ResourceSlice published by hand offers one multi-allocatable device with ``cores``,
``memory`` and ``vdevices``. The real scheduler allocates shares, the real resourceclaim
controller creates the claims, the fake kubelet prepares them through a stub DRA plugin over
real gRPC, and the pods are reported Running.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.testing.cluster import (
    allocation_results,
    is_pod_running,
    pod_claims,
    wait_for_pod_gone,
    wait_for_pod_running,
)
from dra_driver.testing.fakekubelet import PREPARE, UNPREPARE
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import FakeKubeletFactory, StubPluginFactory
from tests.e2e.scenario import (
    QUARTER,
    create_claim,
    create_claim_template,
    create_pod,
    offer_shared_device,
    unschedulable_message,
)
from tests.e2e.stubplugin import cdi_id

pytestmark = pytest.mark.e2e

#: What the 1.36 scheduler reports for a pod whose claim no device can satisfy; with one node:
#: "0/1 nodes are available: 1 cannot allocate all claims. still not schedulable, preemption:
#: 0/1 nodes are available: 1 Preemption is not helpful for scheduling." It names neither the
#: claim nor the capacity that ran out.
#: Nodes left by other tests may add their own reasons, hence the optional parts.
UNSCHEDULABLE = (
    r"^0/\d+ nodes are available: (.+, )?\d+ cannot allocate all claims(, .+)?\. "
    r"still not schedulable, preemption: 0/\d+ nodes are available: "
    r"(.+, )?\d+ Preemption is not helpful for scheduling(, .+)?\.$"
)


def list_pods(kube: KubeClient, namespace: str) -> list[dict[str, Any]]:
    return list(kube.list(paths.pods(namespace)).get("items") or [])


def only_result(claim: dict[str, Any]) -> dict[str, Any]:
    (result,) = allocation_results(claim)
    return result


def test_four_shares_fit_on_one_device_and_the_fifth_pod_waits(
    kube: KubeClient,
    namespace: str,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
) -> None:
    kubelet = fake_kubelet()
    plugin = stub_plugin(kubelet, driver=driver_name)
    offer_shared_device(kube, kubelet, driver=driver_name)
    create_claim_template(kube, namespace, "quarter", driver=driver_name, capacity=QUARTER)

    names = [f"share-{index}" for index in range(5)]
    for name in names:
        create_pod(kube, namespace, name, template="quarter")

    def four_running_one_unschedulable() -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        pods = list_pods(kube, namespace)
        running = [pod for pod in pods if is_pod_running(pod)]
        waiting = [pod for pod in pods if unschedulable_message(pod)]
        if len(running) == 4 and len(waiting) == 1:
            return running, waiting[0]
        return None

    running, pending = wait_for(
        four_running_one_unschedulable,
        timeout_s=30,
        description="4 pods Running and 1 Unschedulable",
        details=lambda: (
            [
                (p["metadata"]["name"], p["status"].get("phase"), unschedulable_message(p))
                for p in list_pods(kube, namespace)
            ]
            + [kubelet.pod_errors()]
        ),
    )

    # The scheduler: four shares of one device, each with its own share ID and capacity.
    claims = {pod["metadata"]["name"]: pod_claims(kube, pod)["dcu"] for pod in running}
    results = {name: only_result(claim) for name, claim in claims.items()}
    assert {(r["driver"], r["pool"], r["device"]) for r in results.values()} == {
        (driver_name, kubelet.node_name, "dev-0")
    }
    assert len({r["shareID"] for r in results.values()}) == 4
    for result in results.values():
        assert result["consumedCapacity"] == {"cores": "15", "memory": "2Gi", "vdevices": "1"}
    message = unschedulable_message(pending)
    assert message is not None
    assert re.match(UNSCHEDULABLE, message), message
    assert pending["spec"].get("nodeName") is None

    # The fake kubelet: each claim prepared exactly once, over v1, with the share IDs.
    uids = {claim["metadata"]["uid"] for claim in claims.values()}
    prepared = kubelet.prepared_claims()
    assert set(prepared) == uids
    prepare_calls = kubelet.calls(method=PREPARE, driver=driver_name)
    assert sorted(uid for call in prepare_calls for uid in call.claim_uids) == sorted(uids)
    assert all(call.error is None and call.service == "v1.DRAPlugin" for call in prepare_calls)
    assert len(plugin.recorded("NodePrepareResources")) == 4
    for name, claim in claims.items():
        uid, share_id = claim["metadata"]["uid"], results[name]["shareID"]
        (device,) = prepared[uid].devices
        assert (device.device, device.share_id, device.request_names) == (
            "dev-0",
            share_id,
            ("dcu",),
        )
        assert kubelet.container_cdi_ids((namespace, name)) == {
            "app": [cdi_id(uid, "dev-0", share_id)]
        }

    # Deleting a pod unprepares its claim, the pod disappears, and the waiting pod gets the share.
    victim = sorted(claims)[0]
    victim_uid = claims[victim]["metadata"]["uid"]
    kube.delete(paths.pods(namespace, victim))
    wait_for_pod_gone(kube, namespace, victim)
    unprepare_calls = kubelet.calls(method=UNPREPARE, driver=driver_name)
    assert [call.claim_uids for call in unprepare_calls] == [(victim_uid,)]
    assert victim_uid not in kubelet.prepared_claims()
    wait_for_pod_running(kube, namespace, pending["metadata"]["name"], timeout_s=30)


def test_claim_without_capacity_requests_takes_the_whole_device(
    kube: KubeClient,
    namespace: str,
    fake_kubelet: FakeKubeletFactory,
    stub_plugin: StubPluginFactory,
    driver_name: str,
) -> None:
    kubelet = fake_kubelet()
    stub_plugin(kubelet, driver=driver_name)
    offer_shared_device(kube, kubelet, driver=driver_name)
    create_claim(kube, namespace, "whole", driver=driver_name, capacity=None)
    create_claim_template(kube, namespace, "quarter", driver=driver_name, capacity=QUARTER)

    create_pod(kube, namespace, "whole", claim="whole")
    pod = wait_for_pod_running(kube, namespace, "whole")
    create_pod(kube, namespace, "small", template="quarter")

    result = only_result(pod_claims(kube, pod)["dcu"])
    assert result["device"] == "dev-0"
    assert result["consumedCapacity"] == {"cores": "60", "memory": "32Gi", "vdevices": "1"}
    assert result["shareID"]
    # Nothing is left on the device for a quarter share.
    wait_for(
        lambda: unschedulable_message(kube.get(paths.pods(namespace, "small"))),
        timeout_s=20,
        description="pod small to be Unschedulable",
    )
