"""The demo on real nodes: containerd, runc and the real kubelet, and verify in real containers.

:class:`RealDemoNodes` starts two :class:`~dra_driver.testing.realnode.RealNodes` (named
127.0.0.2 and 127.0.0.3) joined to the demo's control plane, each with a mock DCU node of
character devices and the real plugin registered with its kubelet, authenticated as the chart's
ServiceAccount. The table's CDI IDs are read from each kubelet's own DRA checkpoint, and
``dcu-dra verify`` runs inside each example pod's real containers: the one-file ``dcu-dra.pyz``
is copied in (as ``kubectl cp``) and run there with ``ctr tasks exec`` (as ``kubectl exec``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dra_driver.cluster.kube import KubeClient
from dra_driver.testing.fakekubelet import PreparedClaim
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.realnode import RealNode, RealNodes
from dra_driver.testing.realnode.node import runtime_container_id
from dra_driver.tools.demo.containers import VERIFY_TIMEOUT_S, VerifyOutcome, outcome_of

#: Where the pyz goes inside a container (``/tmp`` is writable in every image).
IN_CONTAINER_PYZ = "/tmp/dcu-dra.pyz"
NODE_COUNT = 2


def _run_verify(
    pyz: Path, container: RealContainer, *, as_json: bool, copy: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run verify in the container; its exit code and output.

    The pyz is copied in first, unless ``copy`` is False (it is there already).
    """
    node = container.node
    if copy:
        try:
            node.copy_into(container.container_id, pyz, IN_CONTAINER_PYZ)
        except RuntimeError as exc:
            return subprocess.CompletedProcess([], 1, "", str(exc))
    argv = ["python3", "-I", "-S", IN_CONTAINER_PYZ, "verify", *(["--json"] if as_json else [])]
    try:
        return node.exec_in(container.container_id, *argv, timeout_s=VERIFY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess([], None, "", "")  # type: ignore[arg-type]


def _verify_json(pyz: Path, container: RealContainer) -> VerifyOutcome:
    done = _run_verify(pyz, container, as_json=True)
    return outcome_of(container.label, done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True, slots=True)
class RealContainer:
    """One container of an example pod, on its real node."""

    label: str
    node: RealNode
    container_id: str


class RealDemoNodes:
    """The demo's two real nodes."""

    def __init__(self, client: KubeClient, kubeconfig: Path) -> None:
        self.nodes = RealNodes(
            client, kubeconfig, count=NODE_COUNT, plugin_args=("--health-interval", "1")
        )

    def start(self) -> list[RealNode]:
        """Start both nodes, one after the other; returns them."""
        self.nodes.start()
        return self.started

    @property
    def started(self) -> list[RealNode]:
        """The nodes started so far."""
        return list(self.nodes.nodes)

    def plugins(self) -> dict[str, PluginProcess]:
        """Each node's newest plugin instance, by node name."""
        return {node.name: node.plugin for node in self.nodes.nodes}

    def prepared_claims(self) -> dict[str, PreparedClaim]:
        """What the real kubelets hold prepared (their DRA checkpoints), by claim UID."""
        prepared: dict[str, PreparedClaim] = {}
        for node in self.nodes.nodes:
            prepared.update(node.kubelet.prepared_claims())
        return prepared

    def containers(self, pods: Sequence[Mapping[str, Any]]) -> list[RealContainer]:
        """Every container of ``pods``, labelled as the demo's table does.

        All of them: a container gets DCUs by naming a claim, but also through an extended
        resource (deploy/examples/extended-resource.yaml), which only the kubelet resolves.
        """
        by_name = {node.name: node for node in self.nodes.nodes}
        found: list[RealContainer] = []
        for pod in pods:
            meta = pod["metadata"]
            label = f"{meta['namespace']}/{meta['name']}"
            statuses = sorted(
                pod["status"].get("containerStatuses") or [], key=lambda s: str(s["name"])
            )
            for status in statuses:
                found.append(
                    RealContainer(
                        label=label if len(statuses) == 1 else f"{label}/{status['name']}",
                        node=by_name[pod["spec"]["nodeName"]],
                        container_id=runtime_container_id(status),
                    )
                )
        return found

    def verify(
        self, pyz: Path, containers: Sequence[RealContainer], *, text_of: RealContainer | None
    ) -> tuple[list[VerifyOutcome], str | None]:
        """Copy the pyz into each container and run ``verify --json`` there, four at a time.

        Also ``text_of``'s plain-text report (one of ``containers``: its pyz is there by then).
        Returns one outcome per container, in order.
        """
        with ThreadPoolExecutor(max_workers=4) as pool:
            outcomes = list(pool.map(lambda c: _verify_json(pyz, c), containers))
        text = None
        if text_of is not None:
            text = _run_verify(pyz, text_of, as_json=False, copy=text_of not in containers).stdout
        return outcomes, text

    def leftover_files(self) -> list[Path]:
        """The vdev files and per-claim CDI specs still on the nodes."""
        return [
            path
            for node in self.nodes.nodes
            for path in (*node.plugin.vdev_files(), *node.plugin.spec_files())
        ]

    def logged_claims(self, verb: str) -> set[str]:
        """The claims the plugins logged as ``verb`` ("prepared", "unprepared"), as logged.

        An unprepare's line comes last, after its files are removed and its checkpoint
        written: files gone does not yet mean the line is there.
        """
        pattern = re.compile(rf"\] {verb} claim (.+?) in \d+ ms")
        return {
            match[1]
            for node in self.nodes.nodes
            for instance in node.instances
            for match in pattern.finditer(instance.process.output())
        }

    def stop(self) -> list[str]:
        """Stop both nodes and restore the host; what the restore did."""
        return self.nodes.stop()
