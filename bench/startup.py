"""Process start to DRA socket and to ResourceSlice visible, and the daemon's idle memory.

Each run deletes the node's slices, opens a watch on them, starts ``dcu-dra kubelet-plugin``
and stops one clock when the DRA socket accepts a connection (the daemon moves it into place
only once its gRPC server serves: the moment the kubelet could call) and another at the
watch's ADDED event: the moment any API client can see the slice.
The first run starts on an empty data dir, later ones restart on the same one (as a
DaemonSet pod restart does). Idle memory is VmRSS of the last started daemon once it has
published and sat idle for a moment, before any claim.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.node import READY_TIMEOUT_S, BenchError, BenchNode
from dra_driver.cluster.kube import paths

#: Idle time before reading memory: start-up garbage is collected, threads are parked.
SETTLE_S = 1.0
#: How often the socket is tried: fine enough for a figure of tenths of a second, and the
#: probe's own CPU stays negligible beside the daemon's.
SOCKET_POLL_S = 0.002


@dataclass(frozen=True, slots=True, kw_only=True)
class Startup:
    """Start-up figures."""

    start_to_slice_s: list[float]
    start_to_socket_s: list[float]
    rss_idle_mib: float


def measure_startup(node: BenchNode, *, runs: int) -> Startup:
    """Start the daemon ``runs`` times; it is left running (not yet connected) afterwards."""
    times = [_start_once(node) for _ in range(runs)]
    time.sleep(SETTLE_S)
    return Startup(
        start_to_slice_s=[to_slice for to_slice, _ in times],
        start_to_socket_s=[to_socket for _, to_socket in times],
        rss_idle_mib=node.rss_mib(),
    )


def _start_once(node: BenchNode) -> tuple[float, float]:
    """Stop the daemon if it runs, delete the slices, start it.

    Returns the seconds until the slice shows and until the DRA socket accepts.
    """
    node.plugin.stop_if_started()
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
        probe = SocketProbe(node.plugin.data_dir / "dra.sock", started)
        probe.start()
        for event_type, _slice in events:
            if event_type == "ADDED":
                to_slice = time.perf_counter() - started
                probe.join(READY_TIMEOUT_S)
                if probe.accepted_s is None:
                    raise BenchError(
                        f"the DRA socket of node {node.name} never accepted a connection; "
                        f"its log: {node.plugin.log_file}"
                    )
                return to_slice, probe.accepted_s
    raise BenchError(
        f"no ResourceSlice of node {node.name} within {READY_TIMEOUT_S:g} s of starting the "
        f"plugin; its log: {node.plugin.log_file}"
    )


class SocketProbe(threading.Thread):
    """Tries to connect to a unix socket until it accepts; ``accepted_s`` after ``started``."""

    def __init__(self, path: Path, started: float) -> None:
        super().__init__(name="socket-probe", daemon=True)
        self.path = str(path)
        self.started = started
        self.accepted_s: float | None = None

    def run(self) -> None:
        """Connect every ``SOCKET_POLL_S`` until the socket accepts or the time is up."""
        deadline = self.started + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                try:
                    sock.connect(self.path)
                except OSError:
                    time.sleep(SOCKET_POLL_S)
                    continue
                self.accepted_s = time.perf_counter() - self.started
                return


def time_to_socket(start: Callable[[], object], path: Path) -> float:
    """Call ``start`` (a plugin's start); seconds until the unix socket ``path`` accepts.

    Raises ``BenchError`` if it never does within ``READY_TIMEOUT_S``.
    """
    started = time.perf_counter()
    start()
    probe = SocketProbe(path, started)
    probe.run()  # here, not on a thread: nothing else to do meanwhile
    if probe.accepted_s is None:
        raise BenchError(f"the DRA socket {path} never accepted a connection")
    return probe.accepted_s
