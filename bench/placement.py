"""Where quarter-card pods land: N pods on 2 nodes x 4 DCUs, as the scheduler places them.

The README's "With Volcano" section compares how schedulers spread DCU shares over nodes and
cards. This measures it for real: the local control plane (its kube-scheduler allocates the
claims), two mock DCU nodes of four Z100s each with a fake kubelet and the real
``dcu-dra kubelet-plugin``, one ResourceClaimTemplate of a quarter card (15 CUs, 8188 MiB) and
N pods using it, all created at once. Once every pod runs, each claim's allocation says on
which node and card its share landed; the summary counts the cards used on each node and the
shares on each card, and the plugins' files are checked (disjoint CU masks, nothing left over).

The core (:func:`summarize`, :func:`format_summary`) is pure; :func:`measure` is the plumbing.
The scheduler is a pod field (``schedulerName``), so another scheduler that allocates DRA
claims can be measured the same way once it runs against the control plane; the nodes are
:class:`bench.node.BenchNode` with a fake kubelet (:func:`placement_node`), the one place to
swap for real ones: a real node would offer the same three steps (``start``, ``wait_ready``,
``close``).

Run it with ``make placement`` (``PODS=16``) or ``python -m bench.placement``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.node import DCU_CORES, SHARE_CORES, SHARE_MEMORY, BenchNode, FakeKubeletSettings
from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.errors import DriverError
from dra_driver.testing.cluster import (
    REPO_ROOT,
    ControlPlane,
    allocation_results,
    create_namespace,
    dcu_claim_template,
    delete_namespace,
    ensure_object,
    is_pod_running,
    load_yaml,
    pod_claims,
    unique_name,
)
from dra_driver.testing.waiting import wait_for

#: The kube-scheduler of the local control plane.
DEFAULT_SCHEDULER = "default-scheduler"
NODES = 2
DCUS_PER_NODE = 4
#: Quarter cards: four shares fill a Z100 (60 CUs), so 16 fill the two nodes.
SHARES_PER_DCU = DCU_CORES // SHARE_CORES
DEFAULT_PODS = 16
#: Label on the measured nodes, and the pods' nodeSelector: other nodes are never used.
NODE_LABEL = "placement.dcu.hygon.com/run"
#: All pods scheduled, allocated and prepared: a few seconds; a loaded machine needs more.
PODS_TIMEOUT_S = 180.0
#: Deleted pods are unprepared by the fake kubelets in well under a second each.
TEARDOWN_TIMEOUT_S = 60.0
#: A quarter card, as deploy/examples/quarter-card.yaml asks for it.
TEMPLATE_NAME = "quarter-dcu"


class PlacementError(DriverError):
    """The measurement could not run (one line: what and why)."""


# --- the pure core -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Share:
    """Where one pod's share landed."""

    pod: str
    node: str
    device: str


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """One node's shares: how many, and how many on each of its cards (busiest first)."""

    node: str
    shares: int
    shares_per_card: tuple[int, ...]
    """Shares on each card that has any, most first; ``len`` is the cards used."""

    @property
    def cards_used(self) -> int:
        """Cards of this node holding at least one share."""
        return len(self.shares_per_card)


@dataclass(frozen=True, slots=True)
class Summary:
    """How N shares landed on the measured nodes (every node listed, also an empty one)."""

    scheduler: str
    pods: int
    nodes: tuple[NodeLoad, ...]

    @property
    def cards_used(self) -> int:
        """Cards holding at least one share, over all nodes."""
        return sum(node.cards_used for node in self.nodes)


def summarize(scheduler: str, shares: Iterable[Share], nodes: Sequence[str]) -> Summary:
    """Count the cards used on each of ``nodes`` and the shares on each card.

    Raises PlacementError for a share on a node that is not one of ``nodes`` (the pods'
    nodeSelector should make that impossible).
    """
    listed = list(shares)
    strangers = sorted({share.node for share in listed} - set(nodes))
    if strangers:
        raise PlacementError(
            f"shares landed on {', '.join(strangers)}, not on the measured nodes "
            f"{', '.join(nodes)}: remove the other DCU nodes or check the pods' nodeSelector"
        )
    loads = []
    for node in nodes:
        per_card = Counter(share.device for share in listed if share.node == node)
        counts = tuple(sorted(per_card.values(), reverse=True))
        loads.append(NodeLoad(node=node, shares=sum(counts), shares_per_card=counts))
    return Summary(scheduler=scheduler, pods=len(listed), nodes=tuple(loads))


def format_summary(summary: Summary) -> list[str]:
    """One line per node, then the total: ``node-1: 8 shares on 2 cards (4+4)``."""
    lines = [f"{summary.scheduler}: {summary.pods} quarter-card pods"]
    for node in summary.nodes:
        split = "+".join(str(count) for count in node.shares_per_card) or "-"
        lines.append(
            f"  {node.node}: {node.shares} shares on {node.cards_used} of {DCUS_PER_NODE} "
            f"cards ({split})"
        )
    lines.append(f"  cards used: {summary.cards_used} of {len(summary.nodes) * DCUS_PER_NODE}")
    return lines


# --- plumbing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measurement:
    """A run: the summary, its timing and the machine's load."""

    summary: Summary
    shares: tuple[Share, ...]
    all_running_s: float
    """From the first pod created to the last one Running (scheduled, allocated, prepared)."""
    load_before: tuple[float, float, float]
    """The machine's 1/5/15-minute load average as the pods were created."""


def placement_node(
    plane: ControlPlane,
    base: Path,
    name: str,
    labels: Mapping[str, str],
    *,
    dcus: int = DCUS_PER_NODE,
) -> BenchNode:
    """A node of ``dcus`` Z100s with a fake kubelet and the real plugin, labelled ``labels``.

    The one kind of node the measurement (and ``make volcano``) uses.
    """
    return BenchNode(plane, base, dcus=dcus, name=name, kubelet=FakeKubeletSettings(labels=labels))


def quarter_card_pod(name: str, namespace: str, scheduler: str, run_label: str) -> dict[str, Any]:
    """A pod with its own quarter-card claim from :data:`TEMPLATE_NAME`, on a measured node."""
    spec: dict[str, Any] = {
        "nodeSelector": {NODE_LABEL: run_label},
        "containers": [
            {
                "name": "ctr",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"claims": [{"name": "dcu"}]},
            }
        ],
        "resourceClaims": [{"name": "dcu", "resourceClaimTemplateName": TEMPLATE_NAME}],
    }
    if scheduler != DEFAULT_SCHEDULER:
        spec["schedulerName"] = scheduler
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def landed_shares(client: KubeClient, pods: Sequence[Mapping[str, Any]]) -> list[Share]:
    """Each running pod's share: its node and the card its claim was allocated."""
    shares = []
    for pod in pods:
        name = pod["metadata"]["name"]
        [claim] = pod_claims(client, pod).values()
        [result] = allocation_results(claim)
        if result["pool"] != pod["spec"]["nodeName"]:
            raise PlacementError(
                f"pod {name} runs on {pod['spec']['nodeName']} but its share is on pool "
                f"{result['pool']}"
            )
        shares.append(Share(pod=name, node=result["pool"], device=result["device"]))
    return shares


def check_pods(pods: int) -> None:
    """PlacementError unless ``pods`` quarter cards fit the measured nodes."""
    if not 1 <= pods <= NODES * DCUS_PER_NODE * SHARES_PER_DCU:
        raise PlacementError(
            f"{pods} pods: give 1 to {NODES * DCUS_PER_NODE * SHARES_PER_DCU} (quarter cards on "
            f"{NODES} nodes x {DCUS_PER_NODE} DCUs)"
        )


def measure(
    plane: ControlPlane,
    work: Path,
    *,
    pods: int = DEFAULT_PODS,
    scheduler: str = DEFAULT_SCHEDULER,
) -> Measurement:
    """Start the nodes, create ``pods`` quarter-card pods at once, and see where they land."""
    check_pods(pods)
    client = plane.client
    for obj in load_yaml((REPO_ROOT / "deploy" / "deviceclass.yaml").read_text()):
        ensure_object(client, obj)
    run = unique_name("placement")
    nodes = [
        placement_node(plane, work / f"n{index}", f"{run}-node-{index + 1}", {NODE_LABEL: run})
        for index in range(NODES)
    ]
    create_namespace(client, run)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        client.create(
            paths.resource_claim_templates(run),
            dcu_claim_template(
                TEMPLATE_NAME,
                namespace=run,
                capacity={"cores": str(SHARE_CORES), "memory": SHARE_MEMORY},
            ),
        )
        load_before = os.getloadavg()
        started = time.monotonic()
        for index in range(pods):
            pod = quarter_card_pod(f"p{index:02d}", run, scheduler, run)
            client.create(paths.pods(run), pod)

        def all_running() -> list[dict[str, Any]] | None:
            items = client.list(paths.pods(run))["items"]
            ready = [pod for pod in items if is_pod_running(pod)]
            return ready if len(ready) == pods else None

        running = wait_for(
            all_running,
            timeout_s=PODS_TIMEOUT_S,
            description=f"{pods} quarter-card pods to run",
        )
        all_running_s = time.monotonic() - started
        shares = landed_shares(client, running)
        problems = [problem for node in nodes for problem in node.problems()]
        if problems:
            raise PlacementError("the plugins' files break a rule: " + "; ".join(problems))
    finally:
        delete_namespace(client, run)
        _wait_for_pods_gone(client, run)
        for node in nodes:
            node.close()
    summary = summarize(scheduler, shares, [node.name for node in nodes])
    return Measurement(
        summary=summary,
        shares=tuple(sorted(shares, key=lambda share: share.pod)),
        all_running_s=all_running_s,
        load_before=(load_before[0], load_before[1], load_before[2]),
    )


def _wait_for_pods_gone(client: KubeClient, namespace: str) -> None:
    """Let the fake kubelets unprepare the claims before their plugins stop (best effort)."""
    try:
        wait_for(
            lambda: not client.list(paths.pods(namespace))["items"],
            timeout_s=TEARDOWN_TIMEOUT_S,
            description=f"the pods of {namespace} to be deleted",
        )
    except (AssertionError, DriverError) as exc:
        print(f"cleanup: {str(exc).splitlines()[0]}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure once against a control plane of its own; print the summary; 0, 1 or 2."""
    parser = argparse.ArgumentParser(prog="python -m bench.placement", description=__doc__)
    parser.add_argument("--pods", type=int, default=DEFAULT_PODS, help="quarter-card pods")
    parser.add_argument("--json", type=Path, help="also write the measurement here")
    args = parser.parse_args(argv)
    try:
        check_pods(args.pods)
    except PlacementError as exc:
        parser.error(str(exc))
    with tempfile.TemporaryDirectory(prefix="placement-", dir="/tmp") as tmp:
        work = Path(tmp)
        plane = ControlPlane(data_dir=work / "plane")
        try:
            plane.start()
            result = measure(plane, work, pods=args.pods)
        except (DriverError, AssertionError) as exc:
            print(f"placement: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
        finally:
            plane.stop()
    for line in format_summary(result.summary):
        print(line)
    load = ", ".join(f"{value:.2f}" for value in result.load_before)
    print(f"  all {result.summary.pods} running in {result.all_running_s:.1f} s (load {load})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
