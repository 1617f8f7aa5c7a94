"""Several real nodes on one host, started one after the other and stopped in reverse.

Node ``i`` is named ``127.0.0.<2+i>`` and has bridge ``dcurn<i>`` with subnet
``10.244.<100+i>.0/24``; each has its own containerd, kubelet and cgroup root
(:class:`~.node.RealNode`).

Why one after the other, and the reverse to stop: each node's :class:`~.hoststate.HostGuard`
snapshot is taken when that node starts, so it sees the earlier nodes' changes (their bridges,
the sysctls their kubelets set) as the host's own and leaves them; the first node's snapshot is
the host as found, and it is restored last, when no other node runs any more. A node stopped
first would otherwise delete the later nodes' bridges as "new links".
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from dra_driver.cluster.kube import KubeClient
from dra_driver.testing.realnode.node import RealNode

#: Node ``i`` is ``127.0.0.<FIRST_HOST + i>`` (127.0.0.1 stays the host's own).
FIRST_HOST = 2


def node_ip(index: int) -> str:
    """The name and address of node ``index``."""
    return f"127.0.0.{FIRST_HOST + index}"


class RealNodes:
    """``count`` real nodes joined to the control plane behind ``client``/``kubeconfig``."""

    def __init__(
        self,
        client: KubeClient,
        kubeconfig: Path,
        *,
        count: int = 2,
        plugin_identity: bool = True,
        plugin_args: tuple[str, ...] = (),
        kubelet_binary: Path | None = None,
        feature_gates: Mapping[str, bool] | None = None,
    ) -> None:
        if not 1 <= count <= 100:
            raise ValueError(f"count must be 1 to 100 real nodes, not {count}")
        self.client = client
        self.kubeconfig = kubeconfig
        self.count = count
        self.plugin_identity = plugin_identity
        self.plugin_args = plugin_args
        #: Another Kubernetes version's kubelet and its gates (None: build/bin/node/kubelet).
        self.kubelet_binary = kubelet_binary
        self.feature_gates = feature_gates
        self.nodes: list[RealNode] = []
        #: What the sweep of killed runs restored, and every node's restore (for reports).
        self.swept: list[str] = []
        self.restored: list[str] = []
        #: Seconds the start and the stop took, all nodes.
        self.start_s = 0.0
        self.stop_s = 0.0

    def start(self, *, timeout_s: float = 120.0) -> RealNodes:
        """Start node after node until all are Ready and their plugins registered.

        On failure the caller must still call :meth:`stop` (it stops what started).
        """
        started = time.monotonic()
        for index in range(len(self.nodes), self.count):
            node = RealNode(
                self.client,
                self.kubeconfig,
                node_ip=node_ip(index),
                index=index,
                plugin_args=self.plugin_args,
                plugin_identity=self.plugin_identity,
                kubelet_binary=self.kubelet_binary,
                feature_gates=self.feature_gates,
            )
            self.swept.extend(node.swept)
            self.nodes.append(node)
            node.start(timeout_s=timeout_s)
        self.start_s = time.monotonic() - started
        return self

    def stop(self) -> list[str]:
        """Stop every node, the last started first; returns what the host restores did."""
        started = time.monotonic()
        while self.nodes:
            node = self.nodes.pop()
            self.restored.extend(f"{node.name}: {action}" for action in node.stop())
        self.stop_s = time.monotonic() - started
        return self.restored

    def __getitem__(self, index: int) -> RealNode:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)
