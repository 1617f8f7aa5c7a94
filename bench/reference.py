"""Our daemon against the upstream reference driver, in one run: ``python -m bench.reference``.

Issue 15 set its targets from this comparison: the kubelet plugin of
``kubernetes-sigs/dra-example-driver`` (Go, on ``k8s.io/dynamic-resource-allocation``'s
``kubeletplugin`` helper) beside ours, driven by one kubelet-side client over kept-open
connections. Nothing of the reference is part of this project: build its
``cmd/dra-example-kubeletplugin`` yourself and pass the binary (``REFERENCE_BINARY``).

One control plane; three nodes of 16 devices each: our daemon from this tree, our daemon from
another tree (``--before``, e.g. a ``git archive`` of an older commit; optional), and the
reference with its ``gpu`` profile, ``--gpu-allow-multiple-allocations`` (so a claim can hold a
share of a device, as ours do) and its API client's rate limit raised (so the API server, not
its client-side throttle, is what both wait for). Measured on each, in blocks that rotate the
order so a machine that gets busier weighs on all alike:

- one caller: sequential prepare+unprepare cycles of whole-device claims and of share claims
  (for the reference: a ``shareID`` and consumed memory), each call timed from the caller's
  side, and the plugin's CPU time (user + system) per cycle;
- 8 callers cycling share claims on 8 devices over one shared connection: cycles/s;
- 16 and 64 share claims prepared at once, then unprepared at once (claim k on device
  k mod 16, as in ``make bench``): the p50 of the prepares from the common start, that p50
  against the side's own sequential share prepare p50 (issue 15's target: 3x at most), and
  the plugin's CPU per cycle;
- process start to DRA socket accepting, and RSS after the cycles.

The last column(s) divide each of ours by the reference.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import latency, throughput
from bench.node import (
    READY_TIMEOUT_S,
    BenchError,
    BenchNode,
    CycledNode,
    kubelet_client,
    prepare_claim,
    process_cpu_s,
    process_rss_mib,
    unprepare_claim,
)
from bench.run import compile_package
from bench.startup import time_to_socket
from bench.stats import p50, p99, shown
from dra_driver.cluster.kube import AlreadyExists, KubeClient, KubeError, NotFound, paths
from dra_driver.testing.cluster import (
    ControlPlane,
    create_allocated_claim,
    node_allocation,
    unique_name,
)
from dra_driver.testing.fakekubelet import ClaimRef
from dra_driver.testing.fakekubelet.plugins import PluginManager
from dra_driver.testing.waiting import wait_for

#: The reference's driver name with its ``gpu`` profile, and its devices' names.
REFERENCE_DRIVER = "gpu.example.com"
#: Memory a reference share consumes (its gpu devices have 80Gi).
REFERENCE_SHARE_MEMORY = "20Gi"
#: Devices of each node: as many as ``make bench`` gives ours.
DEVICES = 16
#: Callers of the throughput blocks (our daemon's gRPC worker count, as in ``make bench``).
CALLERS = 8
#: Sequential cycles before the first block's measurement (imports, pools, caches warm).
WARM_UP_CYCLES = 5
#: Shares per device for the largest in-flight block: a quarter card each (20Gi of 80Gi).
SHARES_PER_DEVICE = max(latency.IN_FLIGHT) // DEVICES


class ReferenceNode:
    """The reference driver's kubelet plugin on a node of its own, called like ``BenchNode``."""

    def __init__(self, plane: ControlPlane, base: Path, *, binary: Path) -> None:
        self.kube: KubeClient = plane.client
        self.kubeconfig = plane.kubeconfig
        self.binary = binary
        self.name = unique_name("reference")
        self.namespace = self.name
        self.devices = [f"gpu-{index}" for index in range(DEVICES)]
        self.registrar_dir = base / "registry"
        self.plugins_dir = base / "plugins"
        self.cdi_dir = base / "cdi"
        self.log_file = base / "reference.log"
        for directory in (self.registrar_dir, self.plugins_dir, self.cdi_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for path, kind in ((paths.nodes(), "Node"), (paths.namespaces(), "Namespace")):
            body = {"apiVersion": "v1", "kind": kind, "metadata": {"name": self.name}}
            try:
                self.kube.create(path, body)
            except AlreadyExists:
                pass
        self.process: subprocess.Popen[bytes] | None = None
        self.manager: PluginManager | None = None
        self._claims = 0

    @property
    def dra_socket(self) -> Path:
        """Where the kubeletplugin helper serves the DRA services."""
        return self.plugins_dir / REFERENCE_DRIVER / "dra.sock"

    def start(self) -> None:
        """Start the reference plugin (not yet registered with a client)."""
        command = [
            str(self.binary),
            f"--node-name={self.name}",
            f"--kubeconfig={self.kubeconfig}",
            f"--cdi-root={self.cdi_dir}",
            f"--kubelet-registrar-directory-path={self.registrar_dir}",
            f"--kubelet-plugins-directory-path={self.plugins_dir}",
            f"--num-devices={DEVICES}",
            "--gpu-allow-multiple-allocations",
            "--kube-api-qps=1000",
            "--kube-api-burst=2000",
        ]
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """Stop the client and the plugin (SIGTERM, as the kubelet's pod deletion does)."""
        if self.manager is not None:
            self.manager.stop()
            self.manager = None
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def connect(self) -> None:
        """Register the running plugin with a kubelet-side client."""
        registration = self.registrar_dir / f"{REFERENCE_DRIVER}-reg.sock"
        wait_for(
            registration.exists,
            timeout_s=READY_TIMEOUT_S,
            description=f"the reference plugin's registration socket {registration}",
            details=self._log_tail,
        )
        self.manager = kubelet_client(self.registrar_dir)
        self.manager.start()
        wait_for(
            self.manager.registered_plugins,
            timeout_s=READY_TIMEOUT_S,
            description="the reference plugin to register",
            details=self._log_tail,
        )

    def close(self) -> None:
        """Stop everything and delete the namespace and the Node (best effort)."""
        self.stop()
        for path in (paths.namespaces(self.namespace), paths.nodes(self.name)):
            try:
                self.kube.delete(path)
            except NotFound:
                pass
            except KubeError as exc:  # cleanup must not hide the bench's own result
                print(f"cleanup of {path} failed: {exc}")

    @property
    def pid(self) -> int:
        """The plugin's process id (it must be running)."""
        if self.process is None or self.process.poll() is not None:
            raise BenchError(f"the reference plugin is not running; its log: {self.log_file}")
        return self.process.pid

    def cpu_s(self) -> float:
        """CPU time the plugin has used so far (user + system), in s."""
        return process_cpu_s(self.pid)

    def rss_mib(self) -> float:
        """The plugin's resident memory now (VmRSS), in MiB."""
        return process_rss_mib(self.pid)

    def claim(self, device: str, *, whole: bool = False) -> ClaimRef:
        """Create a claim allocated on ``device``: a share of it, or (``whole``) all of it."""
        name = f"c{self._claims}"
        self._claims += 1
        stored = create_allocated_claim(
            self.kube,
            namespace=self.namespace,
            name=name,
            requests=[{"name": "gpu", "exactly": {"deviceClassName": REFERENCE_DRIVER}}],
            allocation=reference_allocation(self.name, device, whole=whole),
        )
        return ClaimRef(namespace=self.namespace, name=name, uid=stored["metadata"]["uid"])

    def prepare(self, claim: ClaimRef) -> None:
        """NodePrepareResources for one claim; raise ``BenchError`` if it fails."""
        prepare_claim(self.manager, REFERENCE_DRIVER, claim, plugin="the reference plugin")

    def unprepare(self, claim: ClaimRef) -> None:
        """NodeUnprepareResources for one claim; raise ``BenchError`` if it fails."""
        unprepare_claim(self.manager, REFERENCE_DRIVER, claim, plugin="the reference plugin")

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def reference_allocation(node: str, device: str, *, whole: bool) -> dict[str, Any]:
    """The allocation the scheduler writes for one request on a reference device of ``node``.

    A share carries a ``shareID`` and its consumed memory, as the scheduler writes for a device
    that allows multiple allocations; a whole device carries neither.
    """
    result: dict[str, Any] = {
        "request": "gpu",
        "driver": REFERENCE_DRIVER,
        "pool": node,
        "device": device,
    }
    if not whole:
        result["shareID"] = str(uuid.uuid4())
        result["consumedCapacity"] = {"memory": REFERENCE_SHARE_MEMORY}
    return node_allocation(node, {"results": [result]})


@dataclass(slots=True)
class Side:
    """One plugin of the run and what was measured of it."""

    name: str
    node: CycledNode
    whole_claims: list[ClaimRef]
    share_claims: list[ClaimRef]
    caller_claims: list[ClaimRef]
    flight_claims: list[ClaimRef]
    """Share claims for the in-flight blocks; claim k is on device k mod ``DEVICES``."""
    restart: Callable[[], float]
    """Stops and starts the plugin again, registers it; seconds until its DRA socket accepted."""
    whole: latency.Cycles = field(default_factory=latency.Cycles)
    share: latency.Cycles = field(default_factory=latency.Cycles)
    cycles_per_s: list[float] = field(default_factory=list)
    in_flight: dict[int, latency.Cycles] = field(
        default_factory=lambda: {size: latency.Cycles() for size in latency.IN_FLIGHT}
    )
    socket_s: list[float] = field(default_factory=list)
    rss_mib: float = 0.0


def measure(sides: Sequence[Side], *, blocks: int, cycles: int, starts: int) -> None:
    """Run the blocks (order rotating), then the restarts; figures go into ``sides``."""
    for block in range(blocks):
        shift = block % len(sides)
        for side in [*sides[shift:], *sides[:shift]]:
            warm_up = WARM_UP_CYCLES if block == 0 else 0
            for claims, into in ((side.whole_claims, side.whole), (side.share_claims, side.share)):
                into.extend(latency.sequential(side.node, claims, cycles=cycles, warm_up=warm_up))
            busy = throughput.concurrent_cycles(
                side.node, side.caller_claims, cycles=cycles * CALLERS
            )
            side.cycles_per_s.append(busy.cycles_per_s)
            for size, flight in side.in_flight.items():
                flight.extend(latency.in_flight(side.node, side.flight_claims[:size]))
        print(f"block {block + 1}/{blocks} done", flush=True)
    for side in sides:
        side.rss_mib = side.node.rss_mib()
    for _ in range(starts):
        for side in sides:
            side.socket_s.append(side.restart())


def render(sides: Sequence[Side]) -> str:
    """The figures of every side, and each of ours divided by the reference (the last side)."""
    *ours, reference = sides
    med = statistics.median
    rows = [
        *_cycle_rows("whole device", lambda side: side.whole),
        *_cycle_rows("share", lambda side: side.share),
    ]
    rows += [
        (f"cycles/s, {CALLERS} callers, share", lambda s: med(s.cycles_per_s), "/s"),
        *(row for size in latency.IN_FLIGHT for row in _in_flight_rows(size)),
        ("start -> DRA socket accepts", lambda s: med(s.socket_s), "s"),
        ("RSS after the cycles", lambda s: s.rss_mib, "MiB"),
    ]
    width = max(len(label) for label, _, _ in rows)
    ratios = [f"{side.name}/{reference.name}" for side in ours]
    head = [f"{'figure':{width}}", *(f"{side.name:>10}" for side in sides)]
    lines = ["  ".join([*head, *(f"{name:>12}" for name in ratios)])]
    for label, figure, unit in rows:
        values = [figure(side) for side in sides]
        cells = [f"{label:{width}}", *(f"{shown(value, unit):>10}" for value in values)]
        cells += [
            f"{value / values[-1]:>12.2f}" if values[-1] else f"{'-':>12}" for value in values[:-1]
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


#: A row of the table: its label, the figure of a side, and the figure's unit.
_Row = tuple[str, Callable[[Side], float], str]


def _cycle_rows(label: str, cycles: Callable[[Side], latency.Cycles]) -> list[_Row]:
    """The rows of one kind of sequential cycles (``label``), read with ``cycles``."""
    return [
        (f"prepare p50, {label}", lambda side: p50(cycles(side).prepare_ms), "ms"),
        (f"prepare p99, {label}", lambda side: p99(cycles(side).prepare_ms), "ms"),
        (f"unprepare p50, {label}", lambda side: p50(cycles(side).unprepare_ms), "ms"),
        (
            f"cycles/s, 1 caller, {label}",
            lambda side: cycles(side).cycles / cycles(side).wall_s,
            "/s",
        ),
        (f"CPU per cycle, {label}", lambda side: cycles(side).cpu_ms_per_cycle, "ms"),
    ]


def _in_flight_rows(size: int) -> list[_Row]:
    """The rows of ``size`` share prepares in flight: p50, p50 over sequential p50, CPU."""

    def flight_p50(side: Side) -> float:
        return p50(side.in_flight[size].prepare_ms)

    return [
        (f"prepare p50, {size} in flight", flight_p50, "ms"),
        (
            f"prepare p50, {size} in flight / share p50",
            lambda side: flight_p50(side) / p50(side.share.prepare_ms),
            "x",
        ),
        (f"CPU per cycle, {size} in flight", lambda s: s.in_flight[size].cpu_ms_per_cycle, "ms"),
    ]


def our_side(name: str, plane: ControlPlane, base: Path, tree: Path | None) -> Side:
    """Our daemon on a bench node of its own, started and registered, with its claims.

    ``tree``: run the daemon from that source tree (``PYTHONPATH``); None: from this one.
    """
    node = BenchNode(plane, base, dcus=DEVICES)
    if tree is not None:
        node.plugin.args = ["env", f"PYTHONPATH={tree}", *node.plugin.args]

    def restart() -> float:
        if node.manager is not None:
            node.manager.stop()
            node.manager = None
        node.plugin.stop_if_started()
        return _started(node.plugin.start, node.plugin.data_dir / "dra.sock", node.connect)

    restart()
    return Side(
        name=name,
        node=node,
        whole_claims=[node.claim([device], whole=True) for device in node.devices[8:10]],
        share_claims=[node.claim([device]) for device in node.devices[:4]],
        caller_claims=[node.claim([device]) for device in node.devices[:CALLERS]],
        flight_claims=[
            node.claim([device]) for _ in range(SHARES_PER_DEVICE) for device in node.devices
        ],
        restart=restart,
    )


def reference_side(plane: ControlPlane, base: Path, binary: Path) -> Side:
    """The reference plugin ``binary`` on a node of its own, started and registered."""
    node = ReferenceNode(plane, base, binary=binary)

    def restart() -> float:
        node.stop()
        return _started(node.start, node.dra_socket, node.connect)

    restart()
    return Side(
        name="reference",
        node=node,
        whole_claims=[node.claim(device, whole=True) for device in node.devices[8:10]],
        share_claims=[node.claim(device) for device in node.devices[:4]],
        caller_claims=[node.claim(device) for device in node.devices[:CALLERS]],
        flight_claims=[
            node.claim(device) for _ in range(SHARES_PER_DEVICE) for device in node.devices
        ],
        restart=restart,
    )


def _started(start: Callable[[], object], socket: Path, connect: Callable[[], None]) -> float:
    """Start a plugin; seconds until ``socket`` accepted; then register it with a client."""
    accepted_s = time_to_socket(start, socket)
    connect()
    return accepted_s


def main(argv: Sequence[str] | None = None) -> int:
    """Measure this tree's daemon (and ``--before``'s) against the reference; 0 when it ran."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.reference", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("binary", type=Path, help="the reference's dra-example-kubeletplugin")
    parser.add_argument("--before", type=Path, help="another source tree of ours to add")
    parser.add_argument("--blocks", type=int, default=6, help="rotating blocks (default 6)")
    parser.add_argument("--cycles", type=int, default=40, help="cycles per kind per block")
    parser.add_argument("--starts", type=int, default=5, help="restarts of each plugin")
    args = parser.parse_args(argv)
    binary: Path = args.binary.resolve()
    if not binary.is_file():
        parser.error(
            f"{binary} is not a file: build the reference's cmd/dra-example-kubeletplugin "
            "(kubernetes-sigs/dra-example-driver) and pass its path"
        )
    if args.before is not None and not (args.before / "dra_driver" / "daemon.py").is_file():
        parser.error(f"{args.before} is not a dcu-dra source tree (no dra_driver/daemon.py)")
    work = Path(tempfile.mkdtemp(prefix="bench-reference-"))
    plane = ControlPlane(data_dir=work / "cp")
    sides: list[Side] = []
    measured = False
    try:
        compile_package()
        if args.before is not None:
            compile_package(args.before.resolve() / "dra_driver")
        plane.start()
        if args.before is not None:
            sides.append(our_side("before", plane, work / "before", args.before.resolve()))
        sides.append(our_side("ours", plane, work / "ours", None))
        sides.append(reference_side(plane, work / "reference", binary))
        measure(sides, blocks=args.blocks, cycles=args.cycles, starts=args.starts)
        print(render(sides))
        with open("/proc/loadavg", encoding="ascii") as loadavg:
            print(f"load average at the end: {loadavg.read().split()[0]}")
        measured = True
    except BenchError as exc:
        print(f"bench.reference: {exc}", file=sys.stderr)
        return 1
    finally:
        for side in sides:
            side.node.close()
        plane.stop()
        if measured:  # the control plane's data, the plugins' logs and sockets
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"bench.reference: its logs and data are kept in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
