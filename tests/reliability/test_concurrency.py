"""64 claims prepared at once over 16 DCUs of one node, round after round, and the node stays sound.

The real scheduler allocates every claim (shares of random size, four to a DCU, so every
DCU's vDCU slots are full), then 128 NodePrepareResources calls hit the real daemon at the same
moment: each claim twice, as two pod workers of the kubelet sharing a claim would send it.
After the prepares, and again after 128 concurrent unprepares, the node's files must be sound
(:mod:`dra_driver.testing.invariants`: disjoint CU masks and unique pipe ids per DCU, vdev files
and CDI specs exactly for the prepared claims, the checkpoint agreeing with both), every share
must be what the scheduler allocated, and both calls for a claim must have got the same CDI IDs.

There is no kubelet: pods are bound by the scheduler and stay Pending, and the test makes the
kubelet's calls itself, all at once. The seed is printed; ``DCU_DRA_CONCURRENCY_SEED`` replays it.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from dra_driver.cluster.kube import KubeClient, NotFound, paths
from dra_driver.kubeletplugin._pb import dra_v1_pb2_grpc
from dra_driver.node.devices import Inventory, discover
from dra_driver.node.mock import create_mock_node, parse_config
from dra_driver.testing.cluster import (
    ControlPlane,
    allocation_results,
    create_ready_node,
    unique_name,
)
from dra_driver.testing.invariants import node_state
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for
from dra_driver.util.quantity import parse_integral_quantity
from tests.e2e.conftest import delete_quietly
from tests.reliability.scheduled import (
    create_pod,
    create_vdcu_claim,
    prepare,
    unprepare,
    wait_for_allocations,
)

pytestmark = pytest.mark.e2e

T = TypeVar("T")

#: 8 Z100 (60 CUs, 32752 MiB) and 8 K100_AI (120 CUs, 64 GiB), on PCI buses 0x10-0x1f.
SIXTEEN_DCUS: list[dict[str, object]] = [
    {
        "model": "Z100" if index < 8 else "K100_AI",
        "computeUnits": 60 if index < 8 else 120,
        "memory": 34342961152 if index < 8 else "64Gi",
        "pciBusID": f"0000:{0x10 + index:02x}:00.0",
        "numaNode": index // 8,
    }
    for index in range(16)
]
#: The daemon's default --max-vdevices: 64 claims fill every slot of 16 DCUs.
SHARES_PER_DCU = 4
CLAIMS = len(SIXTEEN_DCUS) * SHARES_PER_DCU
#: Calls per claim in each wave: two pod workers sharing a claim may send it at once.
CALLS_PER_CLAIM = 2
CLAIMS_PER_POD = 8
ROUNDS = 3
#: Share sizes: any four fit on the smallest DCU (4 x 15 <= 60 CUs, 4 x 8188 <= 32752 MiB).
MAX_CORES = 15
MIN_MEMORY_MIB, MAX_MEMORY_MIB = 256, 8188
MIB = 2**20


class Node:
    """A Ready Node with no kubelet, and the real daemon on a mock node of 16 DCUs."""

    def __init__(self, plane: ControlPlane, base: Path) -> None:
        self.kube = plane.client
        self.name = unique_name("conc")
        create_ready_node(self.kube, self.name)
        root = base / "root"
        create_mock_node(root, parse_config({"devices": SIXTEEN_DCUS}))
        self.inventory: Inventory = discover(root)
        self.plugin = PluginProcess.in_directory(
            base, node_name=self.name, root=root, kubeconfig=plane.kubeconfig
        )

    def start(self) -> None:
        self.plugin.start().wait_for_registration_socket()
        self.plugin.wait_for_slices(self.kube)

    def close(self) -> None:
        if self.plugin.process is not None:
            self.plugin.stop(signal.SIGKILL)
        delete_quietly(self.kube, paths.nodes(self.name))


@pytest.fixture
def node(control_plane: ControlPlane, short_sock_dir: Path) -> Iterator[Node]:
    started = Node(control_plane, short_sock_dir)
    try:
        started.start()
        yield started
    finally:
        started.close()


def create_round(
    kube: KubeClient, namespace: str, node: str, rng: random.Random, round_: int
) -> list[str]:
    """64 claims of random size and the pods that use them, pinned to ``node``; their names."""
    claims = [f"r{round_}-c{index}" for index in range(CLAIMS)]
    for name in claims:
        create_vdcu_claim(
            kube,
            namespace,
            name,
            cores=rng.randint(1, MAX_CORES),
            memory_mib=rng.randint(MIN_MEMORY_MIB, MAX_MEMORY_MIB),
        )
    for pod in range(CLAIMS // CLAIMS_PER_POD):
        mine = claims[pod * CLAIMS_PER_POD : (pod + 1) * CLAIMS_PER_POD]
        create_pod(kube, namespace, f"r{round_}-p{pod}", node=node, claims=mine)
    return claims


def delete_round(kube: KubeClient, namespace: str) -> None:
    """Delete the round's pods and claims, and wait until the claims are gone (capacity free)."""
    for pod in kube.list(paths.pods(namespace)).get("items") or []:
        delete_quietly(kube, paths.pods(namespace, pod["metadata"]["name"]))
    for claim in kube.list(paths.resource_claims(namespace)).get("items") or []:
        try:
            kube.delete(paths.resource_claims(namespace, claim["metadata"]["name"]))
        except NotFound:
            pass
    wait_for(
        lambda: not kube.list(paths.resource_claims(namespace)).get("items"),
        timeout_s=120,
        interval_s=0.2,
        description="the round's claims to be deleted",
    )


def all_at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run every call on its own thread, released together; results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def test_64_concurrent_prepares_over_16_dcus_keep_the_node_sound(
    kube: KubeClient, namespace: str, device_classes: None, node: Node
) -> None:
    seed = int(os.environ.get("DCU_DRA_CONCURRENCY_SEED") or random.randrange(2**32))
    print(f"DCU_DRA_CONCURRENCY_SEED={seed}")
    rng = random.Random(seed)
    plugin = node.plugin
    with grpc.insecure_channel(f"unix:{plugin.dra_socket}") as channel:
        stub = dra_v1_pb2_grpc.DRAPluginStub(channel)

        for round_ in range(ROUNDS):
            started = time.monotonic()
            names = create_round(kube, namespace, node.name, rng, round_)
            claims = wait_for_allocations(kube, namespace, names)
            scheduled_s = time.monotonic() - started
            results = {c["metadata"]["uid"]: allocation_results(c) for c in claims}
            used = Counter(r["device"] for rs in results.values() for r in rs)
            assert used == {d.name: SHARES_PER_DCU for d in node.inventory.devices}

            # Every claim twice, shuffled, all released at the same moment.
            wave = [c for c in claims for _ in range(CALLS_PER_CLAIM)]
            rng.shuffle(wave)
            started = time.monotonic()
            answers = all_at_once([functools.partial(prepare, stub, c) for c in wave])
            prepare_s = time.monotonic() - started
            cdi_ids: dict[str, set[tuple[str, ...]]] = {}
            for claim, answer in zip(wave, answers, strict=True):
                uid = claim["metadata"]["uid"]
                assert set(answer.claims) == {uid}
                assert answer.claims[uid].error == "", answer.claims[uid].error
                devices = answer.claims[uid].devices
                assert [(d.device_name, d.share_id) for d in devices] == [
                    (r["device"], r["shareID"]) for r in results[uid]
                ]
                cdi_ids.setdefault(uid, set()).add(
                    tuple(i for d in devices for i in d.cdi_device_ids)
                )
            assert all(len(ids) == 1 for ids in cdi_ids.values()), "two calls, two answers"

            state = node_state(plugin, node.inventory)
            assert list(state.problems) == []
            assert set(state.prepared) == set(results)
            for uid, entry in state.prepared.items():
                (share,) = entry.shares
                (result,) = results[uid]
                consumed = result["consumedCapacity"]
                assert (share.device, share.share_id, share.whole_device) == (
                    result["device"],
                    result["shareID"],
                    False,
                )
                assert share.cores == int(consumed["cores"])
                assert share.memory_mib * MIB == parse_integral_quantity(consumed["memory"])
                assert cdi_ids[uid] == {(share.cdi_id,)}

            started = time.monotonic()
            answers = all_at_once([functools.partial(unprepare, stub, c) for c in wave])
            unprepare_s = time.monotonic() - started
            for claim, answer in zip(wave, answers, strict=True):
                uid = claim["metadata"]["uid"]
                assert {u: a.error for u, a in answer.claims.items()} == {uid: ""}
            state = node_state(plugin, node.inventory)
            assert list(state.problems) == []
            assert state.prepared == {}
            assert plugin.spec_files() == [] and plugin.vdev_files() == []

            delete_round(kube, namespace)
            print(
                f"round {round_ + 1}: {CLAIMS} claims allocated by the scheduler in "
                f"{scheduled_s:.1f} s; {len(wave)} concurrent prepares in {prepare_s:.2f} s, "
                f"{len(wave)} concurrent unprepares in {unprepare_s:.2f} s"
            )
    assert plugin.returncode is None
    assert "Traceback" not in plugin.output()
