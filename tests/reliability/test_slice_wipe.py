"""The kubelet wipes its node's ResourceSlices when it starts; the daemon puts them back in time.

A restarting kubelet deletes every ResourceSlice of its node before it re-registers plugins
(kubelet-plugin-protocol.md §5 "ResourceSlice wiping"), so until the driver publishes again
the scheduler sees no DCU on the node. Here the fake kubelet is restarted several times on the
same directories (a kubelet restart) while the real daemon runs, with one DCU unhealthy: each
time the slice must be back within 5 s, with the same devices and the unhealthy DCU still
tainted (a slice re-created from the start-up pool would offer a broken DCU to the scheduler).
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import KubeClient
from dra_driver.node.mock import create_mock_node
from dra_driver.testing.cluster import ControlPlane
from dra_driver.testing.plugin_process import PluginProcess
from dra_driver.testing.waiting import wait_for
from tests.e2e.conftest import K100, FakeKubeletFactory, mock_fault

pytestmark = pytest.mark.e2e

#: The issue's bound: the scheduler must not be without the node's DCUs for longer.
RECREATE_DEADLINE_S = 5.0
#: Kubelet restarts, each wiping the slices.
RESTARTS = 5
#: Index of the K100 on the default mock node (``dcu-dra mock fault --device``).
K100_INDEX = 2
#: Short, so the taint is published quickly; the default 5 s would cost seconds per test.
HEALTH_INTERVAL_S = "0.5"


def without_taint_times(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The devices with each taint's ``timeAdded`` left out (a re-created taint is new)."""
    return [
        {
            **device,
            "taints": [
                {k: v for k, v in taint.items() if k != "timeAdded"}
                for taint in device.get("taints") or []
            ],
        }
        for device in devices
    ]


def tainted(slice_: dict[str, Any]) -> set[str]:
    return {d["name"] for d in slice_["spec"]["devices"] if d.get("taints")}


class Node:
    """The daemon on a mock node, and the factory that started (and restarts) its kubelet."""

    def __init__(self, plugin: PluginProcess, root: Path, kubelets: FakeKubeletFactory) -> None:
        self.plugin = plugin
        self.root = root
        self.kubelets = kubelets


@pytest.fixture
def node(
    control_plane: ControlPlane, fake_kubelet: FakeKubeletFactory, short_sock_dir: Path
) -> Iterator[Node]:
    """The daemon on a default mock node, registered with a fake kubelet; killed afterwards."""
    kubelet = fake_kubelet()
    root = short_sock_dir / "node"
    create_mock_node(root)
    plugin = PluginProcess.for_kubelet(
        kubelet,
        short_sock_dir,
        root=root,
        kubeconfig=control_plane.kubeconfig,
        extra_args=("--health-interval", HEALTH_INTERVAL_S),
    )
    plugin.start().wait_for_registration_socket()
    kubelet.wait_for_plugin(DRIVER_NAME, timeout_s=30)
    plugin.wait_for_slices(control_plane.client)
    try:
        yield Node(plugin, root, fake_kubelet)
    finally:
        plugin.stop(signal.SIGKILL)


def test_slices_wiped_by_a_restarting_kubelet_are_back_within_5_s(
    kube: KubeClient, node: Node
) -> None:
    plugin, factory = node.plugin, node.kubelets
    kubelet = factory.kubelets[-1]
    mock_fault(node.root, K100_INDEX, "lost")
    (published,) = wait_for(
        lambda: [s for s in plugin.slices(kube) if tainted(s) == {K100}],
        timeout_s=10,
        description=f"the taint of {K100} in the slice",
        details=lambda: plugin.slices(kube),
    )

    times_s: list[float] = []
    for _ in range(RESTARTS):
        kubelet.stop()
        started = time.monotonic()
        # Its start deletes every slice of the node (the wipe), then registers the plugin.
        kubelet = factory(kubelet.node_name, dirs_of=kubelet)
        assert all(
            s["metadata"]["uid"] != published["metadata"]["uid"] for s in plugin.slices(kube)
        )

        def recreated() -> dict[str, Any] | None:
            found = plugin.slices(kube)
            return found[0] if len(found) == 1 else None

        back = wait_for(
            recreated,
            timeout_s=RECREATE_DEADLINE_S,
            interval_s=0.02,
            description="the slice to be re-created after the kubelet wiped it",
        )
        times_s.append(time.monotonic() - started)
        assert back["metadata"]["uid"] != published["metadata"]["uid"]
        assert tainted(back) == {K100}, "the unhealthy DCU came back untainted"
        assert without_taint_times(back["spec"]["devices"]) == without_taint_times(
            published["spec"]["devices"]
        )
        assert back["spec"]["pool"]["resourceSliceCount"] == 1
        published = back
        kubelet.wait_for_plugin(DRIVER_NAME, timeout_s=30)

    print(
        f"slice re-created after {RESTARTS} kubelet restarts (from the kubelet's start, which "
        f"wipes): median {statistics.median(times_s):.3f} s, max {max(times_s):.3f} s "
        f"(all: {', '.join(f'{t:.3f}' for t in times_s)})"
    )
    assert max(times_s) < RECREATE_DEADLINE_S
    assert plugin.returncode is None
    assert plugin.output().count("discovered ") == 1, "the daemon restarted"
