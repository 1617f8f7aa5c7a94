"""Process start to ResourceSlice visible in the API server, and the daemon's idle memory.

Each run deletes the node's slices, opens a watch on them, starts ``dcu-dra kubelet-plugin``
and stops the clock at the watch's ADDED event: the moment any API client can see the slice.
The first run starts on an empty data dir, later ones restart on the same one (as a
DaemonSet pod restart does). Idle memory is VmRSS of the last started daemon once it has
published and sat idle for a moment, before any claim.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.node import READY_TIMEOUT_S, BenchError, BenchNode
from dra_driver.cluster.kube import paths

#: Idle time before reading memory: start-up garbage is collected, threads are parked.
SETTLE_S = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Startup:
    """Start-up figures."""

    start_to_slice_s: list[float]
    rss_idle_mib: float


def measure_startup(node: BenchNode, *, runs: int) -> Startup:
    """Start the daemon ``runs`` times; it is left running (not yet connected) afterwards."""
    times = [_start_once(node) for _ in range(runs)]
    time.sleep(SETTLE_S)
    return Startup(start_to_slice_s=times, rss_idle_mib=node.rss_mib())


def _start_once(node: BenchNode) -> float:
    """Stop the daemon if it runs, delete the slices, start it; seconds until the slice shows."""
    if node.plugin.process is not None:
        node.plugin.stop()
        node.plugin.process = None
    kube = node.kube
    selector = node.slice_selector()
    kube.delete_collection(paths.resource_slices(), field_selector=selector)
    listed = kube.list(paths.resource_slices(), field_selector=selector)
    if listed.get("items"):
        raise BenchError(f"the slices of node {node.name} are still there after deleting them")
    with kube.watch(
        paths.resource_slices(),
        resource_version=listed["metadata"]["resourceVersion"],
        field_selector=selector,
        timeout_s=READY_TIMEOUT_S,
    ) as events:
        started = time.perf_counter()
        node.plugin.start()
        for event_type, _slice in events:
            if event_type == "ADDED":
                return time.perf_counter() - started
    raise BenchError(
        f"no ResourceSlice of node {node.name} within {READY_TIMEOUT_S:g} s of starting the "
        f"plugin; its log: {node.plugin.log_file}"
    )
