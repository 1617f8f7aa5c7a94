"""``make scale``: many mock DCU nodes, each with the real daemon, under the real scheduler.

Starts the local control plane with an audit log (``build/bin/controlplane --audit-log``) and
``--nodes`` simulated nodes of ``--dcus`` mock Z100s each. A node is a fake kubelet (in this
process: :class:`dra_driver.testing.fakekubelet.FakeKubelet`, which registers the plugin,
watches the node's pods and calls NodePrepareResources/NodeUnprepareResources as the kubelet
does) and the real ``dcu-dra kubelet-plugin`` daemon in its own process, with ``--claim-status``
as the chart runs it (a :class:`bench.node.BenchNode` with a fake kubelet). In order:

1. cold start: every daemon is started at once; the time until every node's slice offers all
   its DCUs;
2. idle: each daemon's RSS and CPU over ``--idle-s`` seconds, and its slice's size;
3. the mixed workload: waves of ``--wave`` pods with ResourceClaimTemplates of a quarter, a half
   and a whole card, until the plan fills the cluster (:mod:`bench.scale_workload`); at full,
   every node's files are checked (CU masks disjoint on every card, ...) and every card's
   allocations against its slice; then every pod is deleted and nothing may stay prepared;
4. the baseline: the same with one whole card per DCU;
5. mass restart: every daemon is stopped, the slices are deleted (as the kubelet wipes them),
   every daemon is started at once; the time until all slices are back.

API requests are counted from the audit log per node's daemon (its user agent names the node)
in each window. The results go to a table, and with ``--json`` to a file.

Usage: .venv/bin/python -m bench.scale [--nodes N] [--dcus D] [--wave W] [--idle-s S]
                                       [--json build/scale.json] [--markdown]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.node import BenchNode, FakeKubeletSettings, process_cpu_s, process_rss_mib
from bench.report import describe_machine
from bench.run import compile_package
from bench.scale_audit import ApiRequest, all_status_codes, daemon_load, parse_requests
from bench.scale_checks import capacity_problems
from bench.scale_report import render_markdown, render_text
from bench.scale_workload import Size, claim_template, mixed_plan, pod, waves, whole_plan
from bench.stats import p50, p99
from dra_driver import DRIVER_NAME
from dra_driver.cluster.kube import Gone, KubeClient, KubeError, paths
from dra_driver.errors import DriverError
from dra_driver.testing.cluster import (
    ControlPlane,
    create_namespace,
    ensure_object,
    is_pod_running,
    load_yaml,
)
from dra_driver.testing.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
DEFAULT_JSON = REPO / "build" / "scale.json"
NAMESPACE = "scale"
#: The chart runs the daemon with claim status on; the bench counts its writes.
DAEMON_ARGS = ("--claim-status",)
#: The kubelet's reconciler runs every second; 125 fake kubelets polling their registration
#: directories five times a second would cost this process a core.
KUBELET = FakeKubeletSettings(poll_interval_s=1.0, retry_interval_s=1.0)
#: Pod creators in flight at once (a wave is created as fast as the API server takes it).
CREATORS = 8
#: A wave is over when all its pods run, or when none was placed for this long (full).
STALL_S = 30.0
#: Each pod's wave, so they can be deleted a wave at a time.
WAVE_LABEL = "scale-wave"


class ScaleError(DriverError):
    """The scale run could not go on (one line: what and why)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The size of the run. The defaults are the issue's: 125 nodes x 8 DCUs = 1,000 DCUs."""

    nodes: int = 125
    dcus: int = 8
    wave: int = 250
    idle_s: float = 60.0
    """How long the idle figures are measured."""
    after_restart_s: float = 30.0
    """How long after the mass restart its requests (retries, re-lists) are still counted."""
    publish_timeout_s: float = 600.0
    drain_timeout_s: float = 900.0

    @property
    def cards(self) -> int:
        """DCUs in the cluster."""
        return self.nodes * self.dcus


# --- pods --------------------------------------------------------------------------------


@dataclass(slots=True)
class PodTimes:
    """When a pod was created (client side), first seen bound and first seen Running."""

    size: Size
    created: float
    bound: float | None = None
    running: float | None = None


class PodTracker:
    """Watches the bench's pods and notes when each was bound and when it ran (wall clock)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.pods: dict[str, PodTimes] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="scale-pod-watch", daemon=True)

    def start(self) -> None:
        """Start watching (before any pod is created)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and join the thread."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        self._thread.join(timeout=10)

    def created(self, name: str, size: Size, at: float) -> None:
        """Note that the bench created ``name`` at ``at``."""
        with self._lock:
            times = self.pods.setdefault(name, PodTimes(size, at))
            times.created = at

    def placed(self, names: Iterable[str]) -> int:
        """How many of ``names`` were bound so far."""
        with self._lock:
            return sum(1 for name in names if self.pods[name].bound is not None)

    def running(self, names: Iterable[str]) -> int:
        """How many of ``names`` were seen Running so far."""
        with self._lock:
            return sum(1 for name in names if self.pods[name].running is not None)

    def snapshot(self) -> dict[str, PodTimes]:
        """A copy of every record now."""
        with self._lock:
            return {
                name: PodTimes(t.size, t.created, t.bound, t.running)
                for name, t in self.pods.items()
            }

    def forget(self) -> None:
        """Drop every record (between phases)."""
        with self._lock:
            self.pods.clear()

    def _run(self) -> None:
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self.client.list(paths.pods(NAMESPACE))
                    for item in listed.get("items") or []:
                        self._note(item)
                    version = str(listed["metadata"]["resourceVersion"])
                stream = self.client.watch(paths.pods(NAMESPACE), resource_version=version)
                with self._lock:
                    self._stream = stream
                for _, obj in stream:
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    self._note(obj)
            except Gone:
                version = None
            except KubeError:
                if self._stop.is_set():
                    return
                version = None
                self._stop.wait(1.0)

    def _note(self, obj: dict[str, Any]) -> None:
        now = time.time()
        name = str(obj.get("metadata", {}).get("name"))
        with self._lock:
            times = self.pods.get(name)
            if times is None:
                return
            if times.bound is None and (obj.get("spec") or {}).get("nodeName"):
                times.bound = now
            if times.running is None and is_pod_running(obj):
                times.running = now


@dataclass(slots=True)
class Phase:
    """One workload: what was asked, what was placed, and when."""

    name: str
    pods: dict[str, PodTimes] = field(default_factory=dict)
    start: float = 0.0
    full: float = 0.0
    """When the last wave was over (the cluster full)."""
    steady_end: float = 0.0
    """When the quiet time at full was over (``full`` when there was none)."""
    end: float = 0.0
    """When every pod and claim was gone again."""
    problems_at_full: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    drain_s: float = 0.0


def _create_pods(
    client: KubeClient, tracker: PodTracker, names: Sequence[tuple[str, Size]], *, wave: str
) -> None:
    def create(item: tuple[str, Size]) -> None:
        name, size = item
        body = pod(name, size)
        body["metadata"]["labels"][WAVE_LABEL] = wave
        tracker.created(name, size, time.time())
        client.create(paths.pods(NAMESPACE), body)

    with concurrent.futures.ThreadPoolExecutor(CREATORS) as pool:
        for future in [pool.submit(create, item) for item in names]:
            future.result()


def run_phase(
    name: str,
    plan: Sequence[Size],
    *,
    client: KubeClient,
    tracker: PodTracker,
    nodes: Sequence[BenchNode],
    settings: Settings,
    progress: Callable[[str], None],
    steady_s: float = 0.0,
) -> Phase:
    """Fill the cluster with ``plan`` in waves, check it at full, then delete everything.

    ``steady_s``: how long to leave the full cluster alone before the checks (the daemons'
    requests with every share prepared and nothing changing are counted in that window).
    """
    tracker.forget()
    phase = Phase(name, start=time.time())
    counter = 0
    for number, wave in enumerate(waves(plan, settings.wave), start=1):
        names = [(f"{name}-{counter + index:05d}", size) for index, size in enumerate(wave)]
        counter += len(wave)
        _create_pods(client, tracker, names, wave=f"{name}-{number}")
        wave_names = [pod_name for pod_name, _ in names]
        last, last_change = -1, time.monotonic()
        while True:
            done = tracker.running(wave_names)
            if done == len(wave_names):
                break
            if done != last:
                last, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > STALL_S:
                break
            time.sleep(0.2)
        progress(f"{name}: wave {number}: {done}/{len(wave)} running")
    phase.full = time.time()
    if steady_s > 0:
        progress(f"{name}: full; {steady_s:.0f} s with every pod running and nothing changing")
        time.sleep(steady_s)
    phase.steady_end = time.time()
    phase.pods = tracker.snapshot()
    progress(f"{name}: checking every node and every card at full")
    for node in nodes:
        phase.problems_at_full += node.problems()
    claims = client.list(paths.resource_claims(NAMESPACE)).get("items") or []
    slices = client.list(paths.resource_slices()).get("items") or []
    phase.problems_at_full += capacity_problems(claims, slices, driver=DRIVER_NAME)
    progress(f"{name}: deleting {len(phase.pods)} pods")
    began = time.monotonic()
    _delete_waves(
        client,
        [f"{name}-{wave_number}" for wave_number in range(1, number + 1)],
        timeout_s=settings.drain_timeout_s,
        progress=progress,
    )

    def drained() -> bool:
        return not _any_left(client, paths.pods(NAMESPACE)) and not _any_left(
            client, paths.resource_claims(NAMESPACE)
        )

    _wait(drained, timeout_s=settings.drain_timeout_s, what=f"{name}: every pod and claim gone")
    phase.drain_s = time.monotonic() - began
    # The kubelet unprepares before it lets a pod go; give in-flight claim status writes
    # (asynchronous, best effort) a moment before the files are read.
    time.sleep(2.0)
    for node in nodes:
        phase.leftovers += node.leftovers()
    phase.end = time.time()
    return phase


def _delete_waves(
    client: KubeClient,
    waves: Sequence[str],
    *,
    timeout_s: float,
    progress: Callable[[str], None],
) -> None:
    """Delete the pods of each wave (by its label), asking again for a wave that failed.

    A loaded API server may take longer than the client's 30 s to delete 250 pods; it then
    stops deleting when the client gives up, so the wave is asked for again, after the others.
    """
    pending = list(waves)
    deadline = time.monotonic() + timeout_s
    while pending:
        wave = pending.pop(0)
        try:
            client.delete_collection(paths.pods(NAMESPACE), label_selector=f"{WAVE_LABEL}={wave}")
        except KubeError as exc:
            if time.monotonic() > deadline:
                raise ScaleError(f"cannot delete the pods of wave {wave}: {exc}") from None
            progress(f"deleting the pods of wave {wave} failed ({exc}); asking again later")
            pending.append(wave)


def _any_left(client: KubeClient, path: str) -> bool:
    """Whether the collection has any object (a list of one, not of thousands)."""
    try:
        return bool(client.request("GET", path, query={"limit": "1"}).get("items"))
    except KubeError:
        return True  # a busy API server: ask again at the next poll


def _wait(predicate: Callable[[], object], *, timeout_s: float, what: str) -> None:
    try:
        wait_for(predicate, timeout_s=timeout_s, interval_s=0.5, description=what)
    except AssertionError as exc:
        raise ScaleError(str(exc).splitlines()[0]) from None


def phase_figures(phase: Phase, prefix: str) -> dict[str, float | int]:
    """Throughput and latency of a phase, overall and by share/whole."""
    figures: dict[str, float | int] = {}
    groups = {
        "": list(phase.pods.values()),
        "_share": [t for t in phase.pods.values() if t.size.is_share],
        "_whole": [t for t in phase.pods.values() if not t.size.is_share],
    }
    for suffix, pods in groups.items():
        if not pods:
            continue
        placed = [t for t in pods if t.bound is not None]
        running = [t.running - t.created for t in pods if t.running is not None]
        figures[f"{prefix}_pods{suffix}"] = len(pods)
        figures[f"{prefix}_placed{suffix}"] = len(placed)
        if placed:
            span = max(t.bound for t in placed if t.bound) - min(t.created for t in pods)
            figures[f"{prefix}_pods_per_s{suffix}"] = len(placed) / span if span > 0 else 0.0
        if running:
            figures[f"{prefix}_running_p50_s{suffix}"] = p50(running)
            figures[f"{prefix}_running_p99_s{suffix}"] = p99(running)
    figures[f"{prefix}_drain_s"] = phase.drain_s
    return figures


# --- slices ------------------------------------------------------------------------------


def published_pools(client: KubeClient) -> dict[str, int]:
    """Devices of our driver published per pool (node)."""
    pools: dict[str, int] = {}
    for item in client.list(paths.resource_slices()).get("items") or []:
        spec = item.get("spec") or {}
        if spec.get("driver") == DRIVER_NAME:
            pool = str((spec.get("pool") or {}).get("name"))
            pools[pool] = pools.get(pool, 0) + len(spec.get("devices") or [])
    return pools


def wait_published(
    client: KubeClient, nodes: Sequence[BenchNode], dcus: int, timeout_s: float
) -> float:
    """Seconds until every node's pool offers all its DCUs (polled every 0.5 s)."""
    began = time.monotonic()
    wanted = {node.name for node in nodes}
    while True:
        try:
            pools = published_pools(client)
        except KubeError:
            pools = {}  # a busy API server: ask again at the next poll
        if all(pools.get(name) == dcus for name in wanted):
            return time.monotonic() - began
        for node in nodes:
            if node.plugin.returncode is not None:
                raise ScaleError(
                    f"the daemon of node {node.name} exited with {node.plugin.returncode}:\n"
                    f"{node.plugin.log_tail()}"
                )
        if time.monotonic() - began > timeout_s:
            missing = sorted(name for name in wanted if pools.get(name) != dcus)
            raise ScaleError(
                f"{len(missing)} node(s) not published after {timeout_s} s, e.g. {missing[:3]}"
            )
        time.sleep(0.5)


def slice_bytes(client: KubeClient) -> dict[str, int]:
    """JSON bytes of each pool's ResourceSlices as the API server returns them."""
    sizes: dict[str, int] = {}
    for item in client.list(paths.resource_slices()).get("items") or []:
        spec = item.get("spec") or {}
        if spec.get("driver") == DRIVER_NAME:
            pool = str((spec.get("pool") or {}).get("name"))
            sizes[pool] = sizes.get(pool, 0) + len(json.dumps(item, separators=(",", ":")))
    return sizes


# --- the run -----------------------------------------------------------------------------


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _start_all(nodes: Sequence[BenchNode]) -> None:
    """Start (or start again) every node's daemon, one right after the other."""
    for node in nodes:
        if node.plugin.process is None:
            node.plugin.start()
        else:
            node.plugin.restart()


def _stop_all(nodes: Sequence[BenchNode]) -> None:
    """SIGTERM every daemon at once, then wait for each."""
    for node in nodes:
        if node.plugin.process is not None and node.plugin.returncode is None:
            node.plugin.process.send_signal(signal.SIGTERM)
    for node in nodes:
        node.plugin.stop(signal.SIGTERM)


def run_scale(
    plane: ControlPlane,
    work: Path,
    settings: Settings,
    *,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run everything on ``plane`` (started with an audit log); the flat results."""
    if plane.audit_log is None:
        raise ScaleError("the control plane must write an audit log (ControlPlane(audit_log=))")
    if settings.nodes < 1 or settings.dcus < 1:
        raise ScaleError(
            f"need at least one node and one DCU, not {settings.nodes} x {settings.dcus}"
        )
    results: dict[str, Any] = {
        "machine": describe_machine(work),
        "nodes": settings.nodes,
        "dcus_per_node": settings.dcus,
        "dcus": settings.cards,
        "load_at_start": _load(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    client = plane.client
    for obj in load_yaml((REPO / "deploy" / "deviceclass.yaml").read_text()):
        ensure_object(client, obj)
    create_namespace(client, NAMESPACE)
    for size in Size:
        ensure_object(
            client,
            {
                **claim_template(size),
                "metadata": {"name": size.template_name, "namespace": NAMESPACE},
            },
        )
    progress(f"creating {settings.nodes} nodes of {settings.dcus} DCUs (fake kubelets)")
    nodes: list[BenchNode] = []
    tracker = PodTracker(client)
    windows: dict[str, tuple[float, float]] = {}
    try:
        for index in range(settings.nodes):
            node = BenchNode(
                plane,
                work / f"n{index:03d}",
                dcus=settings.dcus,
                name=f"scale-{index:03d}",
                daemon_args=DAEMON_ARGS,
                kubelet=KUBELET,
            )
            nodes.append(node)
            node.kubelet.start()
        progress(f"cold start: {settings.nodes} daemons at once")
        cold_began = time.time()
        _start_all(nodes)
        results["cold_publish_s"] = wait_published(
            client, nodes, settings.dcus, settings.publish_timeout_s
        )
        results["load_after_cold_start"] = _load()
        start_cpu = [process_cpu_s(node.pid) for node in nodes]
        results["cold_start_cpu_s_p50"] = p50(start_cpu)
        results["cold_start_cpu_s_total"] = sum(start_cpu)
        _wait(
            lambda: all(node.kubelet.connected_plugins() for node in nodes),
            timeout_s=settings.publish_timeout_s,
            what="every daemon registered with its kubelet",
        )
        windows["cold_start"] = (cold_began, time.time())
        published = results["cold_publish_s"]
        progress(f"cold start: all slices in {published:.1f} s; idle for {settings.idle_s:.0f} s")
        time.sleep(min(10.0, settings.idle_s))  # start-up's own requests are over
        idle_began = time.time()
        cpu_before = {node.name: process_cpu_s(node.pid) for node in nodes}
        time.sleep(settings.idle_s)
        idle_ended = time.time()
        cpu = [
            (process_cpu_s(node.pid) - cpu_before[node.name]) / (idle_ended - idle_began)
            for node in nodes
        ]
        rss = [process_rss_mib(node.pid) for node in nodes]
        windows["idle"] = (idle_began, idle_ended)
        results["idle_rss_mib_p50"] = p50(rss)
        results["idle_rss_mib_max"] = max(rss)
        results["idle_rss_mib_total"] = sum(rss)
        results["idle_cpu_percent_p50"] = 100 * p50(cpu)
        results["idle_cpu_percent_max"] = 100 * max(cpu)
        sizes = list(slice_bytes(client).values())
        results["slice_bytes_per_node_p50"] = p50(sizes)
        results["slice_bytes_per_node_max"] = max(sizes)
        results["load_idle"] = _load()

        tracker.start()
        mixed = run_phase(
            "mixed",
            mixed_plan(settings.cards),
            client=client,
            tracker=tracker,
            nodes=nodes,
            settings=settings,
            progress=progress,
            steady_s=settings.idle_s,
        )
        results["load_after_mixed"] = _load()
        windows["mixed_fill"] = (mixed.start, mixed.full)
        windows["mixed_steady"] = (mixed.full, mixed.steady_end)
        windows["mixed_drain"] = (mixed.steady_end, mixed.end)
        results.update(phase_figures(mixed, "mixed"))
        results["problems_at_full"] = list(mixed.problems_at_full)
        results["leftovers"] = list(mixed.leftovers)
        results["prepares_mixed"] = sum(1 for t in mixed.pods.values() if t.running is not None)
        whole = run_phase(
            "whole",
            whole_plan(settings.cards),
            client=client,
            tracker=tracker,
            nodes=nodes,
            settings=settings,
            progress=progress,
        )
        results["load_after_whole"] = _load()
        windows["whole_fill"] = (whole.start, whole.full)
        results.update(phase_figures(whole, "whole"))
        results["problems_at_full"] += whole.problems_at_full
        results["leftovers"] += whole.leftovers

        progress(f"mass restart: {settings.nodes} daemons stopped, slices wiped, started at once")
        _stop_all(nodes)
        # As each kubelet would once its plugin has been gone for 30 s.
        client.delete_collection(
            paths.resource_slices(), field_selector=f"spec.driver={DRIVER_NAME}"
        )
        _wait(
            lambda: not published_pools(client),
            timeout_s=settings.publish_timeout_s,
            what="every ResourceSlice deleted",
        )
        restart_began = time.time()
        _start_all(nodes)
        results["restart_publish_s"] = wait_published(
            client, nodes, settings.dcus, settings.publish_timeout_s
        )
        restart_cpu = [process_cpu_s(node.pid) for node in nodes]
        results["restart_cpu_s_p50"] = p50(restart_cpu)
        results["restart_cpu_s_total"] = sum(restart_cpu)
        _wait(
            lambda: all(node.kubelet.connected_plugins() for node in nodes),
            timeout_s=settings.publish_timeout_s,
            what="every daemon registered again",
        )
        # Whatever the restart sets off (retries, re-lists) shows in the next half minute too.
        time.sleep(settings.after_restart_s)
        windows["restart"] = (restart_began, time.time())
        results["load_at_end"] = _load()
    except DriverError as exc:
        # What was measured so far is still worth its table (and its audit-log figures).
        results["error"] = str(exc)
        progress(f"the run stopped early: {exc}")
    finally:
        tracker.stop()
        progress("stopping the daemons and the kubelets")
        # The nodes' objects are left to the control plane: its owner stops it right after.
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda node: node.close(delete_objects=False), nodes))
    results.update(
        api_figures(plane.audit_log, windows, settings.nodes, results.get("prepares_mixed", 0))
    )
    return results


def api_figures(
    audit_log: Path, windows: dict[str, tuple[float, float]], nodes: int, prepares: int
) -> dict[str, Any]:
    """The daemons' requests per node per minute in each window, from the audit log."""
    with audit_log.open() as lines:
        requests: list[ApiRequest] = parse_requests(lines)
    figures: dict[str, Any] = {"audit_requests": len(requests)}
    for window, (start, end) in windows.items():
        load = daemon_load(requests, start=start, end=end, nodes=nodes)
        figures[f"api_{window}_s"] = round(end - start, 1)
        figures[f"api_{window}_per_node_minute"] = load.per_node_minute(load.total)
        figures[f"api_{window}_per_node_minute_no_watch"] = load.rate_without_watches()
        figures[f"api_{window}_by_verb"] = {
            key: round(rate, 3) for key, rate in load.rates().items()
        }
        figures[f"api_{window}_daemon_codes"] = {
            str(code): n for code, n in sorted(load.status_codes.items())
        }
        figures[f"api_{window}_all_429"] = all_status_codes(requests, start=start, end=end).get(
            429, 0
        )
    if "mixed_fill" in windows and prepares:
        start, end = windows["mixed_fill"]
        load = daemon_load(requests, start=start, end=end, nodes=nodes)
        figures["claim_status_writes_per_prepare"] = (
            load.by_key.get("update resourceclaims/status", 0) / prepares
        )
        figures["claim_gets_per_prepare"] = load.by_key.get("get resourceclaims", 0) / prepares
    return figures


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results as indented JSON (the directory is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; every option has a sentence of help and a default."""
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--nodes", type=int, default=defaults.nodes, help="Simulated nodes.")
    parser.add_argument("--dcus", type=int, default=defaults.dcus, help="Mock DCUs per node.")
    parser.add_argument("--wave", type=int, default=defaults.wave, help="Pods created per wave.")
    parser.add_argument(
        "--idle-s", type=float, default=defaults.idle_s, help="Seconds of idle measurement."
    )
    parser.add_argument("--json", type=Path, default=None, help="Write the results here as JSON.")
    parser.add_argument("--markdown", action="store_true", help="Print the table as Markdown.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scale bench once; 0 when it ran (the goals are reported, not enforced)."""
    args = parse_args(argv)
    settings = Settings(nodes=args.nodes, dcus=args.dcus, wave=args.wave, idle_s=args.idle_s)
    # 125 daemons compiling every module at each start (this machine sets
    # PYTHONDONTWRITEBYTECODE) cost 1 s of CPU each; installed, they start from bytecode.
    compile_package()
    # Socket paths must stay short: the work directory lives in /tmp, not under build/.
    work = Path(tempfile.mkdtemp(prefix="dcuscale-", dir="/tmp"))
    plane = ControlPlane(data_dir=work / "cp", audit_log=work / "cp" / "audit.log")
    try:
        plane.start()
        results = run_scale(plane, work, settings)
    except DriverError as exc:
        print(f"make scale: {exc}", file=sys.stderr)
        return 1
    finally:
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(render_markdown(results) if args.markdown else render_text(results))
    if args.json is not None:
        write_json(results, args.json)
        print(f"results written to {args.json}")
    return 1 if results.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
