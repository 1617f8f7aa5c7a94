"""Measure NodePrepareResources / NodeUnprepareResources latency of the real daemon.

Starts the local control plane and ``dcu-dra kubelet-plugin`` on a mock DCU node, then runs
N cycles, each: create a ResourceClaim whose status says it is allocated as a vDCU share of
one DCU (written through the status subresource, as the scheduler would), call
NodePrepareResources (v1) on the plugin's DRA socket as the kubelet does, then
NodeUnprepareResources, and delete the claim. The API calls that set up a cycle are not
timed; the prepare figure includes the plugin's GET of the claim, planning, the checkpoint
writes, the vdev file and the CDI spec. Prints p50/p99 and writes JSON.

Usage: .venv/bin/python bench/prepare_latency.py [--cycles 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from dra_driver.kube import paths  # noqa: E402
from dra_driver.kubeletplugin._pb import dra_v1_pb2, dra_v1_pb2_grpc  # noqa: E402
from dra_driver.mock import create_mock_node  # noqa: E402
from dra_driver.testing.cluster import ControlPlane  # noqa: E402
from dra_driver.testing.waiting import wait_for  # noqa: E402

DCU_DRA = str(Path(sys.executable).parent / "dcu-dra")
NODE = "bench-node"
DEVICES = ["dcu-0000-3b-00-0", "dcu-0000-5e-00-0", "dcu-0000-af-00-0"]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--json", type=Path, default=REPO / "build" / "bench-prepare.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bp-", dir="/tmp"))
    plane = ControlPlane(data_dir=work / "cp").start()
    kube = plane.client
    kube.create(paths.nodes(), {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})
    kube.create(
        paths.namespaces(), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}
    )
    root = work / "node"
    create_mock_node(root)
    data = work / "data"
    plugin = subprocess.Popen(
        [
            DCU_DRA,
            "kubelet-plugin",
            "--node-name",
            NODE,
            "--root",
            str(root),
            "--kubeconfig",
            str(plane.kubeconfig),
            "--registrar-dir",
            str(work / "reg"),
            "--plugin-data-dir",
            str(data),
            "--cdi-dir",
            str(work / "cdi"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prepare_ms: list[float] = []
    unprepare_ms: list[float] = []
    try:
        wait_for(lambda: (data / "dra.sock").exists(), timeout_s=30, description="DRA socket")
        channel = grpc.insecure_channel(f"unix:{data / 'dra.sock'}")
        stub = dra_v1_pb2_grpc.DRAPluginStub(channel)
        for cycle in range(args.cycles):
            name = f"c{cycle}"
            claim = kube.create(
                paths.resource_claims("bench"),
                {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceClaim",
                    "metadata": {"name": name, "namespace": "bench"},
                    "spec": {
                        "devices": {
                            "requests": [
                                {
                                    "name": "dcu",
                                    "exactly": {
                                        "deviceClassName": "vdcu.dcu.hygon.com",
                                        "capacity": {"requests": {"cores": "15", "memory": "4Gi"}},
                                    },
                                }
                            ]
                        }
                    },
                },
            )
            claim["status"] = {
                "allocation": {
                    "devices": {
                        "results": [
                            {
                                "request": "dcu",
                                "driver": "dcu.hygon.com",
                                "pool": NODE,
                                "device": DEVICES[cycle % len(DEVICES)],
                                "shareID": str(uuid.uuid4()),
                                "consumedCapacity": {
                                    "cores": "15",
                                    "memory": "4Gi",
                                    "vdevices": "1",
                                },
                            }
                        ]
                    },
                    "nodeSelector": {
                        "nodeSelectorTerms": [
                            {
                                "matchFields": [
                                    {"key": "metadata.name", "operator": "In", "values": [NODE]}
                                ]
                            }
                        ]
                    },
                }
            }
            kube.replace(paths.resource_claims("bench", name) + "/status", claim)
            ref = dra_v1_pb2.Claim(namespace="bench", name=name, uid=claim["metadata"]["uid"])
            started = time.perf_counter()
            response = stub.NodePrepareResources(
                dra_v1_pb2.NodePrepareResourcesRequest(claims=[ref]), timeout=45
            )
            prepare_ms.append((time.perf_counter() - started) * 1000)
            if response.claims[ref.uid].error:
                raise RuntimeError(response.claims[ref.uid].error)
            started = time.perf_counter()
            stub.NodeUnprepareResources(
                dra_v1_pb2.NodeUnprepareResourcesRequest(claims=[ref]), timeout=45
            )
            unprepare_ms.append((time.perf_counter() - started) * 1000)
            kube.delete(paths.resource_claims("bench", name))
        channel.close()
    finally:
        plugin.send_signal(signal.SIGTERM)
        plugin.wait(timeout=20)
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "cycles": args.cycles,
        "prepare_p50_ms": round(statistics.median(prepare_ms), 2),
        "prepare_p99_ms": round(percentile(prepare_ms, 0.99), 2),
        "unprepare_p50_ms": round(statistics.median(unprepare_ms), 2),
        "unprepare_p99_ms": round(percentile(unprepare_ms, 0.99), 2),
    }
    for key, value in result.items():
        print(f"{key:<20}{value:>10}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
