"""The real daemon's /metrics and liveness endpoints through a prepare/unprepare cycle.

Claims are created in the real API server with the allocation the scheduler would write, and
prepared over the daemon's DRA socket as the kubelet does (see test_prepare_calls.py); the
test then scrapes /metrics over HTTP, as Prometheus would, and asks the liveness endpoint, as
the kubelet's gRPC probe would. A claim deleted while prepared is counted by orphan cleanup,
and a DCU lost with ``dcu-dra mock fault`` (see test_health.py) turns its healthy gauge to 0.
"""

from __future__ import annotations

import signal
import socket
import urllib.request
import uuid
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.kubeletplugin._pb import dra_v1_pb2, dra_v1_pb2_grpc
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import (
    K100,
    Z100_A,
    Z100_AND_K100,
    DaemonNode,
    DaemonNodeFactory,
    allocated_claim,
    mock_fault,
    share,
    v1_ref,
)

pytestmark = pytest.mark.e2e

GIB = 2**30
#: Health checks and orphan rounds every second (defaults 5 s and 60 s) keep the waits short.
INTERVAL_S = 1.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class MeteredDaemon:
    """A :class:`DaemonNode` started with --metrics-addr and --healthcheck-port."""

    node: DaemonNode
    metrics_port: int
    health_port: int

    def scrape(self) -> Samples:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def liveness(self) -> int:
        with grpc.insecure_channel(f"127.0.0.1:{self.health_port}") as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="liveness"), timeout=10
            )
        return int(response.status)


@pytest.fixture
def daemon(daemon_node: DaemonNodeFactory) -> MeteredDaemon:
    metrics_port, health_port = free_port(), free_port()
    node = daemon_node(
        "--metrics-addr",
        f"127.0.0.1:{metrics_port}",
        "--healthcheck-port",
        str(health_port),
        "--health-interval",
        str(INTERVAL_S),
        "--orphan-interval",
        str(INTERVAL_S),
        devices=Z100_AND_K100,
    )
    return MeteredDaemon(node, metrics_port, health_port)


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_and_liveness_through_a_prepare_unprepare_cycle(
    daemon: MeteredDaemon, kube: KubeClient, namespace: str
) -> None:
    assert daemon.liveness() == health_pb2.HealthCheckResponse.SERVING
    before = daemon.scrape()
    assert one(before, "dcu_dra_device_capacity_cores", device=K100) == 120
    assert one(before, "dcu_dra_device_allocated_cores", device=Z100_A) == 0
    assert not [name for name, _ in before if name.endswith("_created")]
    # The first health check runs before the daemon registers, so it is known from the start.
    for device in (Z100_A, K100):
        assert one(before, "dcu_dra_device_healthy", device=device) == 1
        assert (
            one(before, "dcu_dra_device_unhealthy_reason", device=device, reason="NotResponding")
            == 0
        )
    assert one(before, "dcu_dra_orphans_cleaned_total") == 0

    quarter = allocated_claim(kube, namespace, daemon.node.name, [share("dcu", Z100_A, 15, "4Gi")])
    half = allocated_claim(kube, namespace, daemon.node.name, [share("dcu", K100, 60, "32Gi")])
    missing = dra_v1_pb2.Claim(namespace=namespace, name="gone", uid=str(uuid.uuid4()))
    with daemon.node.channel() as channel:
        stub = dra_v1_pb2_grpc.DRAPluginStub(channel)
        for ref in (v1_ref(quarter), v1_ref(half)):
            response = stub.NodePrepareResources(
                dra_v1_pb2.NodePrepareResourcesRequest(claims=[ref]), timeout=45
            )
            assert response.claims[ref.uid].error == ""
        failed = stub.NodePrepareResources(
            dra_v1_pb2.NodePrepareResourcesRequest(claims=[missing]), timeout=45
        )
        assert "not found" in failed.claims[missing.uid].error

        # The probe's own empty NodePrepareResources call is not counted.
        assert daemon.liveness() == health_pb2.HealthCheckResponse.SERVING
        during = daemon.scrape()
        assert one(during, "dcu_dra_prepare_requests_total") == 3
        assert one(during, "dcu_dra_prepare_duration_seconds_count") == 3
        assert one(during, "dcu_dra_prepare_duration_seconds_bucket", le="+Inf") == 3
        assert one(during, "dcu_dra_prepare_errors_total", reason="claim") == 1
        assert one(during, "dcu_dra_prepare_errors_total", reason="allocation") == 0
        assert one(during, "dcu_dra_requests_in_flight", method="prepare") == 0
        # Two writes per fresh claim: the plan, then "completed".
        assert one(during, "dcu_dra_checkpoint_write_duration_seconds_count") >= 4
        assert one(during, "dcu_dra_device_allocated_cores", device=Z100_A) == 15
        assert one(during, "dcu_dra_device_allocated_memory_bytes", device=Z100_A) == 4 * GIB
        assert one(during, "dcu_dra_device_shares", device=Z100_A) == 1
        assert one(during, "dcu_dra_device_allocated_cores", device=K100) == 60
        assert one(during, "dcu_dra_device_allocated_memory_bytes", device=K100) == 32 * GIB
        assert one(during, "dcu_dra_publish_errors_total", reason="rejected") == 0

        # A prepared claim deleted behind the kubelet's back is unprepared by orphan cleanup.
        orphan = allocated_claim(
            kube, namespace, daemon.node.name, [share("dcu", Z100_A, 10, "1Gi")]
        )
        response = stub.NodePrepareResources(
            dra_v1_pb2.NodePrepareResourcesRequest(claims=[v1_ref(orphan)]), timeout=45
        )
        assert response.claims[orphan["metadata"]["uid"]].error == ""
        assert one(daemon.scrape(), "dcu_dra_device_allocated_cores", device=Z100_A) == 25
        kube.delete(paths.resource_claims(namespace, orphan["metadata"]["name"]))
        wait_for(
            lambda: one(daemon.scrape(), "dcu_dra_orphans_cleaned_total") == 1,
            timeout_s=15,
            description="orphan cleanup to count the deleted claim",
        )
        assert one(daemon.scrape(), "dcu_dra_device_allocated_cores", device=Z100_A) == 15

        done = stub.NodeUnprepareResources(
            dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[v1_ref(quarter), v1_ref(half)]),
            timeout=45,
        )
        assert [c.error for c in done.claims.values()] == ["", ""]

    after = daemon.scrape()
    assert one(after, "dcu_dra_unprepare_requests_total") == 1
    assert one(after, "dcu_dra_unprepare_duration_seconds_count") == 1
    assert sum(v for (name, _), v in after.items() if name == "dcu_dra_unprepare_errors_total") == 0
    for device in (Z100_A, K100):
        assert one(after, "dcu_dra_device_allocated_cores", device=device) == 0
        assert one(after, "dcu_dra_device_allocated_memory_bytes", device=device) == 0
        assert one(after, "dcu_dra_device_shares", device=device) == 0

    assert "is now lost" in mock_fault(daemon.node.root, 1, "lost")  # device 1 is the K100
    wait_for(
        lambda: one(daemon.scrape(), "dcu_dra_device_healthy", device=K100) == 0,
        timeout_s=15,
        description="the lost DCU's healthy gauge to drop to 0",
    )
    lost = daemon.scrape()
    assert one(lost, "dcu_dra_device_unhealthy_reason", device=K100, reason="NotResponding") == 1
    assert one(lost, "dcu_dra_device_healthy", device=Z100_A) == 1

    assert daemon.node.plugin.stop(signal.SIGTERM) == 0, daemon.node.plugin.log_tail()
