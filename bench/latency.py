"""Prepare and unprepare latency, as the kubelet sees it (one call per pod and driver).

A cycle is NodePrepareResources of one claim, then NodeUnprepareResources of it. Claims are
created once and prepared again after each unprepare: the unprepare removed the claim from
the checkpoint and deleted its files, so every prepare does the whole work (GET, plan,
checkpoint, vdev files, CDI spec) while the API server is not busy creating claims during the
measurement. Each call is timed on its own from the caller's side, gRPC included.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from bench.node import BenchNode, CycledNode
from bench.stats import split
from dra_driver.testing.fakekubelet import ClaimRef

#: Cycles run before measuring, so lazy imports, thread pools and caches are warm.
WARM_UP_CYCLES = 20

#: Prepares issued at once in the in-flight measurements (issue 15's sizes).
IN_FLIGHT = (16, 64)

_Item = TypeVar("_Item")


@dataclass(slots=True)
class Cycles:
    """Per-call latencies (ms) of a measurement, and its wall time (s)."""

    prepare_ms: list[float] = field(default_factory=list)
    unprepare_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    """CPU time (user + system) the daemon used during the measured cycles."""

    @property
    def cycles(self) -> int:
        """Completed prepare+unprepare cycles."""
        return len(self.unprepare_ms)

    def extend(self, other: Cycles) -> None:
        """Add the samples, the wall time and the CPU time of ``other``."""
        self.prepare_ms.extend(other.prepare_ms)
        self.unprepare_ms.extend(other.unprepare_ms)
        self.wall_s += other.wall_s
        self.cpu_s += other.cpu_s

    @property
    def cpu_ms_per_cycle(self) -> float:
        """The daemon's CPU time per prepare+unprepare cycle, in ms."""
        return self.cpu_s * 1000 / self.cycles if self.cycles else 0.0


def sequential(
    node: CycledNode,
    claims: Sequence[ClaimRef],
    *,
    cycles: int,
    warm_up: int = WARM_UP_CYCLES,
) -> Cycles:
    """One caller: ``cycles`` prepare+unprepare cycles over ``claims`` in turn, after warm-up.

    ``warm_up`` cycles run first, unmeasured.
    """
    for index in range(warm_up):
        claim = claims[index % len(claims)]
        node.prepare(claim)
        node.unprepare(claim)
    result = Cycles()
    cpu_before = node.cpu_s()
    started = time.perf_counter()
    for index in range(cycles):
        claim = claims[index % len(claims)]
        result.prepare_ms.append(_timed_ms(node.prepare, claim))
        result.unprepare_ms.append(_timed_ms(node.unprepare, claim))
    result.wall_s = time.perf_counter() - started
    result.cpu_s = node.cpu_s() - cpu_before
    return result


def live_comparison(
    node: BenchNode,
    live: Sequence[ClaimRef],
    probe: ClaimRef,
    *,
    cycles: int,
    blocks: int,
    warm_up: int = WARM_UP_CYCLES,
) -> tuple[Cycles, Cycles]:
    """``probe``'s cycles alone on the node, and while every claim of ``live`` is prepared.

    ``cycles`` of each, in ``blocks`` alternating blocks (alone, with them, alone, ...), so a
    change in the machine's load during the measurement weighs on both alike.
    """
    alone, crowded = Cycles(), Cycles()
    for block, size in enumerate(split(cycles, blocks)):
        alone.extend(sequential(node, [probe], cycles=size, warm_up=0 if block else warm_up))
        for claim in live:
            node.prepare(claim)
        try:
            crowded.extend(sequential(node, [probe], cycles=size, warm_up=0))
        finally:
            for claim in live:
                node.unprepare(claim)
    return alone, crowded


def in_flight(node: CycledNode, claims: Sequence[ClaimRef]) -> Cycles:
    """One round: all ``claims`` prepared at once, then all unprepared at once.

    One call per claim, like pods starting together; each call's latency counts from the
    common start. Callers run rounds in turn with their other measurements.

    ``wall_s`` is the time from each phase's start to its last answer, both phases.
    """
    result = Cycles()
    cpu_before = node.cpu_s()
    with ThreadPoolExecutor(max_workers=len(claims), thread_name_prefix="in-flight") as pool:
        for call, samples in (
            (node.prepare, result.prepare_ms),
            (node.unprepare, result.unprepare_ms),
        ):
            started = time.perf_counter()
            samples.extend(at_once(pool, call, claims))
            result.wall_s += time.perf_counter() - started
    result.cpu_s = node.cpu_s() - cpu_before
    return result


def at_once(
    pool: ThreadPoolExecutor, call: Callable[[_Item], object], items: Sequence[_Item]
) -> list[float]:
    """``call`` for every item at once, one thread each; each call's latency in ms.

    The threads wait for each other at a barrier, so every clock starts at (nearly) the same
    moment. ``pool`` needs at least ``len(items)`` workers, or the barrier never opens.
    """
    gate = threading.Barrier(len(items))
    return list(pool.map(functools.partial(_gated_ms, gate, call), items))


def _gated_ms(gate: threading.Barrier, call: Callable[[_Item], object], item: _Item) -> float:
    gate.wait()
    return _timed_ms(call, item)


def _timed_ms(call: Callable[[_Item], object], item: _Item) -> float:
    started = time.perf_counter()
    call(item)
    return (time.perf_counter() - started) * 1000
