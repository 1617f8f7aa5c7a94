"""The node, lease and pod status the fake kubelet writes look like a real kubelet's."""

from __future__ import annotations

import datetime as dt

from dra_driver.testing.fakekubelet.objects import (
    lease_object,
    micro_time,
    node_labels,
    node_status,
    running_pod_status,
)

NOW = dt.datetime(2026, 7, 30, 12, 0, 1, 234567, tzinfo=dt.UTC)


def test_node_is_ready_with_fixed_capacity_and_hostname_label() -> None:
    status = node_status("n1", NOW)

    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["lastHeartbeatTime"]) == ("True", "2026-07-30T12:00:01Z")
    assert status["allocatable"] == {"cpu": "16", "memory": "64Gi", "pods": "110"}
    assert status["capacity"] == status["allocatable"]
    assert node_labels("n1", {"x": "y"})["kubernetes.io/hostname"] == "n1"


def test_lease_is_owned_by_the_node_and_uses_micro_time() -> None:
    lease = lease_object("n1", "node-uid", NOW)

    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "node-uid"
    assert lease["spec"]["renewTime"] == "2026-07-30T12:00:01.234567Z" == micro_time(NOW)


def test_running_status_reports_every_container_started_and_ready() -> None:
    pod = {
        "metadata": {"uid": "u1"},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "app", "image": "pause"}],
        },
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "earlier"}
            ]
        },
    }

    status = running_pod_status(pod, NOW)

    assert status["phase"] == "Running"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert {kind: c["status"] for kind, c in conditions.items()} == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert conditions["PodScheduled"]["lastTransitionTime"] == "earlier"
    (app,) = status["containerStatuses"]
    assert (app["ready"], app["started"], app["containerID"]) == (True, True, "fake://u1/app")
    assert app["state"] == {"running": {"startedAt": "2026-07-30T12:00:01Z"}}
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["reason"] == "Completed"


def test_node_conditions_keep_their_transition_time_across_heartbeats() -> None:
    since = NOW - dt.timedelta(minutes=5)

    status = node_status("n1", NOW, since=since)

    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["lastTransitionTime"], ready["lastHeartbeatTime"]) == (
        "2026-07-30T11:55:01Z",
        "2026-07-30T12:00:01Z",
    )
