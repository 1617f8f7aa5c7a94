"""The API objects a kubelet writes for its node: Node, node Lease, running pod status.

Pure builders; the timestamps are passed in so the output is deterministic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

#: What the fake node offers the scheduler (a mid-size node; no test depends on the numbers).
NODE_CAPACITY: Mapping[str, str] = {"cpu": "16", "memory": "64Gi", "pods": "110"}
#: The kubelet's default ``nodeLeaseDurationSeconds``.
LEASE_DURATION_S = 40
#: The namespace of node heartbeats.
NODE_LEASE_NAMESPACE = "kube-node-lease"
KUBELET_VERSION = "v1.36.3-fakekubelet"


def rfc3339(moment: dt.datetime) -> str:
    """A ``metav1.Time`` string (seconds, UTC)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: dt.datetime) -> str:
    """A ``metav1.MicroTime`` string (microseconds, UTC), as Lease.renewTime needs."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_labels(node_name: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The well-known labels a kubelet sets on its Node, plus ``extra``."""
    return {
        "kubernetes.io/hostname": node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        **(extra or {}),
    }


def node_object(node_name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """A new Node: labels, no taints (status is written separately)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node_name, "labels": dict(labels)},
        "spec": {},
    }


def node_status(
    node_name: str, now: dt.datetime, *, since: dt.datetime | None = None
) -> dict[str, Any]:
    """A Ready node's status with a fresh heartbeat; conditions hold since ``since``."""
    stamp = rfc3339(now)
    transition = rfc3339(since or now)

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": transition,
        }

    return {
        "capacity": dict(NODE_CAPACITY),
        "allocatable": dict(NODE_CAPACITY),
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "fake"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "fake"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "fake"),
            condition("Ready", "True", "KubeletReady", "fake kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": node_name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": "",
            "osImage": "fake",
            "containerRuntimeVersion": "fake://0",
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def lease_object(node_name: str, node_uid: str, now: dt.datetime) -> dict[str, Any]:
    """The node's heartbeat Lease, owned by the Node like the kubelet's."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node_name,
            "namespace": NODE_LEASE_NAMESPACE,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}
            ],
        },
        "spec": {
            "holderIdentity": node_name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": micro_time(now),
        },
    }


def running_pod_status(pod: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The status of a pod whose containers all started and are ready.

    Init containers are reported as completed. Container IDs are ``fake://<pod uid>/<name>``.
    """
    stamp = rfc3339(now)
    uid = str((pod.get("metadata") or {}).get("uid", ""))
    spec = pod.get("spec") or {}
    old_conditions = {
        condition.get("type"): condition
        for condition in (pod.get("status") or {}).get("conditions") or []
    }

    def condition(kind: str) -> dict[str, str]:
        old = old_conditions.get(kind) or {}
        unchanged = old.get("status") == "True"
        return {
            "type": kind,
            "status": "True",
            "lastTransitionTime": old.get("lastTransitionTime", stamp) if unchanged else stamp,
        }

    def container_status(container: Mapping[str, Any], *, is_init: bool) -> dict[str, Any]:
        name = str(container.get("name"))
        image = str(container.get("image", ""))
        status: dict[str, Any] = {
            "name": name,
            "image": image,
            "imageID": f"fake://{image}",
            "containerID": f"fake://{uid}/{name}",
            "restartCount": 0,
        }
        if is_init:
            status |= {
                "ready": True,
                "started": False,
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": stamp,
                        "finishedAt": stamp,
                    }
                },
            }
        else:
            status |= {"ready": True, "started": True, "state": {"running": {"startedAt": stamp}}}
        return status

    status: dict[str, Any] = {
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers"),
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "startTime": stamp,
        "containerStatuses": [
            container_status(container, is_init=False) for container in spec.get("containers", [])
        ],
    }
    if spec.get("initContainers"):
        status["initContainerStatuses"] = [
            container_status(container, is_init=True) for container in spec["initContainers"]
        ]
    return status
