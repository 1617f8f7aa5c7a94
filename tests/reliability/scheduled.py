"""Claims the real scheduler allocates on a node without a kubelet, and the kubelet's calls.

Tests that need the kubelet's DRA calls at moments of their choosing (all at once, during an
API server outage) create vDCU claims and pods pinned to a Node from
``cluster.create_ready_node``: the real scheduler allocates the claims and binds the pods, which
then stay Pending, and the test calls NodePrepareResources/NodeUnprepareResources itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.kubeletplugin._pb import dra_v1_pb2, dra_v1_pb2_grpc
from dra_driver.testing.cluster import allocation_results, create_object
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import PAUSE

VDCU_CLASS = "vdcu.dcu.hygon.com"
#: The kubelet's timeout of a DRA call.
CALL_TIMEOUT_S = 45.0


def create_vdcu_claim(
    kube: KubeClient, namespace: str, name: str, *, cores: int, memory_mib: int
) -> dict[str, Any]:
    """A ResourceClaim for one vDCU share of ``cores`` CUs and ``memory_mib`` MiB."""
    exactly = {
        "deviceClassName": VDCU_CLASS,
        "capacity": {"requests": {"cores": str(cores), "memory": f"{memory_mib}Mi"}},
    }
    return create_object(
        kube,
        {
            "apiVersion": paths.RESOURCE_V1,
            "kind": "ResourceClaim",
            "metadata": {"name": name},
            "spec": {"devices": {"requests": [{"name": "dcu", "exactly": exactly}]}},
        },
        namespace=namespace,
    )


def create_pod(
    kube: KubeClient, namespace: str, name: str, *, node: str, claims: Sequence[str]
) -> dict[str, Any]:
    """A pod pinned to ``node`` whose one container uses every claim of ``claims`` (by name)."""
    return create_object(
        kube,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {
                        "name": "c",
                        "image": PAUSE,
                        "resources": {"claims": [{"name": f"d{i}"} for i in range(len(claims))]},
                    }
                ],
                "resourceClaims": [
                    {"name": f"d{i}", "resourceClaimName": claim} for i, claim in enumerate(claims)
                ],
            },
        },
        namespace=namespace,
    )


def wait_for_allocations(
    kube: KubeClient, namespace: str, names: Sequence[str], *, timeout_s: float = 120.0
) -> list[dict[str, Any]]:
    """Wait until the scheduler allocated and reserved every claim; return them in order."""

    def allocated() -> list[dict[str, Any]] | None:
        items = kube.list(paths.resource_claims(namespace)).get("items") or []
        by_name = {c["metadata"]["name"]: c for c in items}
        done = [
            by_name[n]
            for n in names
            if n in by_name
            and allocation_results(by_name[n])
            and (by_name[n].get("status") or {}).get("reservedFor")
        ]
        return done if len(done) == len(names) else None

    def pods() -> object:
        items = kube.list(paths.pods(namespace)).get("items") or []
        return [(p["metadata"]["name"], (p.get("status") or {}).get("conditions")) for p in items]

    return wait_for(
        allocated,
        timeout_s=timeout_s,
        interval_s=0.2,
        description=f"the scheduler to allocate {len(names)} claims",
        details=pods,
    )


def claim_ref(claim: dict[str, Any]) -> dra_v1_pb2.Claim:
    """How the kubelet names a claim in a DRA call."""
    meta = claim["metadata"]
    return dra_v1_pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def prepare(stub: dra_v1_pb2_grpc.DRAPluginStub, *claims: dict[str, Any]) -> Any:
    """One NodePrepareResources call for ``claims``; the response."""
    request = dra_v1_pb2.NodePrepareResourcesRequest(claims=[claim_ref(c) for c in claims])
    return stub.NodePrepareResources(request, timeout=CALL_TIMEOUT_S)


def unprepare(stub: dra_v1_pb2_grpc.DRAPluginStub, *claims: dict[str, Any]) -> Any:
    """One NodeUnprepareResources call for ``claims``; the response."""
    request = dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[claim_ref(c) for c in claims])
    return stub.NodeUnprepareResources(request, timeout=CALL_TIMEOUT_S)
