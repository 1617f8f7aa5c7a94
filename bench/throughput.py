"""Full prepare+unprepare cycles per second with several kubelet-like callers, and memory growth.

The kubelet makes one call per pod, and pods start and stop concurrently, so the daemon sees
several calls at once; it serializes the device work (one lock) but reads claims before
taking it. ``callers`` threads each cycle their own claim (on their own DCU) over one shared
connection, as the kubelet does; the figure is all completed cycles over the wall time.

The same cycles measure memory growth: VmRSS of the daemon before (after every other
measurement, so it is warm) and after them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from bench.node import CycledNode
from dra_driver.testing.fakekubelet import ClaimRef


@dataclass(frozen=True, slots=True, kw_only=True)
class Throughput:
    """What a run of concurrent cycles did."""

    callers: int
    cycles: int
    wall_s: float
    rss_before_mib: float
    rss_after_mib: float

    @property
    def cycles_per_s(self) -> float:
        """Completed cycles per second of wall time."""
        return self.cycles / self.wall_s


def concurrent_cycles(node: CycledNode, claims: Sequence[ClaimRef], *, cycles: int) -> Throughput:
    """Run ``cycles`` cycles (rounded down to a multiple of the callers), one caller per claim."""
    per_caller = max(1, cycles // len(claims))

    def caller(claim: ClaimRef) -> int:
        for _ in range(per_caller):
            node.prepare(claim)
            node.unprepare(claim)
        return per_caller

    rss_before = node.rss_mib()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(claims), thread_name_prefix="caller") as pool:
        done = sum(pool.map(caller, claims))
    wall_s = time.perf_counter() - started
    return Throughput(
        callers=len(claims),
        cycles=done,
        wall_s=wall_s,
        rss_before_mib=rss_before,
        rss_after_mib=node.rss_mib(),
    )
